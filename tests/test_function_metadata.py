"""What `func start` would index, proven without the host: every function and binding.

The worker indexes `function_app.app.get_functions()`; each function's JSON is what the
host reads. These checks fail where the host would refuse a function or where a binding
points at an app setting that a developer's `local.settings.json` would not have.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter
from pydantic import AliasChoices

from shared.config import Settings, load_settings
from shared.core.api import ROUTES
from tests.kit.host import indexed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
HOST = json.loads((ROOT / "host.json").read_text())
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
SETTING_REF = re.compile(r"^%([A-Za-z0-9_]+)%$")


def is_valid_ncrontab(expression: str) -> bool:
    """Six fields, seconds first, as the Functions timer trigger reads NCRONTAB."""
    if SETTING_REF.match(expression):
        resolved = EXAMPLE.get(SETTING_REF.match(expression).group(1))  # type: ignore[union-attr]
        return resolved is not None and is_valid_ncrontab(resolved)
    fields = expression.split()
    return len(fields) == 6 and croniter.is_valid(expression, second_at_beginning=True)


def connection_is_configured(name: str) -> bool:
    """A connection is a setting of that name, or identity-based `<name>__...` settings."""
    return name in EXAMPLE or any(key.startswith(f"{name}__") for key in EXAMPLE)


def functions() -> list[tuple[str, list[dict[str, Any]]]]:
    return [(name, fn.bindings) for name, fn in indexed().items()]


def test_the_app_indexes_functions() -> None:
    names = [name for name, _ in functions()]
    assert len(names) >= 7
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("name", "bindings"), functions(), ids=[n for n, _ in functions()])
def test_bindings(name: str, bindings: list[dict[str, Any]]) -> None:
    triggers = [b for b in bindings if b["type"].endswith("Trigger")]
    assert len(triggers) == 1, f"{name} needs exactly one trigger"
    binding_names = [b["name"] for b in bindings]
    assert len(binding_names) == len(set(binding_names))
    for binding in bindings:
        assert binding["direction"] in {"IN", "OUT", "INOUT"}
        if "connection" in binding:
            assert connection_is_configured(binding["connection"]), (
                f"{name}: connection {binding['connection']} is not in local.settings.example.json"
            )
        if binding["type"] == "timerTrigger":
            assert is_valid_ncrontab(binding["schedule"]), f"{name}: bad schedule"
        if binding["type"] == "httpTrigger":
            route = binding["route"]
            assert route and not route.startswith("/") and not route.startswith("api/")
            methods = binding.get("methods")  # none: the host sends every method (catch-all)
            assert methods is not None or route == "{*path}", f"{name}: no methods"
            assert set(methods or ()) <= HTTP_METHODS
            # Timbre authenticates bearer tokens itself; function keys would be a second,
            # weaker scheme.
            assert binding["authLevel"] == "ANONYMOUS"
            operation = ROUTES.by_name(name)
            assert operation.route == route
            assert methods is None or operation.method in methods


def test_ncrontab_checker_rejects_what_the_host_rejects() -> None:
    assert is_valid_ncrontab("0 */5 * * * *")
    assert is_valid_ncrontab("0 30 2 * * Mon-Fri")
    assert not is_valid_ncrontab("*/5 * * * *")  # five fields: the host wants six
    assert not is_valid_ncrontab("0 61 * * * *")
    assert not is_valid_ncrontab("%NO_SUCH_SETTING%")


def test_host_json() -> None:
    assert HOST["version"] == "2.0"
    assert HOST["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    hub = SETTING_REF.match(HOST["extensions"]["durableTask"]["hubName"])
    assert hub and EXAMPLE.get(hub.group(1))
    assert HOST["extensions"]["blobs"]["poisonBlobThreshold"] >= 1
    assert HOST["extensions"]["http"]["routePrefix"] == "api"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", HOST["functionTimeout"])


def test_example_settings_name_every_app_setting() -> None:
    aliases: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        # A setting known by two names (the SOP's and Timbre's) is listed under both.
        aliases.update(map(str, alias.choices) if isinstance(alias, AliasChoices) else [str(alias)])
    missing = sorted(aliases - set(EXAMPLE))
    assert not missing, f"document these in local.settings.example.json: {missing}"
    for required in ("FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"):
        assert EXAMPLE[required]


def test_example_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in EXAMPLE.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.environment.value == "development"
    assert settings.dev_tokens_allowed and settings.audit_enabled


def test_blob_triggers_bind_a_client_never_the_content() -> None:
    """The host loads a plain blob binding's content whole; an SDK type it never reads."""
    import inspect

    from azurefunctions.extensions.base import SdkType

    blob_triggers = [
        (name, fn) for name, fn in indexed().items() if fn.trigger["type"] == "blobTrigger"
    ]
    assert blob_triggers
    for name, fn in blob_triggers:
        # Both the raw annotation (deferred-binding detection) and the resolved type hint
        # (what the worker's function loader reads) must be the SDK type.
        raw = inspect.signature(fn.call).parameters[fn.trigger["name"]].annotation
        hinted = typing.get_type_hints(fn.call)[fn.trigger["name"]]
        for annotation in (raw, hinted):
            assert isinstance(annotation, type) and issubclass(annotation, SdkType), name
        assert fn.trigger["source"] in {"EventGrid", "LogsAndContainerScan"}


def test_every_function_signature_resolves_as_the_worker_reads_it() -> None:
    """The worker resolves annotations with typing.get_type_hints; none may fail."""
    for name, fn in indexed().items():
        hints = typing.get_type_hints(fn.call)
        for binding in fn.bindings:
            if binding["name"] != "$return":
                assert binding["name"] in hints, f"{name}: {binding['name']} has no type"


def test_every_output_binding_has_an_annotation_the_worker_accepts() -> None:
    """The worker refuses to index an app whose `func.Out[T]` names a T that the binding's
    converter does not take (`list[str]` for a queue on Python 3.11, for one): no function
    would load. Checked here with the converters of `azure.functions` itself."""
    from azure.functions import meta

    checked = 0
    for fn in indexed().values():
        hints = typing.get_type_hints(fn.call)
        for binding in fn.bindings:
            if binding["direction"].lower() != "out" or binding["type"] == "http":
                continue
            annotation = hints[binding["name"]]
            assert typing.get_origin(annotation) is not None, annotation
            (inner,) = typing.get_args(annotation)
            converter = meta.get_binding_registry().get(binding["type"])
            assert converter.check_output_type_annotation(inner), (fn.name, inner)
            checked += 1
    assert checked >= 1  # the chat function's follow-up queue, at least
