"""The Custom Voice client against the fake service, through an httpx transport."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from shared.training.custom_voice import (
    API_VERSION,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    BlobSource,
    Consent,
    CustomVoiceClient,
    CustomVoiceConflict,
    CustomVoiceDenied,
    CustomVoiceError,
    CustomVoiceNotFound,
    CustomVoiceRejected,
    CustomVoiceThrottled,
    CustomVoiceUnavailable,
    Model,
    Operation,
    RetryPolicy,
    TrainingSet,
    key_auth,
    operation_id_for,
    redact,
    token_auth,
)
from tests.kit.fakes.custom_voice import BASE_URL, FAKE_KEY, FAKE_TOKEN, FakeCustomVoice

SIGNATURE = "s3cr3tS1gnatureXYZ%2Bab%3D"
SAS = f"sv=2024-05-04&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=rl&sig={SIGNATURE}"
CONSENT_URL = f"https://acct.blob.core.windows.net/voices/t1/v1/consent.wav?{SAS}"
CONTAINER_URL = f"https://acct.blob.core.windows.net/voices?{SAS}"
ENDPOINT_ID = "9f50c644-2121-40e9-9ea7-544e48bfe3cb"


@pytest.fixture
def fake() -> FakeCustomVoice:
    return FakeCustomVoice()


@pytest.fixture
def cv(fake: FakeCustomVoice) -> CustomVoiceClient:
    return fake.custom_voice_client()


def wait(read: Callable[[], Any], limit: int = 20) -> Any:
    """Poll until the resource or operation reaches a terminal status."""
    for _ in range(limit):
        current = read()
        if current.status in ("Succeeded", "Failed"):
            return current
    raise AssertionError("never finished")


def consent(cv: CustomVoiceClient, consent_id: str = "consent1", url: str = CONSENT_URL) -> Consent:
    return cv.create_consent(
        consent_id,
        "proj1",
        talent_name="Ada Lovelace",
        company_name="Contoso",
        locale="en-US",
        audio_url=url,
    )


def sources(prefix: str = "t1/v1/") -> tuple[BlobSource, BlobSource]:
    return (
        BlobSource(CONTAINER_URL, prefix + "wav/", (".wav",)),
        BlobSource(CONTAINER_URL, prefix + "script/", (".txt",)),
    )


def trained_set(cv: CustomVoiceClient, set_id: str = "set1") -> TrainingSet:
    cv.create_training_set(set_id, "proj1", "en-US", "300 utterances")
    audios, scripts = sources()
    operation = cv.upload_training_set(set_id, audios, scripts)
    assert wait(lambda: cv.get_operation(operation.url or "")).status == "Succeeded"
    return cv.get_training_set(set_id)


def ready_for_model(cv: CustomVoiceClient) -> None:
    cv.create_project("proj1", "Ada")
    wait(lambda: cv.get_consent(consent(cv).id))
    trained_set(cv)


def trained_model(cv: CustomVoiceClient) -> Model:
    ready_for_model(cv)
    cv.create_model(
        "model1", "proj1", consent_id="consent1", training_set_id="set1", voice_name="AdaNeural"
    )
    model: Model = wait(lambda: cv.get_model("model1"))
    return model


# ---------------------------------------------------------------------------- lifecycles


def test_project_lifecycle(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    created = cv.create_project("proj1", "Ada's voice")
    assert (created.id, created.kind, created.description) == (
        "proj1",
        "ProfessionalVoice",
        "Ada's voice",
    )
    assert cv.get_project("proj1") == created
    put = fake.requests_to("PUT", "projects/proj1")[0]
    assert put.body == {"kind": "ProfessionalVoice", "description": "Ada's voice"}
    assert put.query == {"api-version": API_VERSION}
    assert put.auth == "key"
    assert cv.delete_project("proj1") is True
    with pytest.raises(CustomVoiceNotFound) as missing:
        cv.get_project("proj1")
    assert missing.value.status == 404
    assert missing.value.code == "NotFound"


def test_consent_lifecycle_reports_an_operation(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    created = consent(cv)
    assert created.status == "NotStarted"
    assert created.operation is not None
    assert created.operation.id == operation_id_for("consent", "consent1")
    assert created.operation.url == (
        f"{BASE_URL}operations/{created.operation.id}?api-version={API_VERSION}"
    )
    put = fake.requests_to("PUT", "consents/consent1")[0]
    assert put.operation_id == created.operation.id
    assert put.body["voiceTalentName"] == "Ada Lovelace"
    assert put.body["audioUrl"].endswith("sig=REDACTED")  # the fake never stores the signature

    assert cv.get_consent("consent1").status == "Running"
    assert cv.get_consent("consent1").status == "Succeeded"
    assert cv.get_operation(created.operation.url or "").status == "Succeeded"
    assert cv.get_operation(created.operation.id).status == "Succeeded"
    assert cv.delete_consent("consent1") is True
    assert fake.status_of("consents", "consent1") is None


def test_consent_verification_failure_is_reported(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    fake.consent_fails("AudioAndScriptNotMatch")
    done = wait(lambda: cv.get_consent(consent(cv).id))
    assert done.status == "Failed"
    assert done.failure_reason == "AudioAndScriptNotMatch"


def test_training_set_lifecycle(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    cv.create_project("proj1")
    created = cv.create_training_set(
        "set1", "proj1", "en-US", "300 utterances", voice_kind="Female"
    )
    assert (created.status, created.locale, created.voice_kind) == ("Succeeded", "en-US", "Female")
    audios, scripts = sources()
    operation = cv.upload_training_set("set1", audios, scripts)
    assert operation.status == "NotStarted"
    upload = fake.requests_to("POST", "trainingsets/set1:upload")[0]
    assert upload.body["kind"] == "AudioAndScript"
    assert upload.body["audios"]["prefix"] == "t1/v1/wav/"
    assert upload.body["scripts"]["extensions"] == [".txt"]
    assert upload.operation_id == operation.id
    assert fake.status_of("trainingsets", "set1") == "NotStarted"  # processing again
    assert cv.get_training_set("set1").status == "Running"  # each poll moves the fake on

    done = wait(lambda: cv.get_operation(operation.url or ""))
    assert done.status == "Succeeded"
    assert done.reasons == ()
    ready = cv.get_training_set("set1")
    assert (ready.status, ready.utterance_count) == ("Succeeded", 300)
    assert cv.delete_training_set("set1") is True


def test_model_lifecycle(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    ready_for_model(cv)
    fake.model_training_steps(5)
    created = cv.create_model(
        "model1", "proj1", consent_id="consent1", training_set_id="set1", voice_name="AdaNeural"
    )
    assert created.status == "NotStarted"
    assert created.operation is not None
    assert created.operation.id == operation_id_for("model", "model1")
    assert (created.recipe_kind, created.locale) == ("Default", "en-US")
    polls = [cv.get_model("model1").status for _ in range(5)]
    assert polls == ["Running", "Running", "Running", "Running", "Succeeded"]
    assert fake.requests_to("PUT", "models/model1")[0].body["recipe"] == {"kind": "Default"}
    assert cv.delete_model("model1") is True


def test_model_failure_carries_the_reason(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    ready_for_model(cv)
    fake.model_fails("SpeakerVerificationFailed")
    created = cv.create_model(
        "model1", "proj1", consent_id="consent1", training_set_id="set1", voice_name="AdaNeural"
    )
    done = wait(lambda: cv.get_model("model1"))
    assert (done.status, done.failure_reason) == ("Failed", "SpeakerVerificationFailed")
    assert created.operation is not None
    assert cv.get_operation(created.operation.id).status == "Failed"


def test_endpoint_lifecycle(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    trained_model(cv)
    created = cv.create_endpoint(ENDPOINT_ID.upper(), "proj1", "model1")
    assert created.id == ENDPOINT_ID
    assert created.operation is not None
    assert created.operation.id == operation_id_for("endpoint", ENDPOINT_ID)
    done = wait(lambda: cv.get_endpoint(ENDPOINT_ID))
    assert (done.status, done.model_id, done.kind) == ("Succeeded", "model1", "HighPerformance")
    assert cv.delete_endpoint(ENDPOINT_ID) is True
    assert fake.status_of("endpoints", ENDPOINT_ID) is None


def test_deployment_failure(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    trained_model(cv)
    fake.deployment_fails("No capacity in region.")
    created = cv.create_endpoint(ENDPOINT_ID, "proj1", "model1")
    assert wait(lambda: cv.get_endpoint(ENDPOINT_ID)).status == "Failed"
    assert created.operation is not None
    assert cv.get_operation(created.operation.id).reasons == ("No capacity in region.",)


def test_resources_are_json_ready_for_durable_activities(cv: CustomVoiceClient) -> None:
    model = trained_model(cv)
    assert json.loads(json.dumps(model.to_dict()))["voice_name"] == "AdaNeural"
    assert cv.get_operation(operation_id_for("model", "model1")).to_dict()["status"] == "Succeeded"


def test_the_services_json_is_read_tolerantly() -> None:
    model = Model.from_wire(
        {
            "id": "model1",
            "projectId": "proj1",
            "consentId": 7,  # wrong type: read as absent
            "trainingSetId": "set1",
            "voiceName": "AdaNeural",
            "recipe": {"kind": "Default", "version": "V7"},
            "properties": {"failureReason": "SpeakerVerificationFailed", "voiceStyles": []},
            "status": None,
            "futureField": {"anything": True},  # unknown: ignored
            "operation": {"id": "not-from-the-service"},  # the client's own attribute
        }
    )
    assert (model.consent_id, model.recipe_kind, model.recipe_version) == ("", "Default", "V7")
    assert (model.status, model.failure_reason, model.operation) == (
        "NotStarted",
        "SpeakerVerificationFailed",
        None,
    )
    training_set = TrainingSet.from_wire({"properties": "odd", "locale": "en-US"})
    assert (training_set.utterance_count, training_set.status) == (None, "NotStarted")
    operation = Operation.from_wire(
        {"id": "op1", "status": "Failed", "error": {"message": "sig=abc", "details": [1, {}]}},
        url="https://x.example/customvoice/operations/op1",
    )
    assert operation.error is not None
    assert (operation.error.message, len(operation.error.details)) == ("sig=REDACTED", 1)
    assert operation.url == "https://x.example/customvoice/operations/op1"
    assert Operation.from_wire({"id": "op1", "error": "boom"}).error is None


# ---------------------------------------------------------------------------- retries


def test_429_honours_retry_after_seconds(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    fake.fail_next(2, status=429, retry_after=3)
    assert cv.create_project("proj1").id == "proj1"
    assert fake.sleeps == [3.0, 3.0]
    assert len(fake.requests_to("PUT", "projects/proj1")) == 3


def test_429_honours_retry_after_http_date(fake: FakeCustomVoice) -> None:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    cv = fake.custom_voice_client(clock=lambda: now)
    fake.fail_next(
        1, status=429, retry_after=format_datetime(now + timedelta(seconds=7), usegmt=True)
    )
    cv.create_project("proj1")
    assert fake.sleeps == [7.0]


def test_5xx_then_success_backs_off_exponentially(fake: FakeCustomVoice) -> None:
    jitters = iter([0.0, 1.0])
    cv = fake.custom_voice_client(
        retry=RetryPolicy(max_attempts=3, base_delay=2.0, max_delay=20.0),
        jitter=lambda: next(jitters),
    )
    fake.fail_next(1, status=500)
    fake.fail_next(1, status=503)
    assert cv.create_project("proj1").kind == "ProfessionalVoice"
    # retry 1: ceiling 2 s, jitter 0 -> 1 s; retry 2: ceiling 4 s, jitter 1 -> 4 s
    assert fake.sleeps == [1.0, 4.0]


def test_throttled_after_retries(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    fake.fail_next(10, status=429, retry_after=1)
    with pytest.raises(CustomVoiceThrottled) as caught:
        cv.get_project("proj1")
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429,
        "TooManyRequests",
        1.0,
    )
    assert len(fake.requests) == 4
    assert fake.sleeps == [1.0, 1.0, 1.0]


def test_retry_after_beyond_the_cap_is_left_to_the_caller(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    fake.fail_next(1, status=429, retry_after=3600)
    with pytest.raises(CustomVoiceThrottled) as caught:
        cv.get_project("proj1")
    assert caught.value.retry_after == 3600.0
    assert fake.sleeps == []
    assert len(fake.requests) == 1


def test_service_unavailable_after_retries(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    fake.fail_next(4, status=503)
    with pytest.raises(CustomVoiceUnavailable) as caught:
        cv.delete_model("model1")
    assert caught.value.status == 503
    assert len(fake.sleeps) == 3


def test_timeouts_become_service_unavailable(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    fake.timeout_next(4)
    with pytest.raises(CustomVoiceUnavailable) as caught:
        cv.get_project("proj1")
    assert caught.value.code == "ReadTimeout"
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(fake.requests) == 4


def test_a_timeout_then_success_is_retried(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    cv.create_project("proj1")
    fake.timeout_next(1)
    assert cv.get_project("proj1").id == "proj1"


def test_every_attempt_is_bounded_by_the_timeout() -> None:
    seen: list[dict[str, float | None]] = []

    def hang(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        raise httpx.ReadTimeout("slow", request=request)

    cv = CustomVoiceClient(
        BASE_URL,
        key_auth(FAKE_KEY),
        http=httpx.Client(transport=httpx.MockTransport(hang)),
        timeout_s=3.0,
        connect_timeout_s=1.0,
        retry=RetryPolicy(max_attempts=2),
        sleep=lambda _: None,
    )
    with pytest.raises(CustomVoiceUnavailable):
        cv.get_model("model1")
    assert seen == [{"connect": 1.0, "read": 3.0, "write": 3.0, "pool": 3.0}] * 2


def test_client_errors_are_not_retried(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    with pytest.raises(CustomVoiceRejected) as caught:
        cv.create_training_set("set1", "nope", "en-US")
    assert caught.value.target == "projectId"
    assert fake.sleeps == []


# ---------------------------------------------------------------------------- idempotency


def test_a_retried_create_keeps_its_operation_id(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    fake.fail_next(1, status=500, method="PUT", path_contains="consents/")
    created = consent(cv)
    puts = fake.requests_to("PUT", "consents/consent1")
    assert len(puts) == 2
    assert puts[0].operation_id == puts[1].operation_id == operation_id_for("consent", "consent1")
    assert created.operation is not None
    assert list(fake.operations) == [created.operation.id]


def test_a_duplicate_create_is_a_no_op(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    cv.create_project("proj1")
    first = consent(cv)
    again = consent(cv)
    assert again.id == first.id
    assert again.operation == first.operation
    assert len(fake.resources["consents"]) == 1
    assert len(fake.operations) == 1
    assert cv.create_project("proj1").id == "proj1"  # reconciled: the fake answered 400 "exists"


def test_a_duplicate_create_with_a_fresh_sas_is_reconciled(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    consent(cv)
    again = consent(cv, url=CONSENT_URL.replace(SIGNATURE, "another"))
    assert again.id == "consent1"
    assert again.operation is None  # the service refused the replay; the resource is ours
    assert len(fake.operations) == 1


@pytest.mark.parametrize("status", [400, 409])
def test_an_id_taken_by_another_definition_is_a_conflict(status: int) -> None:
    fake = FakeCustomVoice(duplicate_create_status=status)
    cv = fake.custom_voice_client()
    cv.create_project("proj1")
    cv.create_training_set("set1", "proj1", "en-US")
    assert cv.create_training_set("set1", "proj1", "en-US").id == "set1"
    with pytest.raises(CustomVoiceConflict) as caught:
        cv.create_training_set("set1", "proj1", "fr-FR")
    assert caught.value.status == status


def test_a_retried_upload_is_recognised(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    cv.create_project("proj1")
    cv.create_training_set("set1", "proj1", "en-US")
    audios, scripts = sources()
    first = cv.upload_training_set("set1", audios, scripts)
    resigned = BlobSource(CONTAINER_URL.replace(SIGNATURE, "rotated"), audios.prefix, (".wav",))
    again = cv.upload_training_set("set1", resigned, scripts)
    assert again.id == first.id
    assert len(fake.operations) == 1
    newer = cv.upload_training_set("set1", *sources("t1/v2/"))
    assert newer.id != first.id


# ---------------------------------------------------------------------------- errors


def test_validation_failure_reasons_are_surfaced(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    cv.create_training_set("set1", "proj1", "en-US")
    reasons = ["0007.wav: SNR below 20 dB", "0042.wav: longer than 30 s"]
    fake.training_set_validation_fails(reasons)
    operation = cv.upload_training_set("set1", *sources())
    done = wait(lambda: cv.get_operation(operation.id))
    assert done.status == "Failed"
    assert done.reasons == tuple(reasons)
    assert done.error is not None
    assert done.error.message == "Training set validation failed."
    assert cv.get_training_set("set1").status == "Failed"


def test_a_model_on_unvalidated_data_is_refused_with_the_services_reason(
    cv: CustomVoiceClient,
) -> None:
    cv.create_project("proj1")
    wait(lambda: cv.get_consent(consent(cv).id))
    cv.create_training_set("set1", "proj1", "en-US")
    with pytest.raises(CustomVoiceRejected) as caught:
        cv.create_model(
            "model1", "proj1", consent_id="consent1", training_set_id="set1", voice_name="AdaNeural"
        )
    assert caught.value.status == 400
    assert caught.value.target == "trainingSetId"
    assert "no validated data" in caught.value.reasons[0]


def test_voice_name_must_end_with_neural(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    for bad in ("Ada", "AdaNeuralVoice", "Neural", "Ada Neural", "../Neural"):
        with pytest.raises(CustomVoiceRejected) as caught:
            cv.create_model(
                "model1", "proj1", consent_id="consent1", training_set_id="set1", voice_name=bad
            )
        assert caught.value.target == "voiceName"
    assert fake.requests == []


def test_ids_are_checked_before_they_reach_a_url(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    for call in (
        lambda: cv.get_project("../consents/x"),
        lambda: cv.get_consent("a"),
        lambda: cv.delete_endpoint("not-a-uuid"),
        lambda: cv.get_operation("https://evil.example/steal"),
    ):
        with pytest.raises(CustomVoiceRejected):
            call()
    assert fake.requests == []


def test_operation_urls_never_carry_credentials_elsewhere(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    operation = consent(cv).operation
    assert operation is not None
    foreign = f"https://attacker.example/customvoice/operations/{operation.id}"
    assert cv.get_operation(foreign).id == operation.id
    assert all(r.path.startswith(("projects/", "consents/", "operations/")) for r in fake.requests)
    assert fake.requests[-1].path == f"operations/{operation.id}"


def test_wrong_api_version_is_rejected(fake: FakeCustomVoice) -> None:
    cv = fake.custom_voice_client(api_version="2023-04-01-preview")
    with pytest.raises(CustomVoiceRejected) as caught:
        cv.get_project("proj1")
    assert "api-version" in caught.value.message


def test_missing_required_fields_get_the_services_400(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    with pytest.raises(CustomVoiceRejected) as caught:
        cv.create_consent(
            "consent1",
            "proj1",
            talent_name="",
            company_name="Contoso",
            locale="en-US",
            audio_url=CONSENT_URL,
        )
    assert caught.value.target == "voiceTalentName"
    assert caught.value.code == "BadArgument"


def test_deleting_a_missing_resource_succeeds(cv: CustomVoiceClient) -> None:
    assert cv.delete_project("proj404") is False
    assert cv.delete_consent("consent404") is False
    assert cv.delete_training_set("set404") is False
    assert cv.delete_model("model404") is False
    assert cv.delete_endpoint(ENDPOINT_ID) is False


def test_compensation_in_reverse_order_and_project_delete_rules(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    trained_model(cv)
    cv.create_endpoint(ENDPOINT_ID, "proj1", "model1")
    with pytest.raises(CustomVoiceRejected):
        cv.delete_project("proj1")
    with pytest.raises(CustomVoiceRejected):
        cv.delete_model("model1")  # still deployed
    for delete, resource_id in (
        (cv.delete_endpoint, ENDPOINT_ID),
        (cv.delete_model, "model1"),
        (cv.delete_training_set, "set1"),
        (cv.delete_consent, "consent1"),
        (cv.delete_project, "proj1"),
    ):
        assert delete(resource_id) is True
    assert all(not store for store in fake.resources.values())


def test_force_deleting_a_project_takes_its_children(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    trained_model(cv)
    assert cv.delete_project("proj1", force=True) is True
    assert all(not store for store in fake.resources.values())


# ---------------------------------------------------------------------------- auth and secrets


def test_token_auth_sends_a_fresh_bearer_token_per_request(fake: FakeCustomVoice) -> None:
    calls: list[int] = []

    def get_token() -> str:
        calls.append(1)
        return FAKE_TOKEN

    cv = fake.custom_voice_client(auth=token_auth(get_token))
    cv.create_project("proj1")
    cv.get_project("proj1")
    assert len(calls) == 2
    assert {r.auth for r in fake.requests} == {"bearer"}
    assert all("authorization" not in r.headers for r in fake.requests)


def test_a_rejected_key_is_access_denied_without_retry(fake: FakeCustomVoice) -> None:
    cv = fake.custom_voice_client(auth=key_auth("wrong"))
    with pytest.raises(CustomVoiceDenied) as caught:
        cv.get_project("proj1")
    assert caught.value.status == 401
    assert len(fake.requests) == 1


def test_keys_tokens_and_sas_signatures_never_reach_the_logs(
    fake: FakeCustomVoice, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cv = fake.custom_voice_client(auth=token_auth(lambda: FAKE_TOKEN))
    cv.create_project("proj1")
    fake.fail_next(1, status=500)
    consent(cv)
    fake.timeout_next(1)
    cv.create_training_set("set1", "proj1", "en-US")
    fake.fail_next(1, status=503)
    cv.upload_training_set("set1", *sources())
    with pytest.raises(CustomVoiceRejected) as caught:  # the fake quotes the URL it was given
        consent(cv, consent_id="consent2", url=f"ftp://acct/consent.wav?{SAS}")
    assert SIGNATURE not in str(caught.value)
    assert "sig=REDACTED" in str(caught.value)
    try:
        raise caught.value
    except CustomVoiceRejected:
        logging.getLogger("tests").exception("consent rejected")

    assert caplog.records, "the client should log its calls"
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    for record in caplog.records:
        rendered = record.getMessage() + repr(record.__dict__)
        if record.exc_info:
            rendered += logging.Formatter().formatException(record.exc_info)
        for secret in (SIGNATURE, FAKE_KEY, FAKE_TOKEN):
            assert secret not in rendered


def test_redact_removes_every_signature() -> None:
    text = f"a {CONSENT_URL} and {CONTAINER_URL}&x=1 'sig=abc'"
    cleaned = redact(text)
    assert SIGNATURE not in cleaned
    assert "sig=abc" not in cleaned
    assert cleaned.count("sig=REDACTED") == 3


def test_errors_keep_the_service_body(fake: FakeCustomVoice, cv: CustomVoiceClient) -> None:
    with pytest.raises(CustomVoiceError) as caught:
        cv.get_model("model404")
    error = caught.value
    assert isinstance(error, CustomVoiceNotFound)
    assert (error.status, error.code) == (404, "NotFound")
    assert error.message == "The model 'model404' was not found."
    assert error.request_id


def test_the_base_url_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        CustomVoiceClient("http://eastus.api.cognitive.microsoft.com/customvoice/", key_auth("k"))
    loopback = CustomVoiceClient("http://127.0.0.1:7071/customvoice", key_auth("k"))
    loopback.close()


def test_timeouts_are_constructor_parameters() -> None:
    assert (DEFAULT_TIMEOUT_S, DEFAULT_CONNECT_TIMEOUT_S) == (30.0, 5.0)
    with pytest.raises(ValueError, match="timeouts"):
        CustomVoiceClient(BASE_URL, key_auth("k"), timeout_s=0.0)
    with pytest.raises(ValueError, match="timeouts"):
        CustomVoiceClient(BASE_URL, key_auth("k"), connect_timeout_s=-1.0)


def test_the_fake_records_requests_without_secrets(
    fake: FakeCustomVoice, cv: CustomVoiceClient
) -> None:
    cv.create_project("proj1")
    consent(cv)
    blob = json.dumps([r.body for r in fake.requests]) + json.dumps(
        [r.headers for r in fake.requests]
    )
    assert SIGNATURE not in blob
    assert FAKE_KEY not in blob
