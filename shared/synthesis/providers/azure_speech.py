"""Azure AI Speech text to speech (neural and Custom Neural Voice) as a `SpeechProvider`.

Wire contract: the Speech SDK (`azure-cognitiveservices-speech`, verified with 1.53)
speaks the service's WebSocket protocol: one upgrade per connection, then per synthesis
`synthesis.context` (JSON naming the output format) and `ssml`, answered by `turn.start`,
binary `audio` chunks and `turn.end`. Where it connects:
- `region="westeurope"`:
  `wss://westeurope.tts.speech.microsoft.com/cognitiveservices/websocket/v1`;
- `endpoint="https://<name>.cognitiveservices.azure.com"` (custom domain, needed for
  private endpoints): `SpeechConfig(endpoint=...)`; without a path the SDK appends
  `/tts/cognitiveservices/websocket/v1` and switches the scheme to wss;
- `endpoint="ws://127.0.0.1:5000"` or `wss://...` (a Speech container, the loopback fake
  in tests): `SpeechConfig(host=...)`, which keeps the standard path
  `/cognitiveservices/websocket/v1`.
A Custom Neural Voice deployment is `SpeechConfig.endpoint_id`, sent as
`?deploymentId=<id>` on the upgrade. A key is sent as `Ocp-Apim-Subscription-Key`; Entra
ID uses the documented authorization token `aad#{resource_id}#{access token}` ("Microsoft
Entra authentication with the Speech SDK", sent as `Authorization: Bearer ...`). Tokens
expire, so `token_provider` is asked before every call and the result set on the
synthesizer: a connection opened by that call (or reopened after the service closed an
idle one) always carries a fresh token. Pass a caching provider (for example
`azure.identity.get_bearer_token_provider(credential,
"https://cognitiveservices.azure.com/.default")`); it runs outside the timeout.

Output formats: WAV -> `Riff24Khz16BitMonoPcm`, MP3 -> `Audio24Khz96KBitRateMonoMp3`,
Ogg Opus -> `Ogg24Khz16BitMonoOpus`, raw -> `Raw24Khz16BitMonoPcm`; nothing is played
(`audio_config=None`). The SSML is sent as it is: it was validated upstream.

Errors. The SDK raises nothing for a failed synthesis: it answers a `Canceled` result
whose `CancellationErrorCode` is mapped here (each verified against the loopback server):
TooManyRequests (HTTP 429 on the upgrade) -> throttled; ServiceTimeout -> timeout;
ServiceError (HTTP 500, or the socket closed with 1011 mid-turn) and ServiceUnavailable
(503) -> server_error; ConnectionFailure (refused, DNS), AuthenticationFailure (401, and
403 too) and Forbidden -> unavailable; BadRequest (the socket closed with 1007, e.g. bad
SSML or an unknown voice) -> rejected (the caller's 400, never a breaker count); anything
else -> canceled. `ProviderFailure.detail` is the code name
plus the HTTP status or close code parsed out of the SDK's message, never the message
itself: it quotes the URL and the service's own text, and only the code is known to be
safe. Neither the spoken text nor the key or token is logged; the log carries the
provider, kind, detail, voice, format and the SDK's request id. No retries here: the SDK
itself resends a turn whose first audio chunk is late, and for anything else the chain's
next step is a different provider.

Timeout. Every call returns within about `timeout_s` of wall-clock time. The SDK has no
per-call timeout and blocks in `ResultFuture.get()` for as long as the native call runs (a
silent service: 2 x 40 s). So completion is awaited on a `threading.Event` set by the
synthesizer's `synthesis_completed` / `synthesis_canceled` events, with the remaining
budget; on expiry `stop_speaking_async()` cancels the turn (measured: the canceled event
follows in about 1 ms, also while the upgrade itself hangs), the synthesizer is thrown
away and `ProviderFailure("timeout")` is raised. The SDK's own timers are the backstop,
set so they fire only after the budget (first chunk 0.7 x `timeout_s` per attempt, two
attempts; the rest of the audio 1.4 x): even a native call that ignored the stop ends by
itself. A call not finished `_STOP_GRACE_S` after the stop is parked (kept referenced, so
its callbacks stay valid), reaped by a later call once it has ended, and while `_MAX_HUNG`
are parked new calls fail fast with unavailable rather than pile up native connections.
No thread is started per call.

Reuse. Synthesizers are pooled per output format, at most `pool_size` idle each, one
call at a time per synthesizer (the pool hands each to one thread; the Functions worker
may call from several). A reused synthesizer keeps its WebSocket open: over loopback a
call took ~20 ms reused against ~40 ms with a new synthesizer (creating the object costs
0.06 ms; the difference is the connection), and against Azure a new connection adds DNS,
TLS and the upgrade. Only a synthesizer whose call succeeded goes back to the pool, and
one idle for over `_MAX_IDLE_S` is dropped rather than reused: the Speech WebSocket
protocol documents closing connections inactive for 180 s, and a call racing that close
costs a first-chunk timeout (quirks). A connection the service closed earlier is reopened
by the SDK on the next call (verified). `close()` drops the pool.

SDK quirks (1.53, measured against the loopback server):
- For `Riff*` formats the SDK asks the service for `raw-...-pcm` and writes the RIFF
  header itself (46 bytes); the service never sends a WAV header.
- `SpeechSynthesis_FirstChunkTimeoutMs` and `SpeechSynthesis_AllChunkTimeoutMs` are not
  in `PropertyId` (found in the native library, set by name) but work: the first bounds
  each of the SDK's two attempts (it resends the SSML once on the same connection, so a
  silent service costs twice the value; default 40 s, hence the 80 s hang), the second
  bounds the rest of the audio after the first chunk. The documented
  `SpeechSynthesis_FrameTimeoutInterval` does not shorten the wait for the first chunk
  (set to 2 s, a silent service still took 80 s); between chunks it fires only while the
  real-time factor exceeds `SpeechSynthesis_RtfTimeoutThreshold`, otherwise after at
  least 10 s (its docstring), so it is left alone.
- A close by the service that lands within a few ms before a call is missed: the SDK
  waits one first-chunk timeout on the dead connection, then resends on a new one (over
  loopback, 50 ms after the close is enough for it to notice). With the first-chunk timer
  at 0.7 x `timeout_s` that second attempt still fits in the budget (tested).
- HTTP 403 on the upgrade is reported as AuthenticationFailure, not Forbidden.
- `SpeechConfig` refuses `region` together with `endpoint`/`host`, and `auth_token`
  together with `endpoint`/`host` (set the token on the synthesizer instead).
- `host=` and `endpoint=` both accept `ws://` loopback addresses; they differ only in
  the path (above). `SpeechConfig(subscription=None, endpoint=...)` is valid.
- The SDK writes nothing to Python logging. Its cancellation text holds the request URL
  (with `deploymentId`), the connection id and the service's close reason or error body,
  which may quote the SSML (hence only codes leave this module); never the key.

The SDK is imported in the constructor (about 90 ms): build the provider once per
process and reuse it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.synthesis.chain import (
    AudioFormat,
    FailureKind,
    ProviderFailure,
    SynthesisRequest,
    SynthesisResult,
)

logger = logging.getLogger(__name__)

NAME: Final = "azure-speech"
CUSTOM_NAME_PREFIX: Final = "azure-speech-custom:"
DEFAULT_TIMEOUT_S: Final = 15.0
DEFAULT_POOL_SIZE: Final = 4

# Members of `SpeechSynthesisOutputFormat`, by name so the SDK need not be imported here.
OUTPUT_FORMATS: Final[dict[AudioFormat, str]] = {
    AudioFormat.WAV_PCM16_24K: "Riff24Khz16BitMonoPcm",
    AudioFormat.MP3: "Audio24Khz96KBitRateMonoMp3",
    AudioFormat.OGG_OPUS: "Ogg24Khz16BitMonoOpus",
    AudioFormat.RAW_PCM16_24K: "Raw24Khz16BitMonoPcm",
}

# Members of `CancellationErrorCode`; any other code (RuntimeError, the internal
# redirects, EmbeddedModelError, NoError) is "canceled".
FAILURE_KINDS: Final[dict[str, FailureKind]] = {
    "TooManyRequests": "throttled",
    "ServiceTimeout": "timeout",
    "ServiceError": "server_error",
    "ServiceUnavailable": "server_error",
    "ConnectionFailure": "unavailable",
    "AuthenticationFailure": "unavailable",
    "Forbidden": "unavailable",
    "BadRequest": "rejected",  # the service refused this request: SSML, voice, format
}

# The SDK's own timers, as shares of `timeout_s`. The first-chunk timer runs per attempt
# and the SDK makes two (2 x 0.7), so both fire only after the hard bound and end native
# calls this adapter has already given up on; a first attempt lost to a dead connection
# still leaves the second one time within the budget.
_FIRST_CHUNK_SHARE: Final = 0.7
_ALL_CHUNKS_SHARE: Final = 1.4
_STOP_GRACE_S: Final = 0.5
_MAX_HUNG: Final = 4
_MAX_IDLE_S: Final = 60.0

_UPGRADE_STATUS: Final = re.compile(r"WebSocket upgrade failed: [^(]*\((\d{3})\)")
_CLOSE_CODE: Final = re.compile(r"Error code: (\d{4})\b")


@dataclass
class _Session:
    """One synthesizer, used by one call at a time, and the event its results set."""

    synthesizer: Any
    done: threading.Event
    last_used: float


class AzureSpeechProvider:
    """Speaks a `SynthesisRequest` with Azure AI Speech (a stock or custom neural voice).

    Give exactly one of `region` and `endpoint` (https custom domain, or a ws(s) host),
    and exactly one of `key` and `token_provider` (an Entra access token for the
    Cognitive Services scope; needs the Speech resource's `resource_id`). `deployment_id`
    selects a Custom Neural Voice deployment; such a provider is named
    `azure-speech-custom:<id>` unless `name` says otherwise. `timeout_s` bounds each call;
    `pool_size` is the number of idle synthesizers kept per output format.
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        resource_id: str | None = None,
        deployment_id: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
        name: str | None = None,
    ) -> None:
        if (region is None) == (endpoint is None):
            raise ValueError("pass exactly one of region and endpoint")
        if endpoint is not None and not endpoint.startswith(("https://", "wss://", "ws://")):
            raise ValueError("the endpoint must be https:// (custom domain) or ws(s):// (host)")
        if (key is None) == (token_provider is None):
            raise ValueError("pass exactly one of key and token_provider")
        if (token_provider is None) != (resource_id is None):
            raise ValueError("token_provider needs resource_id (the Speech resource's id)")
        if deployment_id is not None and not deployment_id:
            raise ValueError("deployment_id must not be empty")
        if timeout_s <= 0 or pool_size < 0:
            raise ValueError("need timeout_s > 0 and pool_size >= 0")

        import azure.cognitiveservices.speech as speechsdk  # type: ignore[import-untyped,unused-ignore]

        self._sdk: Any = speechsdk
        # A custom voice deployment is its own endpoint: by default it gets its own
        # name, so its failures open its own breaker in the fallback chain.
        self.name = name or (CUSTOM_NAME_PREFIX + deployment_id if deployment_id else NAME)
        self._region = region
        self._endpoint = endpoint
        self._key = key
        self._token_provider = token_provider
        self._resource_id = resource_id
        self._deployment_id = deployment_id
        self._timeout_s = timeout_s
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._idle: dict[AudioFormat, list[_Session]] = {fmt: [] for fmt in AudioFormat}
        self._hung: list[tuple[_Session, Any]] = []

    @property
    def hung_calls(self) -> int:
        """Timed-out calls whose native side has not ended yet (at most `_MAX_HUNG`)."""
        with self._lock:
            self._reap_hung()
            return len(self._hung)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Synthesize the request's SSML, or raise `ProviderFailure`."""
        started = time.monotonic()
        deadline = started + self._timeout_s
        try:
            token = self._authorization_token()
            session = self._acquire(request.format, token)
            result = self._speak(session, request.ssml, token, deadline)
        except ProviderFailure as failure:
            self._log_failure(failure, request, request_id="")
            raise
        request_id = str(result.result_id or "")
        try:
            audio = self._audio(result)
        except ProviderFailure as failure:
            self._log_failure(failure, request, request_id=request_id)
            raise
        self._release(request.format, session)
        logger.debug(
            "azure speech synthesized",
            extra={
                "provider": self.name,
                "voice": request.voice,
                "audio_format": request.format.value,
                "request_id": request_id,
                "bytes": len(audio),
                "elapsed_ms": round((time.monotonic() - started) * 1000),
            },
        )
        return SynthesisResult(
            audio=audio,
            content_type=request.format.content_type,
            provider=self.name,
            voice=request.voice,
        )

    def close(self) -> None:
        """Drop the idle synthesizers and their connections; the provider stays usable."""
        with self._lock:
            idle = [session for sessions in self._idle.values() for session in sessions]
            for sessions in self._idle.values():
                sessions.clear()
        del idle  # released here, outside the lock

    def _authorization_token(self) -> str | None:
        if self._token_provider is None:
            return None
        try:
            token = self._token_provider()
        except Exception as error:
            # The credential's message may quote its configuration; the type is enough.
            raise ProviderFailure(
                "unavailable", f"token provider failed: {type(error).__name__}"
            ) from None
        return f"aad#{self._resource_id}#{token}"

    def _acquire(self, audio_format: AudioFormat, token: str | None) -> _Session:
        """An idle synthesizer for the format, or a new one."""
        now = time.monotonic()
        stale: list[_Session] = []
        with self._lock:
            self._reap_hung()
            if len(self._hung) >= _MAX_HUNG:
                raise ProviderFailure(
                    "unavailable", f"{len(self._hung)} timed-out calls still open"
                )
            idle = self._idle[audio_format]
            while idle:
                session = idle.pop()
                if now - session.last_used <= _MAX_IDLE_S:
                    return session
                stale.append(session)
        del stale  # released outside the lock
        return self._new_session(audio_format, token)

    def _release(self, audio_format: AudioFormat, session: _Session) -> None:
        session.last_used = time.monotonic()
        with self._lock:
            idle = self._idle[audio_format]
            if len(idle) < self._pool_size:
                idle.append(session)

    def _reap_hung(self) -> None:
        """Collect parked calls that have ended since; call with the lock held."""
        still_open: list[tuple[_Session, Any]] = []
        for session, future in self._hung:
            if session.done.is_set():
                future.get()  # resolved already: returns at once and frees the native handle
            else:
                still_open.append((session, future))
        self._hung = still_open

    def _new_session(self, audio_format: AudioFormat, token: str | None) -> _Session:
        sdk = self._sdk
        config = speech_config(
            sdk, region=self._region, endpoint=self._endpoint, key=self._key, token=token
        )
        if self._deployment_id is not None:
            config.endpoint_id = self._deployment_id
        config.set_speech_synthesis_output_format(
            getattr(sdk.SpeechSynthesisOutputFormat, OUTPUT_FORMATS[audio_format])
        )
        timeout_ms = self._timeout_s * 1000
        config.set_property_by_name(
            "SpeechSynthesis_FirstChunkTimeoutMs", str(round(timeout_ms * _FIRST_CHUNK_SHARE))
        )
        config.set_property_by_name(
            "SpeechSynthesis_AllChunkTimeoutMs", str(round(timeout_ms * _ALL_CHUNKS_SHARE))
        )
        synthesizer = sdk.SpeechSynthesizer(speech_config=config, audio_config=None)
        done = threading.Event()

        # Runs on an SDK thread. It holds only the event, so dropping the session frees
        # the synthesizer at once (no reference cycle through the callbacks).
        def finished(_: object) -> None:
            done.set()

        synthesizer.synthesis_completed.connect(finished)
        synthesizer.synthesis_canceled.connect(finished)
        return _Session(synthesizer=synthesizer, done=done, last_used=time.monotonic())

    def _speak(self, session: _Session, ssml: str, token: str | None, deadline: float) -> Any:
        """The SDK's result for the SSML, or `ProviderFailure("timeout")` at the deadline."""
        synthesizer = session.synthesizer
        if token is not None:
            synthesizer.authorization_token = token
        session.done.clear()
        future = synthesizer.speak_ssml_async(ssml)
        if session.done.wait(max(0.0, deadline - time.monotonic())):
            return future.get()  # the result is ready: returns at once
        synthesizer.stop_speaking_async()
        if session.done.wait(_STOP_GRACE_S):
            future.get()
        else:
            with self._lock:
                self._hung.append((session, future))
        raise ProviderFailure("timeout", f"no complete audio within {self._timeout_s:g} s")

    def _audio(self, result: Any) -> bytes:
        """The audio of a completed result, or the failure a canceled one stands for."""
        reasons = self._sdk.ResultReason
        if result.reason == reasons.SynthesizingAudioCompleted:
            audio = bytes(result.audio_data)
            if not audio:
                raise ProviderFailure("server_error", "empty audio")
            return audio
        if result.reason != reasons.Canceled:
            raise ProviderFailure("server_error", f"unexpected result {result.reason.name}")
        details = result.cancellation_details
        raise cancellation_failure(details.error_code.name, details.error_details or "")

    def _log_failure(
        self, failure: ProviderFailure, request: SynthesisRequest, *, request_id: str
    ) -> None:
        logger.warning(
            "azure speech synthesis failed",
            extra={
                "provider": self.name,
                "kind": failure.kind,
                "detail": failure.detail,
                "voice": request.voice,
                "audio_format": request.format.value,
                "request_id": request_id,
            },
        )


def cancellation_failure(error_code: str, error_details: str) -> ProviderFailure:
    """The `ProviderFailure` for a `CancellationErrorCode` name and the SDK's error text.

    Only the code and a status or close code parsed from the text are kept: the text
    itself quotes the URL and whatever the service answered.
    """
    kind = FAILURE_KINDS.get(error_code, "canceled")
    detail = error_code
    status = _UPGRADE_STATUS.search(error_details)
    close = _CLOSE_CODE.search(error_details)
    if status is not None:
        detail += f" (HTTP {status.group(1)})"
    elif close is not None:
        detail += f" (close {close.group(1)})"
    return ProviderFailure(kind, detail)


def speech_config(
    sdk: Any, *, region: str | None, endpoint: str | None, key: str | None, token: str | None
) -> Any:
    """A Speech SDK config for a region (key or Entra token), a custom-domain https
    endpoint, or a ws:// host (loopback tests); shared by synthesis and recognition."""
    if region is not None:
        if key is not None:
            return sdk.SpeechConfig(subscription=key, region=region)
        return sdk.SpeechConfig(auth_token=token, region=region)
    if endpoint is not None and endpoint.startswith("https://"):
        return sdk.SpeechConfig(endpoint=endpoint, subscription=key)
    return sdk.SpeechConfig(host=endpoint, subscription=key)
