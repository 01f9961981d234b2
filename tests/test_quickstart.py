"""README's quickstart, step by step, as a newcomer runs it (the host imitated in process).

The uploads go over plain HTTP to the SAS URLs Timbre hands out, with the headers the
README shows; the blob trigger is delivered as the host delivers it. Step 5 speaks through
stand-in providers, since Speech and Azure OpenAI are not reachable here.
"""

from __future__ import annotations

import io
import zipfile
from types import SimpleNamespace

import httpx
import pytest
from azure.functions.timer import TimerRequest
from pydantic import SecretStr

from functions import privacy
from shared.chat.facts import ExtractedFacts, FactCandidate
from shared.config import DEVELOPMENT_RECEIPT_KEY, Settings
from shared.core.orchestrations import MemoryOrchestrations
from shared.runtime import Runtime, use_runtime
from tests.kit.audio import speech, wav
from tests.kit.durable import OrchestrationDriver, activities_of
from tests.kit.fakes.language_model import ScriptedModel
from tests.kit.fakes.speech import ScriptedProviders
from tests.kit.host import indexed, json_body, request
from tests.kit.triggers import deliver_upload, drain_queue

pytestmark = pytest.mark.integration
AUTH = "dev_alice_analyst"
FINANCE = FactCandidate(
    subject="user", predicate="works in", value="finance at Contoso", confidence=0.9, turns=[1]
)


def upload(urls: dict[str, object], data: bytes, content_type: str) -> httpx.Response:
    url = urls["urls"][0]["url"]  # type: ignore[index]
    return httpx.put(
        url,
        content=data,
        headers={"x-ms-blob-type": "BlockBlob", "Content-Type": content_type},
        timeout=10,
    )


def test_the_quickstart_from_enrolling_a_voice_to_erasing_it(
    live_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    providers = ScriptedProviders()
    model = ScriptedModel(facts=lambda _: ExtractedFacts(facts=[FINANCE]))
    # The example settings' development receipt key, as `scripts/run` has it.
    settings = live_settings.model_copy(update={"receipt_key": SecretStr(DEVELOPMENT_RECEIPT_KEY)})
    runtime = Runtime(settings, speech_providers=providers, chat_model=model)
    runtime.bootstrap()
    use_runtime(runtime)
    connection = live_settings.storage_connection_string or ""

    # 1. Enroll a voice talent.
    created = request(
        "POST",
        "/api/v1/voices",
        body={
            "talent_name": "Jane Doe",
            "company_name": "Contoso",
            "locale": "en-US",
            "data_region": "EU",
        },
        token=AUTH,
    )
    assert created.status_code == 201
    voice = json_body(created)["id"]
    assert "Jane Doe" in json_body(created)["consent"]["statement"]

    # 2. Upload URLs, then PUT the recording and the transcript over plain HTTP.
    urls = json_body(
        request(
            "POST",
            f"/api/v1/voices/{voice}/uploads",
            body={"kind": "samples", "files": ["utt-0001.wav"]},
            token=AUTH,
        )
    )
    assert upload(urls, wav(speech(seconds=3)), "audio/wav").status_code == 201
    script = b"utt-0001\tThe birch canoe slid on the smooth planks.\n"
    urls = json_body(
        request(
            "POST",
            f"/api/v1/voices/{voice}/uploads",
            body={"kind": "transcripts", "files": ["script.txt"]},
            token=AUTH,
        )
    )
    assert upload(urls, script, "text/plain").status_code == 201
    tenant = "dev-tenant"
    for blob in (
        f"{tenant}/{voice}/samples/utt-0001.wav",
        f"{tenant}/{voice}/transcripts/script.txt",
    ):
        deliver_upload(connection, blob, monkeypatch)

    # 3. The quality report of the recording, with its transcript.
    recordings = json_body(request("GET", f"/api/v1/voices/{voice}/recordings", token=AUTH))
    [report] = recordings["items"]
    assert report["verdict"] == "accepted", report
    assert report["transcript"] == "The birch canoe slid on the smooth planks."

    # 4. The dataset: one accepted utterance, far from the training minimum.
    dataset = json_body(request("GET", f"/api/v1/voices/{voice}/dataset", token=AUTH))
    assert dataset["accepted"] == 1
    assert dataset["meets_minimum"] is False

    # 5. A stock voice speaks (here a stand-in for Azure Speech).
    spoken = request(
        "POST",
        "/api/v1/synthesize",
        body={"text": "Hello from Timbre.", "voice": "en-US-JennyNeural", "format": "mp3"},
        token=AUTH,
    )
    assert spoken.status_code == 200
    assert spoken.headers["Content-Type"] == "audio/mpeg"
    assert spoken.headers["X-Timbre-Voice"] == "en-US-JennyNeural"
    assert len(spoken.get_body()) > 0

    # 6. Elena answers, Marcus takes the session over, and the facts are there once the
    # follow-up queue has been served (here the stand-in model; in Azure, Azure OpenAI).
    first = json_body(
        request(
            "POST",
            "/api/v1/chat",
            body={"message": "I run finance at Contoso and we are replacing our CRM."},
            token=AUTH,
        )
    )
    assert first["agent"]["name"] == "Elena"
    handed = request(
        "POST",
        "/api/v1/chat",
        body={
            "message": "Marcus, plan it.",
            "session_id": first["session_id"],
            "agent_id": "marcus",
        },
        token=AUTH,
    )
    assert json_body(handed)["agent"]["name"] == "Marcus"
    drain_queue("chat-followups")
    facts = json_body(request("GET", "/api/v1/chat/facts", token=AUTH))["items"]
    assert [(f["subject"], f["predicate"], f["value"]) for f in facts] == [
        ("user", "works in", "finance at Contoso")
    ]

    # 7. An admin exports what Timbre holds about the voice, then erases it; the
    # orchestrations run on the Durable SDK's replay engine (the host runs them in Azure).
    admin = "dev_alice_admin"
    subject = {"subject_type": "voice", "subject_id": voice}
    gateway = MemoryOrchestrations()
    export = json_body(request("POST", "/api/v1/privacy/exports", body=subject, token=admin,
                               orchestrations=gateway))  # fmt: skip
    durable(gateway, export["export_id"]).run()
    exported = json_body(
        request("GET", f"/api/v1/privacy/exports/{export['export_id']}", token=admin)
    )
    package = zipfile.ZipFile(io.BytesIO(httpx.get(exported["download_url"], timeout=10).content))
    assert f"blobs/uploads/dev-tenant/{voice}/samples/utt-0001.wav" in package.namelist()
    erasure = json_body(request("POST", "/api/v1/privacy/erasures", body=subject, token=admin,
                                orchestrations=gateway))  # fmt: skip
    durable(gateway, erasure["erasure_id"]).run()
    erased = json_body(
        request("GET", f"/api/v1/privacy/erasures/{erasure['erasure_id']}", token=admin)
    )
    assert erased["state"] == "completed" and erased["receipt"]["complete"] is True
    assert request("GET", f"/api/v1/voices/{voice}", token=AUTH).status_code == 404

    # 8. The platform watches itself: the probe timer (every minute under `func start`),
    # then the uptime of each dependency, and the open alerts (none: nothing is down).
    indexed()["health_probes"].call(
        timer=TimerRequest(), context=SimpleNamespace(invocation_id="q8")
    )
    uptime = json_body(request("GET", "/api/v1/health/uptime", token=admin))
    seen = {d["dependency"]: (d["last_status"], d["last_24h"]["availability"])
            for d in uptime["dependencies"]}  # fmt: skip
    assert seen["storage"] == seen["cosmos"] == seen["app"] == ("up", 1.0)
    assert json_body(request("GET", "/api/v1/alerts?state=open", token=admin))["items"] == []


def durable(gateway: MemoryOrchestrations, instance: str) -> OrchestrationDriver:
    """The instance a request started, on the replay engine."""
    orchestrator = {
        "privacy_export_orchestrator": privacy.privacy_export_orchestrator,
        "privacy_erasure_orchestrator": privacy.privacy_erasure_orchestrator,
    }[gateway.names[instance]]
    return OrchestrationDriver(
        orchestrator,
        activities_of(privacy.bp),
        input=gateway.started[instance],
        instance_id=instance,
    )
