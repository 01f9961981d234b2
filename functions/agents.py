"""Persona agents and the realtime voice configuration."""

from __future__ import annotations

import azure.functions as func

from functions._http import Call, endpoint
from shared.agents import AgentList, VoiceConfig, VoiceStatus, voice_status
from shared.core.identity import Role

bp = func.Blueprint()


@endpoint(
    bp,
    "v1/agents",
    "GET",
    summary="List the persona agents",
    role=Role.VIEWER,
    tag="agents",
    response=AgentList,
)
def list_agents(call: Call) -> AgentList:
    """Return every agent with its voice."""
    return call.runtime.agents.list()


@endpoint(
    bp,
    "v1/voice/config/{agent}",
    "GET",
    summary="One agent's neural voice configuration",
    role=Role.VIEWER,
    tag="agents",
    response=VoiceConfig,
    errors=(404,),
)
def voice_config(call: Call) -> VoiceConfig:
    """Return the voice an agent speaks with."""
    return call.runtime.agents.voice_config(call.route["agent"])


@endpoint(
    bp,
    "v1/voice/status",
    "GET",
    role=None,
    tag="agents",
    response=VoiceStatus,
    summary="What realtime voice needs and whether it is configured",
)
def voice_status_report(call: Call) -> VoiceStatus:
    """Report each realtime voice requirement and how to fix a missing one."""
    return voice_status(call.runtime.settings)
