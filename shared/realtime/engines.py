"""The engines of a voice turn behind small ports: speech to text and text to speech.

Azure Speech serves both in Azure (bounded calls, as in synthesis). Development engines
that run offline plug in behind the same ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Transcript:
    """What was heard in one utterance."""

    text: str
    language: str


@dataclass(frozen=True)
class Voice:
    """Who speaks a reply: a neural voice, its locale and style."""

    name: str
    locale: str
    style: str | None = None


class SpeechToText(Protocol):
    """Turns one utterance (PCM16, 24 kHz, mono) into text."""

    def transcribe(self, pcm: bytes, locale: str) -> Transcript:
        """The words of the utterance; empty text when nobody spoke."""
        ...


class TextToSpeech(Protocol):
    """Speaks a sentence as PCM16, 24 kHz, mono."""

    def speak(self, text: str, voice: Voice) -> bytes:
        """The audio of `text` in `voice`."""
        ...


class EngineFailed(Exception):
    """An engine could not do its part of a turn (unavailable, timed out, refused)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
