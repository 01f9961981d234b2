"""Azure AI Speech speech to text of one voice-turn utterance, as a `SpeechToText`.

Wire contract: the Speech SDK (`azure-cognitiveservices-speech`, verified with 1.53)
speaks the service's WebSocket protocol: an upgrade per recognition, then `speech.config`,
`speech.context` (the locale) and binary `audio` messages (a WAV header the SDK writes,
the PCM in 100 ms chunks, an empty message at the end of the stream), answered by
`turn.start`, `speech.hypothesis`, one `speech.phrase` per phrase, and `turn.end`.
Where it connects:
- `region="westeurope"`: the SDK's regional recognition endpoint;
- `endpoint="https://<name>.cognitiveservices.azure.com"` (custom domain, needed for
  private endpoints): `SpeechConfig(endpoint=...)`; without a path the SDK 1.53 asks for
  `/stt/speech/universal/v2` with the locale in `speech.context`;
- `endpoint="ws://127.0.0.1:5000"` or `wss://...` (a Speech container, the loopback fake
  in tests): `SpeechConfig(host=...)`, which asks for
  `/speech/recognition/conversation/cognitiveservices/v1?language=<locale>`.
Auth as in the text-to-speech adapter: a key goes as `Ocp-Apim-Subscription-Key`; Entra ID
as the authorization token `aad#{resource_id}#{access token}` (`Authorization: Bearer`),
asked of `token_provider` before every call (pass a caching provider, e.g.
`azure.identity.get_bearer_token_provider(credential,
"https://cognitiveservices.azure.com/.default")`); it runs outside the timeout.

Recognition. The utterance goes through a `PushAudioInputStream` declared PCM16 24 kHz
mono and is recognised with continuous recognition: an utterance of up to 30 s may hold
pauses, and `recognize_once` ends at the first one (it returned one phrase where the
loopback service answered two). The recognised phrases are joined (with a space, or none
for locales written without spaces). A stream that ends makes the SDK report `Canceled`
with reason `EndOfStream`, then `session_stopped`: the normal end, not a failure. NoMatch
phrases (nobody spoke) add nothing, so silence is an empty transcript.

Errors. The SDK raises nothing for a failed recognition: it reports a `Canceled` event
whose `CancellationErrorCode` is mapped here (each verified against the loopback
service): AuthenticationFailure (HTTP 401, and 403 too), Forbidden and BadRequest (the
locale or audio format refused: this service's configuration, not the speaker's) ->
`speech_to_text_misconfigured`; TooManyRequests (429) -> `speech_to_text_throttled`;
ConnectionFailure (refused, DNS), ServiceTimeout, ServiceError (500, or a close with 1011),
ServiceUnavailable (503) and anything else -> `speech_to_text_unavailable`; no result
within `timeout_s` -> `speech_to_text_timeout`. Messages are fixed sentences for the
client; the log carries the code, the SDK's code name and the HTTP status or close code
parsed from the SDK's text, never that text (it quotes the URL and whatever the service
answered), the audio or the words heard.

Timeout. Every call returns within about `timeout_s` of wall-clock time (plus up to
`_STOP_GRACE_S` when a stop is slow). The SDK's one per-call timer,
`SPEECH-OneShotRecognition-OperationTimeoutMs`, serves `recognize_once` only (left alone,
a silent service held `recognize_once` for 70 s). So completion is awaited on a
`threading.Event` set by `session_stopped` or an error `Canceled`, with the remaining
budget; on expiry `stop_continuous_recognition_async()` ends the session. A session not
stopped within `_STOP_GRACE_S` is parked (kept referenced, so its callbacks stay valid),
reaped by a later call once it has ended; while `_MAX_HUNG` are parked new calls fail fast
as unavailable rather than pile up native connections. No thread is started per call.

SDK quirks (1.53, measured against the loopback service; the properties are not in
`PropertyId`: found in the native library, set by name, each shown to act):
- `SPEECH-StopRecognitionTimeoutInSeconds` (default 10) is how long a stop waits for the
  service's `turn.end`, and deleting a recognizer waits for it too; set to 0 the stop ends
  a silent or hung session in about 1 ms.
- Continuous recognition reconnects on 429, 500, 503 and a close with 1011, resending the
  audio: six attempts with backoff (~1.8 s) by default. `SPEECH-Error-MaxRetryCount` is 1
  here: one more try for a dropped connection, not a burst against a throttled service.
  401, 403 and 1007 are not retried.
- The SDK sends the first 5 s of audio at once and the rest at twice real time (a 30 s
  utterance took 12.4 s over loopback); `SPEECH-TransmitLengthBeforeThrottleMs` at 30 s
  sends a whole turn's utterance at once (0.25 s).
- If the push stream has already ended when the SDK's audio pump starts, the start waits
  out a 500 ms timer (most calls). So the stream is closed only after the start's future
  has resolved; that future resolves before the connection is opened, so it cannot hang
  on the service.
- HTTP 403 on the upgrade is reported as AuthenticationFailure; a close with 1007 as
  BadRequest. The SDK writes nothing to Python logging.

Each call builds its own recognizer (the push stream is bound to it at construction), so
each call opens its own connection. The SDK is imported in the constructor (about 90 ms):
build the engine once per process and reuse it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from shared.realtime.engines import EngineFailed, Transcript

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 24_000
BITS_PER_SAMPLE: Final = 16
CHANNELS: Final = 1

MISCONFIGURED: Final = "speech_to_text_misconfigured"
THROTTLED: Final = "speech_to_text_throttled"
UNAVAILABLE: Final = "speech_to_text_unavailable"
TIMEOUT: Final = "speech_to_text_timeout"

# Members of `CancellationErrorCode`; any other (RuntimeError, the internal redirects,
# EmbeddedModelError) is unavailable.
FAILURE_CODES: Final[dict[str, str]] = {
    "AuthenticationFailure": MISCONFIGURED,
    "Forbidden": MISCONFIGURED,
    "BadRequest": MISCONFIGURED,
    "TooManyRequests": THROTTLED,
    "ConnectionFailure": UNAVAILABLE,
    "ServiceTimeout": UNAVAILABLE,
    "ServiceError": UNAVAILABLE,
    "ServiceUnavailable": UNAVAILABLE,
}

# What the client is told: fixed sentences, never the SDK's text.
MESSAGES: Final[dict[str, str]] = {
    MISCONFIGURED: "Speech to text is not configured correctly",
    THROTTLED: "Speech to text is busy; speak again in a moment",
    UNAVAILABLE: "Speech to text is unavailable; speak again",
    TIMEOUT: "Speech to text took too long; speak again",
}

# Written without spaces between words: their phrases are joined as they are.
_UNSPACED_LANGUAGES: Final = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "wuu"})

_STOP_GRACE_S: Final = 0.5
_MAX_RETRIES: Final = 1
_BURST_MS: Final = 30_000  # the longest utterance a turn carries
_MAX_HUNG: Final = 4

_UPGRADE_STATUS: Final = re.compile(r"WebSocket upgrade failed: [^(]*\((\d{3})\)")
_CLOSE_CODE: Final = re.compile(r"Error code: (\d{4})\b")


@dataclass
class _Recognition:
    """What one recognition's SDK callbacks collected; they run on SDK threads."""

    done: threading.Event = field(default_factory=threading.Event)
    phrases: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_details: str = ""


class RecognitionFailure(Exception):
    """A failed call: the public code and what may be logged about it."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class AzureSpeechToText:
    """Transcribes one utterance (PCM16, 24 kHz, mono) with Azure AI Speech.

    Give exactly one of `region` and `endpoint` (https custom domain, or a ws(s) host),
    and exactly one of `key` and `token_provider` (an Entra access token for the
    Cognitive Services scope; needs the Speech resource's `resource_id`). `timeout_s`
    bounds each call.
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        resource_id: str | None = None,
        timeout_s: float,
    ) -> None:
        if (region is None) == (endpoint is None):
            raise ValueError("pass exactly one of region and endpoint")
        if endpoint is not None and not endpoint.startswith(("https://", "wss://", "ws://")):
            raise ValueError("the endpoint must be https:// (custom domain) or ws(s):// (host)")
        if (key is None) == (token_provider is None):
            raise ValueError("pass exactly one of key and token_provider")
        if (token_provider is None) != (resource_id is None):
            raise ValueError("token_provider needs resource_id (the Speech resource's id)")
        if timeout_s <= 0:
            raise ValueError("need timeout_s > 0")

        import azure.cognitiveservices.speech as speechsdk  # type: ignore[import-untyped,unused-ignore]

        self._sdk: Any = speechsdk
        self._region = region
        self._endpoint = endpoint
        self._key = key
        self._token_provider = token_provider
        self._resource_id = resource_id
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._hung: list[tuple[Any, _Recognition, tuple[Any, Any]]] = []

    @property
    def hung_calls(self) -> int:
        """Timed-out calls whose native side has not ended yet (at most `_MAX_HUNG`)."""
        with self._lock:
            self._reap_hung()
            return len(self._hung)

    def transcribe(self, pcm: bytes, locale: str) -> Transcript:
        """The words of the utterance; empty text when nobody spoke; or `EngineFailed`."""
        if not pcm:
            return Transcript("", locale)
        started = time.monotonic()
        try:
            token = self._authorization_token()
            phrases = self._recognize(pcm, locale, token, started + self._timeout_s)
        except RecognitionFailure as failure:
            logger.warning(
                "azure speech to text failed",
                extra={
                    "code": failure.code,
                    "detail": failure.detail,
                    "locale": locale,
                    "audio_bytes": len(pcm),
                    "elapsed_ms": round((time.monotonic() - started) * 1000),
                },
            )
            raise EngineFailed(failure.code, MESSAGES[failure.code]) from None
        separator = "" if locale.partition("-")[0].lower() in _UNSPACED_LANGUAGES else " "
        text = separator.join(phrases)
        logger.debug(
            "azure speech to text recognised",
            extra={
                "locale": locale,
                "audio_bytes": len(pcm),
                "phrases": len(phrases),
                "elapsed_ms": round((time.monotonic() - started) * 1000),
            },
        )
        return Transcript(text, locale)

    def _authorization_token(self) -> str | None:
        if self._token_provider is None:
            return None
        try:
            token = self._token_provider()
        except Exception as error:
            # The credential's message may quote its configuration; the type is enough.
            raise RecognitionFailure(
                UNAVAILABLE, f"token provider failed: {type(error).__name__}"
            ) from None
        return f"aad#{self._resource_id}#{token}"

    def _config(self, locale: str, token: str | None) -> Any:
        from shared.synthesis.providers.azure_speech import speech_config

        config = speech_config(
            self._sdk, region=self._region, endpoint=self._endpoint, key=self._key, token=token
        )
        config.speech_recognition_language = locale
        # A stop then ends the session at once instead of waiting (10 s by default) for a
        # service that may never answer.
        config.set_property_by_name("SPEECH-StopRecognitionTimeoutInSeconds", "0")
        # One reconnect (the audio is sent again) for a connection the service dropped;
        # the default five, with backoff, hammer a throttled service and spend ~1.8 s.
        config.set_property_by_name("SPEECH-Error-MaxRetryCount", str(_MAX_RETRIES))
        # The whole utterance in one burst: by default the SDK sends 5 s at once and the
        # rest at twice real time, which alone holds a 30 s utterance for 12.5 s.
        config.set_property_by_name("SPEECH-TransmitLengthBeforeThrottleMs", str(_BURST_MS))
        return config

    def _recognize(self, pcm: bytes, locale: str, token: str | None, deadline: float) -> list[str]:
        """The phrases recognised in `pcm`, or `RecognitionFailure`."""
        sdk = self._sdk
        with self._lock:
            self._reap_hung()
            if len(self._hung) >= _MAX_HUNG:
                raise RecognitionFailure(
                    UNAVAILABLE, f"{len(self._hung)} timed-out calls still open"
                )
        stream_format = sdk.audio.AudioStreamFormat(
            samples_per_second=SAMPLE_RATE, bits_per_sample=BITS_PER_SAMPLE, channels=CHANNELS
        )
        stream = sdk.audio.PushAudioInputStream(stream_format=stream_format)
        recognizer = sdk.SpeechRecognizer(
            speech_config=self._config(locale, token),
            audio_config=sdk.audio.AudioConfig(stream=stream),
        )
        if token is not None:
            recognizer.authorization_token = token
        state = _Recognition()
        recognized_speech = sdk.ResultReason.RecognizedSpeech
        error_reason = sdk.CancellationReason.Error

        # These run on SDK threads and hold only `state`, so dropping the recognizer
        # frees it at once (no reference cycle through the callbacks).
        def recognized(event: Any) -> None:
            result = event.result
            if result.reason == recognized_speech and result.text:
                state.phrases.append(result.text)

        def canceled(event: Any) -> None:
            details = event.cancellation_details
            if details.reason == error_reason and state.error_code is None:
                state.error_code = details.code.name
                state.error_details = details.error_details or ""
                state.done.set()

        def stopped(_: object) -> None:
            state.done.set()

        recognizer.recognized.connect(recognized)
        recognizer.canceled.connect(canceled)
        recognizer.session_stopped.connect(stopped)
        stream.write(pcm)
        start = recognizer.start_continuous_recognition_async()
        # Closed only once started: a stream that has already ended when the SDK's audio
        # pump starts makes the start wait out a 500 ms timer (most calls, measured).
        # The start returns before the connection is opened, so it cannot hang on it.
        start.get()
        stream.close()
        if not state.done.wait(max(0.0, deadline - time.monotonic())):
            stop = recognizer.stop_continuous_recognition_async()
            if state.done.wait(_STOP_GRACE_S):
                _settle(start, stop)
            else:
                with self._lock:
                    self._hung.append((recognizer, state, (start, stop)))
            raise RecognitionFailure(TIMEOUT, f"no result within {self._timeout_s:g} s")
        _settle(start, recognizer.stop_continuous_recognition_async())
        if state.error_code is not None:
            raise failure_of(state.error_code, state.error_details)
        return list(state.phrases)

    def _reap_hung(self) -> None:
        """Collect parked calls that have ended since; call with the lock held."""
        still_open: list[tuple[Any, _Recognition, tuple[Any, Any]]] = []
        for recognizer, state, futures in self._hung:
            if state.done.is_set():
                _settle(*futures)
            else:
                still_open.append((recognizer, state, futures))
        self._hung = still_open


def _settle(*futures: Any) -> None:
    """Resolve the SDK futures of an ended session: returns at once, frees their handles."""
    for future in futures:
        future.get()


def failure_of(error_code: str, error_details: str) -> RecognitionFailure:
    """The failure for a `CancellationErrorCode` name and the SDK's error text.

    Only the code and a status or close code parsed from the text are kept: the text
    itself quotes the URL and whatever the service answered.
    """
    code = FAILURE_CODES.get(error_code, UNAVAILABLE)
    detail = error_code
    status = _UPGRADE_STATUS.search(error_details)
    close = _CLOSE_CODE.search(error_details)
    if status is not None:
        detail += f" (HTTP {status.group(1)})"
    elif close is not None:
        detail += f" (close {close.group(1)})"
    return RecognitionFailure(code, detail)
