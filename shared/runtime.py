"""The process's long-lived objects, built lazily from one Settings and then reused.

Functions call `runtime()`; tests build a `Runtime` of their own settings, with explicit
overrides for what they replace (Custom Voice client, translator, speech providers,
synthesis cache, clock), and install it with `use_runtime`. Nothing here connects until
first used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared.core.errors import DependencyUnavailable
from shared.core.telemetry import configure_logging

if TYPE_CHECKING:
    from concurrent.futures import Future

    from azure.cosmos import ContainerProxy, CosmosClient
    from azure.storage.blob import BlobServiceClient

    from shared.agents import AgentCatalog
    from shared.alerts.evaluation import AlertEvaluator
    from shared.alerts.lifecycle import Alert, Change
    from shared.alerts.notifier import Notifier
    from shared.alerts.outbox import EventPublisher, OutboxStore, PublishReport
    from shared.alerts.probes import Probe, ProbeLog, ProbeOutcome
    from shared.alerts.rules import Rule
    from shared.alerts.signals import SignalCounter
    from shared.alerts.store import AlertStore
    from shared.audit import AuditLog
    from shared.chat.language_model import LanguageModel
    from shared.chat.memory import ChatMemory
    from shared.chat.service import ChatService
    from shared.config import Settings
    from shared.core.auth import Authenticator
    from shared.core.health import Readiness
    from shared.enrollment.document import VoiceRecords
    from shared.enrollment.voices import VoiceService
    from shared.ingestion.recordings import RecordingStore
    from shared.ingestion.service import IngestionService
    from shared.privacy.erasure import PrivacyErasures
    from shared.privacy.exports import PrivacyExports
    from shared.privacy.inventory import InventoryTaker
    from shared.privacy.requests import PrivacyRequests
    from shared.realtime.engines import SpeechToText, TextToSpeech
    from shared.realtime.service import Gateway, RealtimeService
    from shared.realtime.turn_queue import TurnQueue, TurnTicket
    from shared.realtime.utterances import UtteranceBuffer
    from shared.retention.holds import HoldIndex, HoldStore
    from shared.retention.policy import RetentionPolicy
    from shared.retention.sweep import RetentionSweep
    from shared.retention.tagging import RetentionTagger
    from shared.storage.blobs import AzureBlobStore
    from shared.storage.ledger import Ledger
    from shared.storage.rollups import RollupStore
    from shared.storage.sas import SasIssuer
    from shared.storage.scope import TenantScope
    from shared.synthesis.cache import SynthesisCache
    from shared.synthesis.chain import FallbackChain, SpeechProvider
    from shared.synthesis.jobs import SynthesisJobs
    from shared.synthesis.service import SpeechProviders, SynthesisService
    from shared.training.custom_voice import CustomVoiceClient
    from shared.training.service import TrainingService
    from shared.translation import Translator

# Services are imported where first used: this module is on every function's cold path.


log = logging.getLogger(__name__)

#: The partition of Timbre's own bookkeeping in the retention container (no tenant's data).
SYSTEM_TENANT = "timbre-system"
#: Each send of an outbox event to the notifications topic, at most (seconds).
PUBLISH_TIMEOUT_S = 5.0
SWEEP_CHECKPOINT = "retention-sweep-checkpoint"


class Runtime:
    """Clients and services of one process, created on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        custom_voice: CustomVoiceClient | None = None,
        translator: Translator | None = None,
        speech_providers: SpeechProviders | None = None,
        synthesis_cache: SynthesisCache | None = None,
        chat_model: LanguageModel | None = None,
        chat_memory: ChatMemory | None = None,
        rollups: RollupStore | None = None,
        webpubsub: Gateway | None = None,
        turn_queue: TurnQueue | None = None,
        utterances: UtteranceBuffer | None = None,
        speech_to_text: SpeechToText | None = None,
        text_to_speech: TextToSpeech | None = None,
        publisher: EventPublisher | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Build nothing yet; the keyword arguments replace what settings would build."""
        self.settings = settings
        self.probes_in_flight: dict[str, Future[object]] = {}
        self.dependency_probes_in_flight: dict[str, Future[Any]] = {}
        self._custom_voice = custom_voice
        self._translator = translator
        self._speech_providers = speech_providers
        self._synthesis_cache = synthesis_cache
        self._chat_model = chat_model
        self._chat_memory = chat_memory
        self._rollups = rollups
        self._webpubsub = webpubsub
        self._turn_queue = turn_queue
        self._utterances = utterances
        self._speech_to_text = speech_to_text
        self._text_to_speech = text_to_speech
        self._publisher = publisher
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        """The Blob service client."""
        from shared.storage.clients import make_blob_service

        return make_blob_service(self.settings)

    @cached_property
    def cosmos(self) -> CosmosClient:
        """The Cosmos client."""
        from shared.storage.clients import make_cosmos_client

        return make_cosmos_client(self.settings)

    def container(self, name: str) -> ContainerProxy:
        """One of the app's Cosmos containers, every operation bounded by the storage budget."""
        from shared.storage.clients import bounded_container

        database = self.cosmos.get_database_client(self.settings.cosmos_database)
        return bounded_container(database.get_container_client(name), self.settings)

    def tenant_scope(self, container: str, tenant_id: str) -> TenantScope:
        """A Cosmos container as one tenant sees it; a retained container's items are
        stamped for retention as they are written."""
        from shared.retention.sweep import ITEM_CONTAINERS
        from shared.storage.scope import TenantScope

        stamp = self.retention_tagger.stamp_item if container in ITEM_CONTAINERS else None
        return TenantScope(self.container(container), tenant_id, stamp=stamp)

    @cached_property
    def authenticator(self) -> Authenticator:
        """The bearer-token authenticator (dev tokens, Entra ID)."""
        from shared.core.auth import build_authenticator

        return build_authenticator(self.settings, on_failure=self.signals.auth_failure)

    @cached_property
    def audit(self) -> AuditLog:
        """The tamper-evident audit log."""
        from shared.audit import AuditLog

        return AuditLog(
            self.blob_service.get_container_client(self.settings.audit_container),
            enabled=self.settings.audit_enabled,
        )

    @cached_property
    def ledger(self) -> Ledger:
        """The idempotency ledger."""
        from shared.storage.ledger import Ledger

        return Ledger(self.container("ledger"))

    @cached_property
    def blob_store(self) -> AzureBlobStore:
        """Blob Storage behind the small BlobStore interface."""
        from shared.storage.blobs import AzureBlobStore

        return AzureBlobStore(self.blob_service, tags_for=self.retention_tagger.tags)

    @cached_property
    def retention_policy(self) -> RetentionPolicy:
        """The retention policy in force (the repository's, or TIMBRE_RETENTION_POLICY)."""
        from shared.retention.policy import load_policy

        return load_policy(self.settings)

    @cached_property
    def retention_sweep(self) -> RetentionSweep:
        """The retention sweep and its preview; its checkpoint in the ledger container."""
        from shared.retention.items import CosmosItems
        from shared.retention.sweep import CheckpointStore, RetentionSweep

        system = self.tenant_scope("retention", SYSTEM_TENANT)

        def load() -> dict[str, Any] | None:
            found = system.read(SWEEP_CHECKPOINT)
            return found.get("checkpoint") if found else None

        def save(checkpoint: dict[str, Any]) -> None:
            system.upsert({"id": SWEEP_CHECKPOINT, "checkpoint": checkpoint})

        return RetentionSweep(
            self.blob_store,
            self.retention_tagger,
            lambda: self.retention_policy,
            self.audit,
            CheckpointStore(load, save),
            items=CosmosItems(self.container),
            holds=self._hold_index,
            clock=self.clock,
        )

    @cached_property
    def legal_holds(self) -> HoldStore:
        """Legal holds per tenant."""
        from shared.retention.holds import HoldStore

        return HoldStore(lambda tenant: self.tenant_scope("retention", tenant), self.clock)

    def _hold_index(self) -> HoldIndex:
        """Every active legal hold of every tenant, for one sweep."""
        from shared.retention.holds import Hold, hold_index

        active = self.container("retention").query_items(
            "SELECT * FROM c WHERE c.docType = 'legal_hold' AND c.state = 'active'",
            enable_cross_partition_query=True,
        )
        holds = [(str(item["tenantId"]), Hold.model_validate(item)) for item in active]

        def sessions_of(tenant_id: str, user_id: str) -> list[str]:
            found = self.tenant_scope("chat", tenant_id).query(
                "c.kind = 'session' AND c.userId = @user", {"@user": user_id}
            )
            return [str(item["id"]) for item in found]

        return hold_index(holds, sessions_of)

    @cached_property
    def retention_tagger(self) -> RetentionTagger:
        """The retention tags of every blob Timbre writes (class, region, policy, expiry)."""
        from shared.retention.tagging import RetentionTagger

        def voice_region(tenant_id: str, voice_id: str) -> str | None:
            found = self.voice_records.read(tenant_id, voice_id)
            return found.data_region if found is not None else None

        return RetentionTagger(
            lambda: self.retention_policy,
            voice_region=voice_region,
            tenant_region=self.settings.data_region,
            clock=self.clock,
        )

    @cached_property
    def privacy_requests(self) -> PrivacyRequests:
        """Privacy exports and erasures as stored (ids, states, receipts)."""
        from shared.privacy.requests import PrivacyRequests

        return PrivacyRequests(lambda tenant: self.tenant_scope("privacy", tenant), self.clock)

    @cached_property
    def privacy_inventory(self) -> InventoryTaker:
        """What Timbre holds about a subject, store by store."""
        from shared.privacy.inventory import InventoryTaker

        return InventoryTaker(
            blobs=self.blob_store,
            scope=self.tenant_scope,
            voices=self.voice_records,
            exports_of=self.privacy_requests.exports_of,
        )

    @cached_property
    def privacy_exports(self) -> PrivacyExports:
        """Privacy exports: the package of everything held about a subject."""
        from datetime import timedelta

        from shared.privacy.exports import PrivacyExports

        return PrivacyExports(
            requests=self.privacy_requests,
            inventory=self.privacy_inventory,
            voices=self.voice_records,
            blobs=self.blob_store,
            read_item=lambda container, tenant, item: self.tenant_scope(container, tenant).read(
                item
            ),
            sas=lambda: self.sas,
            audit=self.audit,
            max_bytes=self.settings.export_max_bytes,
            link_lifetime=timedelta(minutes=self.settings.export_link_minutes),
            clock=self.clock,
        )

    @cached_property
    def privacy_erasures(self) -> PrivacyErasures:
        """Erasure of a subject, with its signed receipt."""
        from shared.privacy.erasure import ErasureTiming, PrivacyErasures
        from shared.privacy.receipts import RemainingCopy, remaining_copies
        from shared.retention.items import CosmosItems

        settings = self.settings

        def receipt_key() -> bytes | None:
            key = settings.receipt_key
            return key.get_secret_value().encode() if key is not None else None

        def remaining(issued: datetime, subject_type: str) -> list[RemainingCopy]:
            policy = self.retention_policy
            return remaining_copies(
                issued,
                subject_type=subject_type,
                soft_delete_days=settings.blob_soft_delete_days,
                backup_hours=settings.cosmos_backup_hours,
                log_days=settings.log_retention_days,
                jobs_days=max(
                    policy.horizon(region, "synthesized_audio").days for region in policy.regions
                ),
            )

        return PrivacyErasures(
            requests=self.privacy_requests,
            inventory=self.privacy_inventory,
            voices=self.voice_records,
            holds=self.legal_holds,
            cleanup=lambda: self.training.cleanup,
            blobs=self.blob_store,
            items=CosmosItems(self.container),
            gateway=self.webpubsub,
            audit=self.audit,
            receipt_key=receipt_key,
            remaining=remaining,
            clock=self.clock,
            # The confirming round waits until an upload through a URL issued before the
            # erasure (its consent revoked) has landed and been ingested.
            timing=ErasureTiming(settle_s=max(900, settings.upload_url_minutes * 60 + 300)),
            announce=self._erasure_completed,
        )

    def recordings(self, tenant_id: str) -> RecordingStore:
        """A tenant's recording reports and transcripts."""
        from shared.ingestion.recordings import RecordingStore

        return RecordingStore(self.tenant_scope("recordings", tenant_id))

    @cached_property
    def ingestion(self) -> IngestionService:
        """Audio ingestion: uploads to canonical audio and quality reports."""
        from shared.ingestion.service import IngestionService

        return IngestionService(
            self.blob_store,
            self.ledger,
            self.recordings,
            self.audit,
            max_bytes=self.settings.upload_max_bytes,
            thresholds=self.settings.audio_thresholds,
            tags_for=self.retention_tagger.tags,
        )

    @cached_property
    def voices(self) -> VoiceService:
        """Voice profiles, consent and upload URLs."""
        from datetime import timedelta

        from shared.enrollment.voices import VoiceService

        return VoiceService(
            self.voice_records,
            self.recordings,
            self.audit,
            self.sas,
            consent_lifetime=timedelta(days=self.settings.consent_lifetime_days),
            upload_url_lifetime=timedelta(minutes=self.settings.upload_url_minutes),
            clock=self.clock,
        )

    @cached_property
    def voice_records(self) -> VoiceRecords:
        """Voice documents: their one writer (enrollment and training both write through it)."""
        from shared.enrollment.document import VoiceRecords

        return VoiceRecords(lambda tenant_id: self.tenant_scope("voices", tenant_id))

    @cached_property
    def sas(self) -> SasIssuer:
        """Signs blob and container URLs (one cached user delegation key per process)."""
        from shared.storage.sas import SasIssuer

        return SasIssuer(self.blob_service)

    def custom_voice(self) -> CustomVoiceClient:
        """The Custom Voice client: key auth where a key is set, else the managed identity."""
        return self._custom_voice or self._custom_voice_client

    @cached_property
    def _custom_voice_client(self) -> CustomVoiceClient:
        # One client (and one httpx connection pool) per process, like every other client.
        from shared.training.custom_voice import CustomVoiceClient, key_auth, token_auth

        settings = self.settings
        if settings.speech_endpoint:
            base = settings.speech_endpoint.rstrip("/") + "/customvoice/"
        elif settings.speech_region:
            base = f"https://{settings.speech_region}.api.cognitive.microsoft.com/customvoice/"
        else:
            raise DependencyUnavailable("Custom Voice is not configured: set AZURE_SPEECH_ENDPOINT")
        if settings.speech_key:
            auth = key_auth(settings.speech_key)
        else:
            from shared.storage.clients import credential

            scope = "https://cognitiveservices.azure.com/.default"
            auth = token_auth(lambda: credential().get_token(scope).token)
        return CustomVoiceClient(
            base,
            auth,
            timeout_s=settings.custom_voice_timeout_s,
            connect_timeout_s=settings.custom_voice_connect_timeout_s,
        )

    @cached_property
    def training(self) -> TrainingService:
        """The activities of voice training."""
        from shared.training.service import Timing, TrainingService

        settings = self.settings
        return TrainingService(
            client=self.custom_voice,
            voices=self.voice_records,
            profiles=self.voices,
            recordings=self.recordings,
            consent_granted=lambda tenant, voice: (
                self.voices.consent_state(tenant, voice) == "granted"
            ),
            blobs=self.blob_store,
            sas=self.sas,
            audit=self.audit,
            outbox=lambda tenant_id: self.tenant_scope("outbox", tenant_id),
            minimum_utterances=self.settings.training_min_utterances,
            recipe_kind=self.settings.training_recipe,
            timing=Timing(
                first_poll_s=settings.training_poll_seconds,
                max_poll_s=settings.training_poll_max_seconds,
                model_deadline_h=settings.training_deadline_hours,
                approval_timeout_h=settings.approval_timeout_hours,
            ),
            forget_spoken=self._forget_spoken,
            clock=self.clock,
        )

    def _forget_spoken(self, tenant_id: str, voice_id: str) -> None:
        # Built on first use: a process that only trains never opens the cache.
        self.synthesis_cache.forget(tenant_id, voice_id)

    @cached_property
    def speech_providers(self) -> SpeechProviders:
        """The configured speech providers, or the ones given to the constructor."""
        if self._speech_providers is not None:
            return self._speech_providers
        from shared.synthesis.providers.builder import ConfiguredProviders

        def offline() -> SpeechProvider:  # in development, while Speech is not configured
            from shared.realtime.offline_synthesis import OfflineSpeechProvider

            return OfflineSpeechProvider()

        return ConfiguredProviders(self.settings, offline=offline)

    @cached_property
    def synthesis_chain(self) -> FallbackChain:
        """The fallback chain, with one circuit breaker per provider for the process."""
        from functools import partial

        from shared.synthesis.chain import CircuitBreaker, FallbackChain

        cooldown = self.settings.synthesis_cooldown_s
        return FallbackChain(
            breaker_factory=partial(
                CircuitBreaker, cooldown_s=cooldown, max_cooldown_s=max(cooldown * 10, 300)
            )
        )

    @cached_property
    def synthesis_cache(self) -> SynthesisCache:
        """Synthesized audio by request hash, per tenant."""
        from datetime import timedelta

        from shared.synthesis.cache import SynthesisCache

        if self._synthesis_cache is not None:
            return self._synthesis_cache
        return SynthesisCache(
            self.blob_store,
            max_age=timedelta(hours=self.settings.synthesis_cache_hours),
            clock=self.clock,
            timeout_s=self.settings.synthesis_cache_timeout_s,
        )

    def translator(self) -> Translator:
        """The Translator client (one per process); 503 when it is not configured."""
        return self._translator or self._configured_translator

    @cached_property
    def _configured_translator(self) -> Translator:
        from shared.translation import AzureTranslator

        settings = self.settings
        if not settings.translator_endpoint:
            raise DependencyUnavailable(
                "Translation is not configured: set AZURE_TRANSLATOR_ENDPOINT"
            )
        if settings.translator_key:
            return AzureTranslator(
                settings.translator_endpoint,
                key=settings.translator_key,
                region=settings.translator_region,
                limits=settings.translation_limits,
                timeout_s=settings.translator_timeout_s,
                connect_timeout_s=settings.translator_connect_timeout_s,
            )
        from shared.storage.clients import credential

        return AzureTranslator(
            settings.translator_endpoint,
            credential=credential(),
            region=settings.translator_region,
            resource_id=settings.translator_resource_id,
            limits=settings.translation_limits,
            timeout_s=settings.translator_timeout_s,
            connect_timeout_s=settings.translator_connect_timeout_s,
        )

    @cached_property
    def synthesis(self) -> SynthesisService:
        """Text to speech: translation, voice selection, consent, cache and fallback."""
        from shared.synthesis.service import SynthesisService

        return SynthesisService(
            providers=self.speech_providers,
            chain=self.synthesis_chain,
            cache=self.synthesis_cache,
            speakers=self.voices.speaker,
            translator=self.translator,
            audit=self.audit,
            stock_voices=self.settings.stock_voices,
            max_characters=self.settings.synthesis_max_characters,
        )

    @cached_property
    def synthesis_jobs(self) -> SynthesisJobs:
        """Batch synthesis of long texts (the orchestration's activities run here)."""
        from datetime import timedelta

        from shared.synthesis.jobs import SynthesisJobs

        settings = self.settings
        return SynthesisJobs(
            synthesis=self.synthesis,
            blobs=self.blob_store,
            sas=self.sas,
            audit=self.audit,
            max_characters=settings.synthesis_job_max_characters,
            # A segment is one /synthesize request: never over that request's limit.
            segment_characters=min(
                settings.synthesis_segment_characters, settings.synthesis_max_characters
            ),
            parallelism=settings.synthesis_job_parallelism,
            download_lifetime=timedelta(minutes=settings.synthesis_download_minutes),
        )

    @cached_property
    def agents(self) -> AgentCatalog:
        """The persona agents."""
        from shared.agents import AgentCatalog

        return AgentCatalog(self.settings)

    @cached_property
    def rollups(self) -> RollupStore:
        """Per-minute rollups of latency and counts (the alert rules read them)."""
        if self._rollups is not None:
            return self._rollups
        from shared.core.monitoring import metered
        from shared.storage.rollups import CosmosRollups

        # Also custom metrics in Application Insights, when telemetry is on.
        return metered(CosmosRollups(self.container("metrics")))

    @cached_property
    def chat_memory(self) -> ChatMemory:
        """Chat sessions, turns and facts."""
        if self._chat_memory is not None:
            return self._chat_memory
        from shared.chat.memory import CosmosChatMemory

        return CosmosChatMemory(lambda tenant_id: self.tenant_scope("chat", tenant_id))

    def chat_model(self) -> LanguageModel:
        """The agents' language model (one client per process); 503 when not configured."""
        return self._chat_model or self._configured_chat_model

    @cached_property
    def _configured_chat_model(self) -> LanguageModel:
        from shared.chat.language_model import ModelUnavailable

        settings = self.settings
        if settings.chat_agent == "scripted":  # development and test only (settings)
            from shared.chat.scripted import ScriptedAgent

            return ScriptedAgent()
        endpoint, deployment = settings.chat_model_endpoint, settings.openai_chat_deployment
        if not (endpoint and deployment):
            raise ModelUnavailable(
                "Chat is not configured: set AZURE_OPENAI_ENDPOINT (or AZURE_AI_ENDPOINT) and "
                "AZURE_OPENAI_CHAT_DEPLOYMENT (or AZURE_AI_DEPLOYMENT)",
                reason="chat_model_not_configured",
                retry_after_s=60,
            )
        from shared.chat.azure_openai import AzureOpenAIModel

        common: dict[str, Any] = {
            "endpoint": endpoint,
            "deployment": deployment,
            "timeout_s": settings.chat_timeout_s,
            "deadline_s": settings.chat_deadline_s,
            "max_retries": settings.chat_max_retries,
        }
        try:
            if settings.openai_api_key:
                return AzureOpenAIModel(api_key=settings.openai_api_key, **common)
            from shared.storage.clients import credential

            scope = "https://cognitiveservices.azure.com/.default"
            return AzureOpenAIModel(
                token_provider=lambda: credential().get_token(scope).token, **common
            )
        except ValueError:
            raise ModelUnavailable(
                "The chat model's settings are not usable: check the endpoint "
                "(AZURE_AI_ENDPOINT or AZURE_OPENAI_ENDPOINT), the deployment and the key",
                reason="chat_model_misconfigured",
                retry_after_s=60,
            ) from None

    @cached_property
    def chat(self) -> ChatService:
        """Chat with the persona agents: turns, memory, facts."""
        from shared.chat.context import Budget
        from shared.chat.service import ChatLimits, ChatService

        settings = self.settings
        return ChatService(
            memory=self.chat_memory,
            model=self.chat_model,
            agents=self.agents,
            audit=self.audit,
            rollups=self.rollups,
            limits=ChatLimits(
                budget=Budget(
                    context_tokens=settings.chat_context_tokens,
                    reply_tokens=settings.chat_reply_tokens,
                    summary_tokens=settings.chat_summary_tokens,
                    facts_tokens=settings.chat_facts_tokens,
                    recent_turns=settings.chat_recent_turns,
                ),
                max_message_chars=settings.chat_max_message_chars,
                facts_timeout_s=settings.chat_facts_timeout_s,
            ),
            region=settings.data_region,
            clock=self.clock,
        )

    def webpubsub(self) -> Gateway:
        """The Web PubSub service client (send, close, client URLs); 503 when not configured."""
        return self._webpubsub or self._configured_webpubsub

    @cached_property
    def _configured_webpubsub(self) -> Gateway:
        from shared.realtime.webpubsub import WebPubSubGateway

        settings = self.settings
        if settings.webpubsub_connection_string:
            return WebPubSubGateway(
                settings.webpubsub_hub,
                connection_string=settings.webpubsub_connection_string,
                timeout_s=settings.realtime_timeout_s,
            )
        if settings.webpubsub_endpoint:
            from shared.storage.clients import credential

            return WebPubSubGateway(
                settings.webpubsub_hub,
                endpoint=settings.webpubsub_endpoint,
                credential=credential(),
                timeout_s=settings.realtime_timeout_s,
            )
        raise DependencyUnavailable(
            "Realtime voice is not configured: set WebPubSub__endpoint or "
            "WebPubSubConnectionString",
            reason="realtime_not_configured",
            retry_after_s=60,
        )

    def turn_queue(self) -> TurnQueue:
        """The Service Bus queue of voice turns; 503 when not configured."""
        return self._turn_queue or self._configured_turn_queue

    @cached_property
    def _configured_turn_queue(self) -> TurnQueue:
        from shared.realtime.turn_queue import ServiceBusTurnQueue

        settings = self.settings
        if settings.realtime_turns == "inprocess":  # development and test only (settings)
            from shared.realtime.local_turns import InProcessTurns

            return InProcessTurns(self._turn_here)
        if settings.servicebus_connection_string:
            return ServiceBusTurnQueue(
                settings.realtime_turn_queue,
                connection_string=settings.servicebus_connection_string,
                timeout_s=settings.realtime_timeout_s,
            )
        if settings.servicebus_namespace:
            from shared.storage.clients import credential

            return ServiceBusTurnQueue(
                settings.realtime_turn_queue,
                namespace=settings.servicebus_namespace,
                credential=credential(),
                timeout_s=settings.realtime_timeout_s,
            )
        raise DependencyUnavailable(
            "The voice turn queue is not configured: set "
            "ServiceBusConnection__fullyQualifiedNamespace or ServiceBusConnection",
            reason="realtime_not_configured",
            retry_after_s=60,
        )

    def _turn_here(self, ticket: TurnTicket) -> None:
        """One voice turn on this process, as the Service Bus worker runs it, its chat
        follow-ups done after it (they are queued to the follow-up queue by the worker)."""
        from shared.chat.views import FollowUp

        followups: list[str] = []
        self.realtime.run_turn(ticket, followups.append)
        for message in followups:
            try:
                self.chat.follow_up(FollowUp.model_validate_json(message))
            except Exception:  # the turn was answered; what it taught is best effort here
                log.warning("chat follow-up failed", extra={"event": "chat_followup_failed"})

    def speech_to_text(self) -> SpeechToText:
        """Speech to text of voice turns: offline in development when chosen, else Azure."""
        if self._speech_to_text is not None:
            return self._speech_to_text
        return self._configured_speech_to_text

    @cached_property
    def _configured_speech_to_text(self) -> SpeechToText:
        if self.settings.voice_engines == "offline":  # development and test only (settings)
            from shared.realtime.offline import OfflineSpeechToText

            return OfflineSpeechToText(grammar=self.settings.offline_phrases or None)
        from shared.realtime.engines import EngineFailed

        settings = self.settings
        if not (settings.speech_region or settings.speech_endpoint) or not (
            settings.speech_key or settings.speech_resource_id
        ):
            raise EngineFailed(
                "speech_to_text_unavailable",
                "Speech is not configured: set AZURE_SPEECH_REGION or AZURE_SPEECH_ENDPOINT "
                "with AZURE_SPEECH_RESOURCE_ID (or a key locally)",
            )
        from shared.realtime.azure_stt import AzureSpeechToText

        token_provider = None
        if not settings.speech_key:
            from shared.storage.clients import credential

            scope = "https://cognitiveservices.azure.com/.default"
            token_provider = lambda: credential().get_token(scope).token  # noqa: E731
        return AzureSpeechToText(
            # The custom-domain endpoint where there is one (Entra ID requires it).
            region=None if settings.speech_endpoint else settings.speech_region,
            endpoint=settings.speech_endpoint,
            key=settings.speech_key,
            token_provider=token_provider,
            resource_id=None if settings.speech_key else settings.speech_resource_id,
            timeout_s=settings.synthesis_timeout_s,
        )

    def text_to_speech(self) -> TextToSpeech:
        """The agents' voices for voice turns: offline in development when chosen, else
        Azure neural voices."""
        if self._text_to_speech is not None:
            return self._text_to_speech
        return self._configured_text_to_speech

    @cached_property
    def _configured_text_to_speech(self) -> TextToSpeech:
        if self.settings.voice_engines == "offline":  # development and test only (settings)
            from shared.realtime.offline import OfflineTextToSpeech

            return OfflineTextToSpeech()
        from shared.realtime.speech import NeuralVoiceSpeech

        return NeuralVoiceSpeech(self.speech_providers)

    @cached_property
    def realtime(self) -> RealtimeService:
        """Realtime voice: negotiate, the upstream's events, the turn worker."""
        from shared.realtime.connections import ConnectionStore
        from shared.realtime.protocol import AudioLimits
        from shared.realtime.service import BYTES_PER_SECOND, RealtimeLimits, RealtimeService
        from shared.realtime.utterances import BlobUtteranceBuffer

        settings = self.settings
        max_bytes = int(settings.realtime_max_utterance_s * BYTES_PER_SECOND)
        # Chunks of whole samples; 10 ms frames at the finest bound the number of chunks.
        chunk = int(BYTES_PER_SECOND * settings.realtime_chunk_ms / 1000) // 2 * 2
        return RealtimeService(
            chat=self.chat,
            agents=self.agents,
            connections=ConnectionStore(lambda tenant: self.tenant_scope("realtime", tenant)),
            buffer=self._utterances
            or BlobUtteranceBuffer(self.blob_service, timeout_s=settings.storage_timeout_s),
            queue=self.turn_queue,
            access=self.webpubsub,
            sender=self.webpubsub,
            speech_to_text=self.speech_to_text,
            text_to_speech=self.text_to_speech,
            rollups=self.rollups,
            limits=RealtimeLimits(
                audio=AudioLimits(
                    max_frame_bytes=settings.realtime_max_frame_bytes,
                    max_seq=max_bytes // (BYTES_PER_SECOND // 100),
                ),
                max_utterance_bytes=max_bytes,
                url_minutes=settings.realtime_url_minutes,
                events_per_second=settings.realtime_events_per_second,
                chunk_bytes=chunk,
            ),
            hub=settings.webpubsub_hub,
            region=settings.data_region,
            clock=self.clock,
            tags=self.retention_tagger.tags,
        )

    # ---- Health and alerts (issue 14) -------------------------------------------------------

    @cached_property
    def signals(self) -> SignalCounter:
        """Requests and authentication failures, counted here and written a few times a
        minute (the flusher thread starts with the first request)."""
        from shared.alerts.signals import SignalCounter

        return SignalCounter(lambda: self.rollups, clock=self.clock)

    @cached_property
    def alert_rules(self) -> tuple[Rule, ...]:
        """The SOP's rules with TIMBRE_ALERT_RULES applied."""
        from shared.alerts.rules import rules_from

        return rules_from(self.settings.alert_rules)

    @cached_property
    def alert_store(self) -> AlertStore:
        """The platform's alerts."""
        from shared.alerts.store import AlertStore

        return AlertStore(lambda: self.tenant_scope("alerts", SYSTEM_TENANT))

    @cached_property
    def alerts(self) -> AlertEvaluator:
        """The evaluation minute, and the admins' acknowledge and resolve."""
        from shared.alerts.evaluation import AlertEvaluator

        return AlertEvaluator(
            rules=self.alert_rules,
            store=self.alert_store,
            rollups=self.rollups,
            streaks=self.probe_log.streaks,
            active_sessions=self._active_sessions,
            announce=self._announce,
            audit=self._audit_alert,
            clock=self.clock,
        )

    @cached_property
    def probe_log(self) -> ProbeLog:
        """Probe rounds, hourly counts and streaks in the `health` container."""
        from shared.alerts.probes import CosmosProbeLog

        return CosmosProbeLog(self.container("health"), stamp=self.retention_tagger.stamp_item)

    def probe_targets(self) -> dict[str, Probe | None]:
        """Every dependency's probe (None where not configured), and the app's readiness."""
        from shared.alerts.probe_targets import probe_targets
        from shared.storage.clients import credential

        targets = probe_targets(
            self.settings,
            blob_service=lambda: self.blob_service,
            cosmos=lambda: self.cosmos,
            credential=credential,
        )
        targets["app"] = self._ready_probe
        return targets

    def _ready_probe(self, seconds: float) -> None:
        """The app's own readiness, as `/api/health/ready` reports it."""
        from shared.alerts.probe_targets import ProbeFailed

        report = self.readiness()
        if report.status != "ready":
            failing = sorted(check.name for check in report.checks if not check.ok)
            raise ProbeFailed("not_ready", ",".join(failing) or None)

    def probe_round(self) -> list[ProbeOutcome]:
        """One round of probes, every one at once within TIMBRE_PROBE_TIMEOUT_SECONDS, kept."""
        from shared.alerts.probes import run_round

        outcomes = run_round(
            self.probe_targets(),
            timeout_s=self.settings.probe_timeout_s,
            clock=self.clock,
            in_flight=self.dependency_probes_in_flight,
        )
        try:
            self.probe_log.record(outcomes)
        except Exception:
            # Cosmos itself may be what is down: say what the round found, then fail the
            # invocation (the host's failure count is what Azure Monitor watches).
            log.exception(
                "probe round not kept",
                extra={
                    "event": "probe_round_unkept",
                    "down": sorted(o.dependency for o in outcomes if o.status == "down"),
                },
            )
            raise
        return outcomes

    @cached_property
    def outbox(self) -> OutboxStore:
        """Domain events waiting for the notifications topic."""
        from shared.alerts.outbox import CosmosOutbox

        return CosmosOutbox(self.container("outbox"))

    def publish_outbox(self) -> PublishReport:
        """Send pending events to the notifications topic; nothing sent (and a warning)
        while Service Bus is not configured, so they wait in the outbox."""
        from shared.alerts.outbox import PublishReport, publish_pending

        publisher = self._event_publisher
        if publisher is None:
            pending = len(self.outbox.pending(100))
            if pending:
                log.warning(
                    "outbox events wait: Service Bus is not configured",
                    extra={"event": "outbox_unpublished", "pending": pending},
                )
            return PublishReport(0, 0, pending)
        return publish_pending(self.outbox, publisher, clock=self.clock)

    @cached_property
    def _event_publisher(self) -> EventPublisher | None:
        if self._publisher is not None:
            return self._publisher
        from shared.alerts.outbox import ServiceBusEventPublisher
        from shared.storage.servicebus import BoundedSender

        settings = self.settings
        topic = settings.notifications_topic
        if settings.servicebus_connection_string:
            sender = BoundedSender(
                topic,
                kind="topic",
                connection_string=settings.servicebus_connection_string,
                timeout_s=PUBLISH_TIMEOUT_S,
                thread_name="timbre-outbox",
            )
        elif settings.servicebus_namespace:
            from shared.storage.clients import credential

            sender = BoundedSender(
                topic,
                kind="topic",
                namespace=settings.servicebus_namespace,
                credential=credential(),
                timeout_s=PUBLISH_TIMEOUT_S,
                thread_name="timbre-outbox",
            )
        else:
            return None
        return ServiceBusEventPublisher(sender)

    @cached_property
    def notifier(self) -> Notifier:
        """Delivers alert notices to Slack, Teams, PagerDuty and the email relay."""
        from shared.alerts.channels import Routes
        from shared.alerts.delivery import Deliverer
        from shared.alerts.notifier import NOTIFY_LEASE, Notifier
        from shared.storage.ledger import Ledger

        settings = self.settings
        return Notifier(
            Deliverer(settings.channel_secrets()),
            Routes.parse(settings.alert_routes),
            Ledger(self.container("ledger"), clock=self.clock, lease=NOTIFY_LEASE),
            self.clock,
        )

    def _active_sessions(self) -> int:
        from shared.realtime.connections import count_connected

        return count_connected(self.container("realtime"), self.clock())

    def record_event(
        self, event_type: str, tenant_id: str, event_id: str, data: dict[str, Any]
    ) -> bool:
        """Put a domain event in the tenant's outbox (once per id); True if it is new."""
        from shared.alerts.outbox import OutboxEvent, write_event

        event = OutboxEvent(
            id=event_id,
            type=event_type,
            tenant_id=tenant_id,
            session_id=event_id,
            created_at=self.clock(),
            data=data,
        )
        return write_event(self.tenant_scope("outbox", tenant_id), event)

    def _erasure_completed(self, tenant_id: str, event_id: str, data: dict[str, Any]) -> None:
        self.record_event("privacy.erasure_completed", tenant_id, event_id, data)

    def _announce(self, change: Change) -> None:
        from shared.alerts.outbox import alert_event, write_event

        write_event(self.tenant_scope("outbox", SYSTEM_TENANT), alert_event(change))

    def _audit_alert(self, alert: Alert, before: str | None, by: str) -> None:
        from shared.audit import AuditEvent

        tenant = self.settings.operator_tenant_id or SYSTEM_TENANT
        self.audit.record(
            tenant,
            by,
            AuditEvent(
                f"alert.{alert.state}",
                "alert",
                alert.id,
                details={"rule": alert.rule, "severity": alert.severity, "from": before or "none"},
            ),
        )

    # ---- end of Health and alerts (issue 14) ------------------------------------------------

    def bootstrap(self) -> list[str]:
        """Create the database, containers and blob containers the app needs."""
        from shared.storage.bootstrap import bootstrap

        return bootstrap(self.settings, self.cosmos, self.blob_service)

    def readiness(self) -> Readiness:
        """Probe Blob Storage and Cosmos DB in parallel."""
        from shared.core.health import readiness

        settings = self.settings
        return readiness(
            {
                "blob_storage": lambda: self.blob_service.get_container_client(
                    settings.audit_container
                ).get_container_properties(),
                "cosmos_db": lambda: self.cosmos.get_database_client(
                    settings.cosmos_database
                ).read(),
            },
            timeout_s=settings.readiness_timeout_s,
            services=settings.configured_services,
            in_flight=self.probes_in_flight,
        )


_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The process-wide runtime (settings validated on first call)."""
    global _runtime  # noqa: PLW0603 (the one process-wide composition root)
    if _runtime is None:
        with _lock:
            if _runtime is None:
                from shared.config import get_settings

                settings = get_settings()
                configure_logging(settings.log_level)
                _configure_monitoring(settings)
                _runtime = Runtime(settings)
    return _runtime


def _configure_monitoring(settings: Settings) -> None:
    """OpenTelemetry to Application Insights, loaded only when its connection string is set."""
    import os

    from shared.core.monitoring import configure_monitoring

    secret = settings.appinsights_connection_string
    configure_monitoring(
        secret.get_secret_value() if secret else None,
        service_name=os.environ.get("WEBSITE_SITE_NAME") or "timbre",
        environment=settings.environment.value,
    )


def use_runtime(value: Runtime | None) -> None:
    """Replace the process-wide runtime (tests), or drop it to rebuild from settings."""
    global _runtime  # noqa: PLW0603
    with _lock:
        _runtime = value
        from shared.config import get_settings

        get_settings.cache_clear()
