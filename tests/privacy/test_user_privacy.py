"""A user's privacy requests on the whole realtime loop: the user speaks a turn through the
Web PubSub stand-in (chat items, a connection, the turn's audio), then an admin exports and
erases them; the erasure closes the user's open WebSocket through the real Web PubSub
client and the stand-in, and leaves nothing of them."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.core.orchestrations import MemoryOrchestrations
from tests.kit.host import json_body
from tests.kit.voice_stack import VoiceStack, voice_stack
from tests.privacy.test_privacy import (
    KEPT_CONTAINERS,
    KEY,
    driver_of,
    erase,
    everything_of,
    get,
    post,
)
from tests.realtime.test_loopback import PHRASE, connected, frames_of, run, wav_of

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(local_services: dict[str, str], request: pytest.FixtureRequest) -> Iterator[VoiceStack]:
    with voice_stack(
        local_services,
        request.node.nodeid,
        TIMBRE_OFFLINE_STT_PHRASES=[PHRASE],
        TIMBRE_RECEIPT_KEY=KEY,
    ) as running:
        yield running


def export_user(stack: VoiceStack, user: str) -> zipfile.ZipFile:
    gateway = MemoryOrchestrations()
    body = {"subject_type": "user", "subject_id": user}
    export_id = json_body(post("/api/v1/privacy/exports", body, gateway))["export_id"]
    assert driver_of(gateway, export_id).run().output["state"] == "completed"
    view = get(f"/api/v1/privacy/exports/{export_id}")
    with urllib.request.urlopen(view["download_url"], timeout=10) as download:
        return zipfile.ZipFile(io.BytesIO(download.read()))


def test_a_user_who_spoke_is_exported_then_erased_and_their_connection_closed(
    stack: VoiceStack, tmp_path: Path
) -> None:
    frames = frames_of(wav_of(PHRASE, tmp_path / "phrase.wav"))
    found: dict[str, Any] = {}

    async def scenario() -> None:
        session, client = await connected(stack, agent_id="elena")
        async with session, client.ws:
            await client.speak(frames)
            await client.until("turn", turn=1)
            assert stack.turns_idle()
            package = await asyncio.to_thread(export_user, stack, "alice")
            found["files"] = package.namelist()
            found["turn"] = [
                json.loads(package.read(name))
                for name in package.namelist()
                if name.startswith("cosmos/chat/") and ".t000001" in name
            ]
            found["before"] = await asyncio.to_thread(everything_of, stack.runtime, ["alice"])
            view, result = await asyncio.to_thread(erase, "user", "alice")
            found["view"], found["result"] = view, result
            async with asyncio.timeout(10):  # the stand-in closes the socket
                while True:
                    frame = await client.ws.receive()
                    if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break

    run(scenario())

    files = found["files"]
    assert any(name.startswith("cosmos/realtime/") for name in files)
    assert any(name.startswith("blobs/realtime-audio/") for name in files)
    (turn,) = found["turn"]
    assert turn["message"] == PHRASE and turn["userId"] == "alice"
    assert {"cosmos:chat", "cosmos:realtime"} <= set(found["before"])
    assert found["result"].output["state"] == "completed"
    receipt = found["view"]["receipt"]
    lines = {line["store"]: line for line in receipt["stores"]}
    assert lines["webpubsub:connection"]["removed"] == 1
    assert lines["blob:realtime-audio"]["removed"] >= 1
    assert lines["blob:exports"]["removed"] == 1  # the package made above
    assert receipt["complete"] is True
    sessions = {name.split("/")[3] for name in files if name.startswith("blobs/realtime-audio/")}
    left = everything_of(stack.runtime, ["alice", *sessions])
    assert set(left) <= {f"cosmos:{name}" for name in KEPT_CONTAINERS}, left
