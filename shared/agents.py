"""The persona agents (Elena, Marcus) and what realtime voice needs to run.

Agents are configuration, not data: their voices come from app settings so an operator
can change a voice without a deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from shared.core.errors import NotFound
from shared.core.models import LazyModel

if TYPE_CHECKING:
    from shared.config import Settings


class StreamFormat(LazyModel):
    """The realtime audio format of the session protocol."""

    encoding: str = "pcm16"
    sample_rate_hz: int = 24_000
    channels: int = 1


class VoiceConfig(LazyModel):
    """The neural voice an agent speaks with."""

    agent_id: str
    voice_name: str = Field(description="Azure neural voice name")
    locale: str
    style: str | None = Field(None, description="Speaking style, where the voice has styles")
    audio: StreamFormat = Field(default_factory=StreamFormat)


class Agent(LazyModel):
    """A persona agent callers can talk to."""

    id: str
    name: str
    title: str
    description: str
    voice: VoiceConfig


class AgentList(LazyModel):
    """Every agent, in display order."""

    agents: list[Agent]


_PERSONAS: tuple[tuple[str, str, str, str, str, str | None], ...] = (
    (
        "elena",
        "Elena",
        "Business analyst",
        "Elicits and structures requirements, maps processes and spots gaps.",
        "en-US",
        "friendly",
    ),
    (
        "marcus",
        "Marcus",
        "Project manager",
        "Plans delivery: scope, milestones, risks, owners and status.",
        "en-US",
        None,
    ),
)


class AgentCatalog:
    """The agents of this deployment, with their configured voices."""

    def __init__(self, settings: Settings) -> None:
        voices = {"elena": settings.agent_elena_voice, "marcus": settings.agent_marcus_voice}
        self._agents = [
            Agent(
                id=agent_id,
                name=name,
                title=title,
                description=description,
                voice=VoiceConfig(
                    agent_id=agent_id, voice_name=voices[agent_id], locale=locale, style=style
                ),
            )
            for agent_id, name, title, description, locale, style in _PERSONAS
        ]

    def list(self) -> AgentList:
        """All agents."""
        return AgentList(agents=list(self._agents))

    def get(self, agent_id: str) -> Agent:
        """One agent by id (case-insensitive); NotFound names the known ones."""
        for agent in self._agents:
            if agent.id == agent_id.strip().lower():
                return agent
        known = ", ".join(a.id for a in self._agents)
        raise NotFound(
            f"No agent named {agent_id!r}; known agents: {known}", reason="agent_not_found"
        )

    def voice_config(self, agent_id: str) -> VoiceConfig:
        """The voice configuration of one agent."""
        return self.get(agent_id).voice


class Requirement(LazyModel):
    """One thing realtime voice needs, whether it is configured, and how to fix it."""

    name: str
    configured: bool
    settings: list[str] = Field(description="The app settings that configure it")
    purpose: str
    resolution: str | None = Field(None, description="What to set when it is missing")


class VoiceStatus(LazyModel):
    """Whether realtime voice can run here (the SOP's `voicelive_configured`)."""

    voice_configured: bool
    requirements: list[Requirement]
    audio: StreamFormat = Field(default_factory=StreamFormat)
    agents: list[str]


def voice_status(settings: Settings) -> VoiceStatus:
    """What realtime voice needs and which of it is configured (no secrets, no values)."""
    configured = settings.configured_services
    speech = configured["speech"]
    checks = [
        (
            "web_pubsub",
            configured["web_pubsub"],
            ["WebPubSub__endpoint", "WebPubSubConnectionString"],
            "Carries the realtime session between client and Timbre",
            "Set WebPubSub__endpoint (managed identity) or WebPubSubConnectionString",
        ),
        (
            "speech",
            speech,
            ["AZURE_SPEECH_REGION", "AZURE_SPEECH_ENDPOINT"],
            "Speech to text of each utterance and the agents' neural voices",
            "Set AZURE_SPEECH_REGION or AZURE_SPEECH_ENDPOINT",
        ),
        (
            "speech_identity",
            speech and bool(settings.speech_resource_id),
            ["AZURE_SPEECH_RESOURCE_ID"],
            "Entra ID (managed identity) authentication to the Speech resource",
            "Set AZURE_SPEECH_RESOURCE_ID; grant the identity "
            "'Cognitive Services Speech Contributor'",
        ),
        (
            "chat_model",
            configured["openai_chat"],
            ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT"],
            "The agents' answers",
            "Set both AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_CHAT_DEPLOYMENT",
        ),
    ]
    requirements = [
        Requirement(
            name=name,
            configured=ok,
            settings=names,
            purpose=purpose,
            resolution=None if ok else resolution,
        )
        for name, ok, names, purpose, resolution in checks
    ]
    return VoiceStatus(
        voice_configured=all(r.configured for r in requirements),
        requirements=requirements,
        agents=[a.id for a in AgentCatalog(settings).list().agents],
    )
