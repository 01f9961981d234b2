"""The Translator adapter through the real SDK client against the v3 wire format.

A `requests` adapter mounted on the session of azure-core's `RequestsTransport` plays the
service: every request goes through the SDK's real pipeline (auth, retry, timeouts,
serialization), and replies are the documented Translator v3 bodies.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken

from shared.core.errors import DependencyUnavailable, InvalidRequest, Throttled
from shared.translation import (
    AzureTranslator,
    Detection,
    TranslatedText,
    Translation,
    TranslationLimits,
)
from tests.kit.fakes.translator import FakeTranslatorService, Reply, transport_for

GLOBAL = "https://api.cognitive.microsofttranslator.com"
CUSTOM = "https://timbre-tr.cognitiveservices.azure.com"
KEY = "translator-key-0123456789"
SECRET_TEXT = "Mein geheimer Satz über Frau Schmidt"


def key_translator(service: FakeTranslatorService, **options: Any) -> AzureTranslator:
    """A key + region translator on the global endpoint, no backoff."""
    options.setdefault("retry_backoff_s", 0)
    return AzureTranslator(
        GLOBAL, key=KEY, region="westeurope", transport=transport_for(service), **options
    )


class FakeCredential:
    """A TokenCredential that records the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        """A fixed token valid for an hour."""
        self.scopes.append(scopes)
        return AccessToken("entra-token", int(time.time()) + 3600)


def translated(*items: dict[str, Any]) -> Reply:
    """A documented 200 answer of /translate."""
    return Reply(body=list(items))


# --- translate ------------------------------------------------------------------------


def test_translate_without_source_sends_v3_request_and_reads_detected_language() -> None:
    service = FakeTranslatorService(
        translated(
            {
                "detectedLanguage": {"language": "en", "score": 1.0},
                "translations": [{"text": "Hallo", "to": "de"}, {"text": "Bonjour", "to": "fr"}],
            },
            {
                "detectedLanguage": {"language": "en", "score": 0.87},
                "translations": [{"text": "Welt", "to": "de"}, {"text": "Monde", "to": "fr"}],
            },
        )
    )
    translator = key_translator(service, timeout_s=4.0, connect_timeout_s=2.0)

    result = translator.translate(["Hello", "World"], ["de", "fr"])

    assert result == [
        Translation(
            index=0,
            detected_language="en",
            detection_score=1.0,
            translations=[
                TranslatedText(to="de", text="Hallo"),
                TranslatedText(to="fr", text="Bonjour"),
            ],
        ),
        Translation(
            index=1,
            detected_language="en",
            detection_score=0.87,
            translations=[
                TranslatedText(to="de", text="Welt"),
                TranslatedText(to="fr", text="Monde"),
            ],
        ),
    ]
    [sent] = service.seen
    assert sent.method == "POST"
    assert sent.path == "/translate"
    assert sent.query["api-version"] == ["3.0"]
    assert sent.query["to"] == ["de", "fr"]
    assert "from" not in sent.query
    assert sent.query["profanityAction"] == ["NoAction"]
    assert sent.query["textType"] == ["Plain"]
    assert sent.body == [{"text": "Hello"}, {"text": "World"}]
    assert sent.headers["Ocp-Apim-Subscription-Key"] == KEY
    assert sent.headers["Ocp-Apim-Subscription-Region"] == "westeurope"
    assert sent.timeout == (2.0, 4.0)  # (connect, read) on every call


def test_translate_with_source_sends_from_profanity_and_text_type() -> None:
    service = FakeTranslatorService(
        translated({"translations": [{"text": "<b>Hallo</b>", "to": "de"}]})
    )

    [result] = key_translator(service).translate(
        ["<b>Hello</b>"], ["de"], source="en", profanity="marked", text_type="html"
    )

    assert result.detected_language is None
    assert result.detection_score is None
    assert result.translations == [TranslatedText(to="de", text="<b>Hallo</b>")]
    [sent] = service.seen
    assert sent.query["from"] == ["en"]
    assert sent.query["profanityAction"] == ["Marked"]
    assert sent.query["textType"] == ["Html"]


def test_profanity_deleted_is_sent_as_documented() -> None:
    service = FakeTranslatorService(translated({"translations": [{"text": "x", "to": "fr"}]}))

    key_translator(service).translate(["x"], ["fr"], source="en", profanity="deleted")

    assert service.seen[0].query["profanityAction"] == ["Deleted"]


def test_entra_on_custom_domain_uses_bearer_token_and_translator_path() -> None:
    service = FakeTranslatorService(
        translated({"translations": [{"text": "Hallo", "to": "de"}]}),
        Reply(
            body=[
                {
                    "language": "de",
                    "score": 0.92,
                    "isTranslationSupported": True,
                    "isTransliterationSupported": False,
                }
            ]
        ),
    )
    credential = FakeCredential()
    translator = AzureTranslator(
        CUSTOM, credential=credential, transport=transport_for(service), retry_backoff_s=0
    )

    translator.translate(["Hello"], ["de"], source="en")
    translator.detect(["Hallo Welt"])

    assert [seen.path for seen in service.seen] == [
        "/translator/text/v3.0/translate",
        "/translator/text/v3.0/detect",
    ]
    for seen in service.seen:
        assert seen.headers["Authorization"] == "Bearer entra-token"
        assert "Ocp-Apim-Subscription-Key" not in seen.headers
    assert credential.scopes[0] == ("https://cognitiveservices.azure.com/.default",)


def test_entra_on_global_endpoint_sends_region_and_resource_id() -> None:
    service = FakeTranslatorService(translated({"translations": [{"text": "Hallo", "to": "de"}]}))
    resource_id = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/tr"
    )
    translator = AzureTranslator(
        GLOBAL,
        credential=FakeCredential(),
        region="westeurope",
        resource_id=resource_id,
        transport=transport_for(service),
    )

    translator.translate(["Hello"], ["de"], source="en")

    [sent] = service.seen
    assert sent.path == "/translate"
    assert sent.headers["Authorization"] == "Bearer entra-token"
    assert sent.headers["Ocp-Apim-Subscription-Region"] == "westeurope"
    assert sent.headers["Ocp-Apim-ResourceId"] == resource_id


@pytest.mark.parametrize(
    "options",
    [
        {"credential": FakeCredential()},  # global endpoint without region/resource id
        {"key": KEY, "credential": FakeCredential()},
        {},
    ],
)
def test_ambiguous_or_incomplete_credentials_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="credential"):
        AzureTranslator(GLOBAL, **options)


# --- detect ---------------------------------------------------------------------------


def test_detect_sends_v3_detect_and_reads_language_score_support() -> None:
    service = FakeTranslatorService(
        Reply(
            body=[
                {
                    "language": "de",
                    "score": 0.92,
                    "isTranslationSupported": True,
                    "isTransliterationSupported": False,
                },
                {
                    "language": "tlh-Piqd",
                    "score": 0.5,
                    "isTranslationSupported": False,
                    "isTransliterationSupported": False,
                },
            ]
        )
    )

    result = key_translator(service, timeout_s=4.0, connect_timeout_s=2.0).detect(
        ["Ich würde wirklich gern Ihr Auto um den Block fahren.", "qaleghneS"]
    )

    assert result == [
        Detection(language="de", score=0.92, is_translation_supported=True),
        Detection(language="tlh-Piqd", score=0.5, is_translation_supported=False),
    ]
    [sent] = service.seen
    assert (sent.method, sent.path) == ("POST", "/detect")
    assert sent.query == {"api-version": ["3.0"]}
    assert sent.body == [
        {"text": "Ich würde wirklich gern Ihr Auto um den Block fahren."},
        {"text": "qaleghneS"},
    ]
    assert sent.headers["Ocp-Apim-Subscription-Key"] == KEY
    assert sent.timeout == (2.0, 4.0)


def test_detect_with_an_unreadable_answer_is_a_dependency_failure() -> None:
    service = FakeTranslatorService(Reply(body=[{"lang": "de"}]))

    with pytest.raises(DependencyUnavailable):
        key_translator(service).detect(["Hallo"])


# --- service errors -------------------------------------------------------------------

THROTTLED = Reply(
    status=429,
    body={
        "error": {
            "code": 429001,
            "message": "The client has exceeded request limits.",
        }
    },
    headers={"Retry-After": "7"},
)


@pytest.mark.parametrize("operation", ["translate", "detect"])
def test_429_is_throttled_with_retry_after_and_not_retried(operation: str) -> None:
    service = FakeTranslatorService(THROTTLED)
    translator = key_translator(service)

    with pytest.raises(Throttled) as caught:
        if operation == "translate":
            translator.translate(["Hello"], ["de"])
        else:
            translator.detect(["Hello"])

    assert caught.value.headers == {"Retry-After": "7"}
    assert len(service.seen) == 1  # the caller waits, not a sleeping worker


@pytest.mark.parametrize("operation", ["translate", "detect"])
def test_500_is_retried_a_bounded_number_of_times_then_unavailable(operation: str) -> None:
    failure = Reply(
        status=500, body={"error": {"code": 500000, "message": "An unexpected error occurred."}}
    )
    service = FakeTranslatorService(failure)
    translator = key_translator(service, max_retries=2)

    started = time.perf_counter()
    with pytest.raises(DependencyUnavailable) as caught:
        if operation == "translate":
            translator.translate(["Hello"], ["de"])
        else:
            translator.detect(["Hello"])

    assert caught.value.status == 503
    assert len(service.seen) == 3  # one call and two retries
    assert time.perf_counter() - started < 2


def test_503_then_success_is_retried_transparently() -> None:
    service = FakeTranslatorService(
        Reply(
            status=503,
            body={"error": {"code": 503000, "message": "Service is temporarily unavailable."}},
        ),
        translated({"translations": [{"text": "Hallo", "to": "de"}]}),
    )

    [result] = key_translator(service).translate(["Hello"], ["de"], source="en")

    assert result.translations[0].text == "Hallo"
    assert len(service.seen) == 2


def test_non_json_gateway_error_is_retried_then_unavailable() -> None:
    service = FakeTranslatorService(Reply(status=502, body="<html>Bad Gateway</html>"))

    with pytest.raises(DependencyUnavailable):
        key_translator(service, max_retries=1).translate(["Hello"], ["de"])

    assert len(service.seen) == 2


def test_read_timeout_is_unavailable() -> None:
    service = FakeTranslatorService(requests.exceptions.ReadTimeout("read timed out"))

    with pytest.raises(DependencyUnavailable):
        key_translator(service).translate(["Hello"], ["de"])

    assert len(service.seen) == 1  # a POST that may have been processed is not resent


def test_refused_connection_is_retried_then_unavailable() -> None:
    service = FakeTranslatorService(requests.exceptions.ConnectionError("refused"))

    with pytest.raises(DependencyUnavailable):
        key_translator(service, max_retries=2).detect(["Hello"])

    assert len(service.seen) == 3


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_silent_service_times_out_on_the_configured_read_timeout(silent_server: str) -> None:
    translator = AzureTranslator(silent_server, key=KEY, timeout_s=0.3, retry_backoff_s=0)

    started = time.perf_counter()
    with pytest.raises(DependencyUnavailable):
        translator.translate(["Hello"], ["de"])

    assert time.perf_counter() - started < 2


def test_400_is_invalid_request_with_the_service_message() -> None:
    service = FakeTranslatorService(
        Reply(
            status=400,
            body={"error": {"code": 400036, "message": "The target language is not valid."}},
        )
    )

    with pytest.raises(InvalidRequest) as caught:
        key_translator(service).translate(["Hello"], ["xx"])

    assert "The target language is not valid." in caught.value.detail
    assert caught.value.extensions["service_code"] == 400036
    assert len(service.seen) == 1


def test_a_service_message_that_echoes_the_text_is_scrubbed() -> None:
    service = FakeTranslatorService(
        Reply(status=400, body={"error": {"code": 400000, "message": f"Bad input: {SECRET_TEXT}"}})
    )

    with pytest.raises(InvalidRequest) as caught:
        key_translator(service).translate([SECRET_TEXT], ["fr"])

    assert SECRET_TEXT not in caught.value.detail
    assert "Bad input" in caught.value.detail


# --- limits, checked before any request -----------------------------------------------


@pytest.mark.parametrize(
    ("texts", "to", "source", "limit"),
    [
        ([], ["de"], None, "texts"),
        (["ok", "  "], ["de"], None, "texts"),
        (["x"] * 1001, ["de"], None, "max_texts"),
        (["x"], [], None, "to"),
        (["x"], [f"l{chr(97 + i)}" for i in range(11)], None, "max_target_languages"),
        (["x"], ["english"], None, "to"),
        (["x"], ["de; DROP"], None, "to"),
        (["x"], ["de", "DE"], None, "to"),
        (["x"], ["de"], "en_US", "source"),
        (["a" * 20_000], ["de", "fr", "it"], None, "max_characters"),
        (["a" * 25_000, "b" * 25_001], ["de"], None, "max_characters"),
    ],
)
def test_translate_limits_are_invalid_requests_naming_the_limit(
    texts: list[str], to: list[str], source: str | None, limit: str
) -> None:
    service = FakeTranslatorService(translated())

    with pytest.raises(InvalidRequest) as caught:
        key_translator(service).translate(texts, to, source=source)

    assert caught.value.extensions["limit"] == limit
    assert caught.value.status == 400
    assert service.seen == []


@pytest.mark.parametrize(
    ("texts", "limit"),
    [
        ([], "texts"),
        ([""], "texts"),
        (["x"] * 101, "max_detect_texts"),
        (["a" * 50_001], "max_detect_characters"),
    ],
)
def test_detect_limits_are_invalid_requests_naming_the_limit(texts: list[str], limit: str) -> None:
    service = FakeTranslatorService(Reply(body=[]))

    with pytest.raises(InvalidRequest) as caught:
        key_translator(service).detect(texts)

    assert caught.value.extensions["limit"] == limit
    assert service.seen == []


def test_requests_at_the_documented_limits_are_sent() -> None:
    # 25,000 characters to two languages is exactly 50,000; 1,000 texts is the maximum.
    one = {"translations": [{"text": "t", "to": "de"}]}
    service = FakeTranslatorService(translated(one), translated(*[one] * 1000))
    translator = key_translator(service)

    translator.translate(["a" * 25_000], ["de", "zh-Hans"], source="en")
    translator.translate(["x"] * 1000, ["de"], source="sr-Latn")

    assert len(service.seen) == 2


def test_limits_are_configurable() -> None:
    limits = TranslationLimits(max_characters=10)
    service = FakeTranslatorService(translated())

    with pytest.raises(InvalidRequest, match="10 characters") as caught:
        key_translator(service, limits=limits).translate(["12345"], ["de", "fr", "es"])

    assert caught.value.extensions["limit"] == "max_characters"


@pytest.mark.parametrize("code", ["de", "zh-Hans", "sr-Latn", "fr-CA", "es-419", "tlh-Latn", "yue"])
def test_translator_language_codes_are_accepted(code: str) -> None:
    TranslationLimits().check_translation(["x"], [code], source=None)


# --- logs -----------------------------------------------------------------------------


def test_user_text_and_key_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    service = FakeTranslatorService(
        translated({"translations": [{"text": "Ma phrase secrète", "to": "fr"}]}),
        Reply(status=400, body={"error": {"code": 400000, "message": f"Bad: {SECRET_TEXT}"}}),
        THROTTLED,
        Reply(status=500, body={"error": {"code": 500000, "message": "boom"}}),
        Reply(body=[{"language": "de", "score": 1.0, "isTranslationSupported": True}]),
    )
    translator = key_translator(service, max_retries=0)

    translator.translate([SECRET_TEXT], ["fr"], source="de")
    for error in (InvalidRequest, Throttled, DependencyUnavailable):
        with pytest.raises(error):
            translator.translate([SECRET_TEXT], ["fr"])
    translator.detect([SECRET_TEXT])

    assert any(record.name == "shared.translation" for record in caplog.records)
    for record in caplog.records:
        rendered = record.getMessage() + " " + repr(record.__dict__)
        assert SECRET_TEXT not in rendered
        assert "Ma phrase secrète" not in rendered
        assert KEY not in rendered
