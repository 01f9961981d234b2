"""The demo page in headless Chromium, as a person uses it: speak, hear the agent, switch
agents, interrupt.

Debian's `chromium` runs the page served by the registered functions (the voice stack:
the Web PubSub stand-in, offline speech engines, the scripted agent, turns in process).
Its fake microphone plays a WAV of the offline voice saying a phrase, so the page's real
audio path runs: getUserMedia -> AudioWorklet -> PCM16 frames -> the page's voice activity
detector -> `audio` and `commit` events under `json.webpubsub.azure.v1` -> the answer's
chunks scheduled on the AudioContext. `.ci/run` installs chromium; without it these tests
are skipped.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.realtime.engines import Voice
from shared.realtime.offline import SAMPLE_RATE, OfflineTextToSpeech
from shared.realtime.utterances import CONTAINER
from tests.kit.voice_stack import VoiceStack, voice_stack

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
PHRASE = "The birch canoe slid on the smooth planks."
WAIT_MS = 20_000  # one step of the conversation (a turn takes 1-3 s here)
# Every chunk of the answer has played (it is about 6 s long).
ANSWER_PLAYED = (
    "() => window.timbreDemo.turns.length > 0"
    " && window.timbreDemo.audioChunksPlayed === window.timbreDemo.audioChunksReceived"
)


@pytest.fixture
def stack(local_services: dict[str, str], request: pytest.FixtureRequest) -> Iterator[VoiceStack]:
    with voice_stack(
        local_services, request.node.nodeid, TIMBRE_OFFLINE_STT_PHRASES=[PHRASE]
    ) as running:
        yield running


def silence(seconds: float) -> bytes:
    return bytes(2 * round(SAMPLE_RATE * seconds))


def microphone_wav(path: Path, *, times: int = 1, pause_s: float = 0.0) -> Path:
    """What a person says into the microphone: a second of room, the phrase `times` times
    `pause_s` apart, then silence while they listen.

    16-bit PCM WAV, which Chromium's fake capture reads; it is played once (`%noloop`),
    after which the fake microphone is silent.
    """
    speech = OfflineTextToSpeech().speak(PHRASE, Voice("en-US-AndrewNeural", "en-US"))
    spoken = silence(pause_s).join([speech] * times)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(silence(1) + spoken + silence(3))
    return path


@contextmanager
def demo_page(stack: VoiceStack, wav: Path, profile: Path) -> Iterator[tuple[Any, list[str]]]:
    """The demo page open in headless Chromium, with `wav` as the microphone; yields the
    page and the script errors it reported."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),  # a fresh profile: nothing from an earlier run
            executable_path=str(CHROMIUM),
            headless=True,
            timeout=WAIT_MS,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",  # the microphone permission, granted
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
            ],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.goto(stack.base_url + "/api/v1/voice/demo")
            yield page, problems
        finally:
            browser.close()


def demo_state(page: Any) -> dict[str, Any]:
    """What the page knows (`window.timbreDemo`)."""
    state: dict[str, Any] = page.evaluate("() => JSON.parse(JSON.stringify(window.timbreDemo))")
    return state


def lead_before_speech_s(stack: VoiceStack, session_id: str, turn: int) -> float:
    """How much audio the server got before the first word of a turn's utterance: the
    first 10 ms above the page's speech threshold (-36 dBFS) in the stored utterance."""
    container = stack.runtime.blob_service.get_container_client(CONTAINER)
    names = [
        blob.name
        for blob in container.list_blobs()
        if f"/{session_id}/" in blob.name and blob.name.endswith(f"turn-{turn:06d}.pcm")
    ]
    assert len(names) == 1, names
    pcm = np.frombuffer(container.download_blob(names[0]).readall(), dtype="<i2")
    window = SAMPLE_RATE // 100
    frames = pcm[: len(pcm) // window * window].astype(np.float64).reshape(-1, window)
    loud = np.sqrt((frames**2).mean(axis=1)) > 0.015 * 32768
    assert loud.any(), "no speech reached the server"
    return float(np.argmax(loud)) * window / SAMPLE_RATE


def connect(page: Any, agent: str) -> None:
    from playwright.sync_api import expect

    # Development offers a dev token; the agents come from the API with it.
    expect(page.locator("#token")).to_have_value("dev_alice_user")
    expect(page.locator("#agent option")).to_have_count(2)
    page.select_option("#agent", agent)
    page.click("#connect")
    expect(page.locator("#status")).to_contain_text("Connected")


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium (skips without it); Playwright's assertions wait as long as a step."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)  # its default, 5 s, is about one turn
    return CHROMIUM


@pytest.mark.usefixtures("chromium")
def test_a_person_speaks_hears_the_answer_and_switches_agent(
    stack: VoiceStack, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    wav = microphone_wav(tmp_path / "microphone.wav")
    with demo_page(stack, wav, tmp_path / "profile") as (page, problems):
        connect(page, "elena")

        # The microphone says the phrase; the page commits it after the pause.
        expect(page.locator("#transcript li.user")).to_have_text([f"You: {PHRASE}"])
        answer = page.locator("#transcript li.agent")
        expect(answer).to_have_count(1)
        expect(answer).to_contain_text("Elena: This is Elena")
        expect(answer).to_contain_text(PHRASE.rstrip("."))
        page.wait_for_function(ANSWER_PLAYED)
        expect(page.locator("#latency")).to_contain_text("Whole turn")

        page.select_option("#agent", "marcus")
        expect(page.locator("#transcript li.system")).to_have_text("Now speaking with Marcus.")

        page.click("#disconnect")
        expect(page.locator("#status")).to_have_text("Disconnected.")
        state = demo_state(page)

    assert state["transcripts"] == [PHRASE]
    # The pre-roll went with the utterance: the first word reached the server whole.
    assert lead_before_speech_s(stack, state["sessionId"], 1) >= 0.2
    assert state["commits"] == 1 and state["bargeIns"] == 0
    assert state["audioChunksPlayed"] > 10  # the whole answer, not a click
    assert state["gaps"] == 0  # back to back: no stutter between chunks
    assert [turn["turn"] for turn in state["turns"]] == [1]
    assert state["switches"] == ["marcus"]
    assert state["errors"] == [] and problems == []


@pytest.mark.usefixtures("chromium")
def test_speaking_over_the_agent_stops_it_at_once(stack: VoiceStack, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # The phrase again 4 s after the first: the answer (about 6 s) starts about 1.5 s
    # after the first phrase ends, so the second lands while it plays.
    wav = microphone_wav(tmp_path / "microphone.wav", times=2, pause_s=4.0)
    with demo_page(stack, wav, tmp_path / "profile") as (page, problems):
        connect(page, "elena")
        page.wait_for_function("() => window.timbreDemo.bargeIns === 1")
        stopped = demo_state(page)
        expect(page.locator("#transcript li.agent").first).to_contain_text("(interrupted)")
        # The second utterance is heard and answered in full.
        expect(page.locator("#transcript li.user")).to_have_text([f"You: {PHRASE}"] * 2)
        page.wait_for_function(
            "() => window.timbreDemo.turns.some((t) => t.turn === 2)"
            " && window.timbreDemo.audioChunksPlayed > 0"
        )
        state = demo_state(page)

    # Silent the moment the person spoke: not one more chunk of the first answer played.
    first = state["chunks"]["1"]
    assert not stopped["playing"]
    assert 0 < first["played"] == stopped["chunks"]["1"]["played"] < first["received"]
    assert state["cancelledTurns"][0] == 1  # and the server stopped it
    assert state["transcripts"] == [PHRASE, PHRASE]
    assert state["errors"] == [] and problems == []
