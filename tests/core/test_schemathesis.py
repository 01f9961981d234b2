"""schemathesis reads the app's own OpenAPI document and finds nothing it does not promise.

The document is fetched from `GET /api/openapi.json` and every documented operation is
exercised in process (`tests.kit.host.wsgi_app`: the host's routing into the registered
functions, each request a real `func.HttpRequest`) on Azurite and the local Cosmos server,
authenticated with a development token. Generated requests, valid and invalid, and other
methods on each route (TRACE too) must never answer a server error, and every answer must
be one the document describes: its status, media type, body schema and headers. The Azure
AI services are not configured here, so the operations that need them answer 503 with
`Retry-After`, as the document promises; no other operation may answer 503.

Bounded and repeatable: a fixed seed, deterministic generation, a few examples per
operation and phase, no shrinking, no example database, and a time budget that stops the
run (and fails the test) long before the test's timeout on a 2-core machine. One engine
run serves both tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kit.host import wsgi_app
from tests.kit.settings import local_settings, start_runtime

pytestmark = pytest.mark.integration

SEED = 20261001
MAX_EXAMPLES = 25  # per operation and phase
BUDGET_S = 90.0  # the whole run; about 15 s here

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",  # 405 to a method the route does not take
    "allow_header_conformance",  # ... with an Allow header naming the ones it takes
)

# Operations that need an Azure AI service (Speech, Azure OpenAI, Translator, Custom
# Voice), none of which is configured in this setting: their documented 503 is expected.
NEED_AZURE = {
    "POST /api/v1/synthesize",
    "POST /api/v1/synthesis/jobs",
    "POST /api/v1/translate",
    "POST /api/v1/detect",
    "POST /api/v1/chat",
    "POST /api/v1/voice/negotiate",
}


def _config() -> Any:
    import schemathesis

    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "headers": {"Authorization": "Bearer dev_ana_admin"},
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
                # A 503 is the documented answer of a dependency that is down or not
                # configured (response_headers_conformance checks its Retry-After); which
                # operations may give it here is checked by the test.
                "not_a_server_error": {
                    "enabled": True,
                    "expected-statuses": ["1XX", "2XX", "3XX", "4XX", 503],
                },
            },
        }
    )


@dataclass
class FuzzRun:
    """What one bounded schemathesis run saw."""

    operations: int = 0
    scenarios: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (operation, status, problem reason) of every answer, and whether the case was valid
    answers: list[tuple[str, int, str | None, bool]] = field(default_factory=list)
    # the failing fields' messages of each 400 given to a valid case, by operation
    refusals: dict[str, set[str]] = field(default_factory=dict)


_RUN: FuzzRun | None = None


def _problem(content: bytes | None) -> dict[str, Any]:
    try:
        body = json.loads(content or b"")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _record(run: FuzzRun, recorder: Any) -> None:
    for case_id, node in recorder.cases.items():
        case = node.value
        interaction = recorder.interactions.get(case_id)
        if interaction is None or interaction.response is None:
            continue
        response = interaction.response
        meta = case._meta
        positive = meta is not None and meta.generation.mode.value == "positive"
        problem = _problem(response.content)
        run.answers.append((recorder.label, response.status_code, problem.get("reason"), positive))
        if positive and problem.get("reason") == "validation_failed":
            run.refusals.setdefault(recorder.label, set()).update(
                f"{error.get('field')}: {error.get('message')}" for error in problem["errors"]
            )
        for check in recorder.checks.get(case_id, []):
            if check.failure_info is not None:
                failure = check.failure_info.failure
                run.failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{check.name}: {failure.title}: {failure.message}\n"
                    f"    {check.failure_info.code_sample}"
                )


def _fuzz(services: dict[str, str]) -> FuzzRun:
    import schemathesis
    from schemathesis.engine import events, from_schema

    # A receipt key, as the example settings have one: erasure is fuzzed, not refused.
    key = "a-receipt-key-for-the-fuzzer-0123456789abcdef"
    start_runtime(local_settings(services, "schemathesis", TIMBRE_RECEIPT_KEY=key))
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", wsgi_app(), config=_config())
    run = FuzzRun(operations=len(list(schema.get_all_operations())))
    started = time.monotonic()
    stream = from_schema(schema).execute()
    for event in stream:
        if isinstance(event, events.ScenarioFinished):
            run.scenarios += 1
            _record(run, event.recorder)
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            run.stop_reason = event.stop_reason.value
        if time.monotonic() - started > BUDGET_S and not run.stop_reason:
            stream.stop()
            run.stop_reason = f"over the {BUDGET_S:.0f} s budget"
            break
    run.elapsed_s = time.monotonic() - started
    return run


@pytest.fixture
def fuzz_run(local_services: dict[str, str]) -> FuzzRun:
    """The one bounded run of this module (made by the first test that asks)."""
    global _RUN  # noqa: PLW0603 (one engine run for both tests)
    if _RUN is None:
        _RUN = _fuzz(local_services)
    return _RUN


def test_no_server_error_and_every_answer_is_documented(fuzz_run: FuzzRun) -> None:
    assert fuzz_run.stop_reason == "completed", (
        f"stopped: {fuzz_run.stop_reason} after {fuzz_run.elapsed_s:.0f} s"
    )
    assert not fuzz_run.errors, "\n".join(fuzz_run.errors)
    assert not fuzz_run.failures, f"{len(fuzz_run.failures)} failures:\n" + "\n".join(
        sorted(set(fuzz_run.failures))
    )
    assert fuzz_run.scenarios >= fuzz_run.operations > 20
    tried = {operation for operation, *_ in fuzz_run.answers}
    assert len(tried) == fuzz_run.operations
    unavailable = sorted({op for op, status, *_ in fuzz_run.answers if status == 503} - NEED_AZURE)
    assert not unavailable, f"503 with Azurite and Cosmos up: {unavailable}"


def test_a_request_the_document_calls_valid_is_not_refused_by_a_hidden_rule(
    fuzz_run: FuzzRun,
) -> None:
    """A body that meets its documented schema never fails the model's own validation: every
    rule a body model enforces is in its schema (a pattern, an enum, a required field)."""
    hidden = "\n".join(
        f"{operation}: {sorted(messages)}"
        for operation, messages in sorted(fuzz_run.refusals.items())
    )
    assert not hidden, f"body rules missing from the document:\n{hidden}"
