"""Azure OpenAI's Responses API as the agents' `LanguageModel`.

Wire contract (Azure OpenAI v1 API, "Responses - Create"; no `api-version`):
`POST {base}/responses` where `{base}` is `https://{resource}.openai.azure.com/openai/v1/`
or a gateway's URL ending in `/openai/v1` (API Management), with `api-key: <key>` or
`Authorization: Bearer <Entra ID token>`. The body carries `model` (the deployment name),
`instructions`, `input` (the messages as `{"role", "content"}`), `max_output_tokens` and
`store: false` on every call: Timbre's Cosmos memory is the only copy of a conversation,
so the service must not keep the response for its 30 days. A streamed answer arrives as
server-sent events (`response.output_text.delta` ... `response.completed` or
`response.incomplete`); a structured one asks for `text.format` = strict `json_schema`.

Time is bounded twice: each attempt by `timeout_s` (connect and every read), and all
attempts with the waits between them by `deadline_s` (`structured` by its own
`timeout_s`). The SDK's own retries are off (it would sleep a `Retry-After` of up to a
minute); here a 429 is retried after its `Retry-After` only when the wait and another
attempt fit before the deadline, 5xx and connection failures after a jittered backoff, a
timeout only when a whole attempt still fits, and a stream only before its first delta.
The reads of a stream are bounded one by one, so a stream can end up to one read timeout
after its deadline, never later.

Failures reach the caller as the port's errors (`shared.chat.language_model`), never as
SDK exceptions: 429 -> `ModelUnavailable` reason `chat_model_throttled` with the service's
wait as Retry-After; 5xx, refused connections and failed responses ->
`chat_model_unavailable`; timeouts -> `chat_model_timeout`; 401/403/404 (key, role or
deployment wrong) -> `chat_model_misconfigured`; other 4xx -> `chat_model_rejected`; a 400
`content_filter` -> `ContentFiltered("message")`, an answer cut off by the output filter
-> `ContentFiltered("reply")` (in `structured` too); a 400 `context_length_exceeded` ->
`ContextTooLong`. A structured answer that was refused, cut off, or does not validate ->
`StructuredOutputInvalid`.

`openai` is imported in the constructor (about half a second of cold start): build the
model once per process. Prompts, messages and replies are never logged: the SDK's debug
log of request options (older SDKs) has `input` and `instructions` blanked, and failures
are logged with status, error code and attempts only.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, TypeVar
from urllib.parse import urlsplit

from shared.chat.language_model import (
    ContentFiltered,
    ContextTooLong,
    Finish,
    M,
    Message,
    ModelReply,
    ModelUnavailable,
    StreamEvent,
    Structured,
    StructuredOutputInvalid,
    TextDelta,
)
from shared.core.errors import DEFAULT_RETRY_AFTER_S, DomainError
from shared.core.retry import backoff_delay, retry_after_seconds

if TYPE_CHECKING:
    import httpx2
    from openai import APIStatusError, OpenAI
    from openai.types.responses import Response, ResponseInputParam

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _RequestBody(TypedDict):
    """What every call sends besides the stream flag and the format."""

    model: str
    instructions: str
    input: ResponseInputParam
    max_output_tokens: int
    store: Literal[False]


MAX_RETRIES: Final = 3
#: `structured` answers off the reply's path: one retry at most, within its own timeout.
MAX_STRUCTURED_RETRIES: Final = 1
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})

_V1_PATH: Final = "/openai/v1"
_BACKOFF_BASE_S: Final = 0.25
_BACKOFF_MAX_S: Final = 2.0
# The shortest attempt worth making after a wait: less and the retry would only time out.
_MIN_ATTEMPT_S: Final = 1.0
_CONTEXT_TOO_LONG: Final = re.compile(
    r"context[ _](length|window)|maximum context|"
    r"(input|prompt|messages?|context) (is |are )?too long|too many tokens",
    re.IGNORECASE,
)
_LOGGABLE_CODE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")

_THROTTLED: Final = "chat_model_throttled"
_UNAVAILABLE: Final = "chat_model_unavailable"
_TIMEOUT: Final = "chat_model_timeout"
_MISCONFIGURED: Final = "chat_model_misconfigured"
_REJECTED: Final = "chat_model_rejected"
_DETAILS: Final = {
    _THROTTLED: "The chat model is busy; try again after the Retry-After wait",
    _UNAVAILABLE: "The chat model failed or could not be reached",
    _TIMEOUT: "The chat model did not answer in time",
    _MISCONFIGURED: "The chat model's deployment or credentials are misconfigured",
    _REJECTED: "The chat model refused the request",
}


def _unavailable(reason: str, retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> ModelUnavailable:
    return ModelUnavailable(_DETAILS[reason], reason=reason, retry_after_s=retry_after_s)


def base_url_for(endpoint: str) -> str:
    """The v1 base URL (ending `/openai/v1/`) of a resource endpoint or of a v1 base URL.

    https only; plain http only on loopback (tests and local stand-ins).
    """
    parts = urlsplit(endpoint.strip())
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        raise ValueError("the Azure OpenAI endpoint must be https (http only on loopback)")
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("the Azure OpenAI endpoint must be a plain URL: scheme, host, path")
    path = parts.path.rstrip("/")
    if path and not path.endswith(_V1_PATH):
        raise ValueError(
            "the Azure OpenAI endpoint must be a resource endpoint "
            "(https://RESOURCE.openai.azure.com) or a base URL ending in /openai/v1"
        )
    if not path:
        path = _V1_PATH
    return f"{parts.scheme}://{parts.netloc}{path}/"


@dataclass(frozen=True)
class _Verdict:
    """What a failed attempt means: the error to raise if it is the last, and the retry."""

    error: Exception
    wait_s: float | None  # before the next attempt; None: never retried
    needs_s: float  # time the next attempt needs after the wait
    status: int | None = None
    code: str | None = None


class _ResponseFailed(Exception):
    """The service answered with a failed (or unfinished) response: a server failure."""

    def __init__(self, code: str | None) -> None:
        super().__init__("the response failed")
        self.code = code


class _NoToken(Exception):
    """The token provider raised or returned nothing."""


class AzureOpenAIModel:
    """A `LanguageModel` on an Azure OpenAI deployment through the Responses API."""

    def __init__(
        self,
        *,
        endpoint: str,
        deployment: str,
        api_key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        timeout_s: float = 20.0,
        deadline_s: float = 30.0,
        max_retries: int = 2,
        http_client: httpx2.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (api_key is None) == (token_provider is None):
            raise ValueError("pass exactly one of api_key and token_provider")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key is empty")
        if not deployment.strip():
            raise ValueError("deployment is empty")
        if not (timeout_s > 0 and deadline_s > 0 and 0 <= max_retries <= MAX_RETRIES):
            raise ValueError(
                f"need timeout_s > 0, deadline_s > 0, 0 <= max_retries <= {MAX_RETRIES}"
            )
        self.base_url = base_url_for(endpoint)

        from openai import OpenAI, omit

        _redact_request_bodies()
        self._deployment = deployment
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._max_retries = max_retries
        self._sleep = sleep
        self._clock = clock
        if api_key is not None:
            # Azure's key header, and no `Authorization: Bearer <key>` beside it.
            self._auth_headers: Mapping[str, Any] | None = {
                "api-key": api_key,
                "Authorization": omit,
            }
            credential: str | Callable[[], str] = api_key
        else:
            assert token_provider is not None
            self._auth_headers = None
            credential = _checked_tokens(token_provider)  # called by the SDK for every request
        self._client: OpenAI = OpenAI(
            base_url=self.base_url,
            api_key=credential,
            timeout=timeout_s,
            max_retries=0,  # retried here, within the deadline
            http_client=http_client,
        )

    def reply(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> ModelReply:
        """The model's whole answer."""
        started = self._clock()

        def attempt(timeout_s: float) -> Response:
            response = self._client.responses.create(
                **self._request(instructions, messages, max_output_tokens),
                stream=False,
                timeout=timeout_s,
                extra_headers=self._auth_headers,
            )
            _raise_if_failed(response)
            return response

        response = self._attempts(
            "reply", attempt, deadline=started + self._deadline_s, max_retries=self._max_retries
        )
        finish = _finish(response)
        usage = response.usage
        return ModelReply(
            text=response.output_text or _refusal(response),
            tokens_in=usage.input_tokens if usage else 0,
            tokens_out=usage.output_tokens if usage else 0,
            model_ms=self._elapsed_ms(started),
            finish=finish,
        )

    def stream(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> Iterator[StreamEvent]:
        """The model's answer as it is written: deltas, then one `ModelReply`."""
        started = self._clock()
        deadline = started + self._deadline_s
        delivered: list[str] = []
        attempt = 1
        while True:
            try:
                yield from self._stream_once(
                    instructions=instructions,
                    messages=messages,
                    max_output_tokens=max_output_tokens,
                    started=started,
                    deadline=deadline,
                    delivered=delivered,
                )
                return
            except Exception as error:
                verdict = self._judge(error, attempt)
                if delivered or not self._retries(verdict, attempt, deadline, self._max_retries):
                    self._log_failure("stream", verdict, attempt)
                    raise verdict.error from None
            assert verdict.wait_s is not None
            self._sleep(verdict.wait_s)
            attempt += 1

    def structured(
        self,
        instructions: str,
        messages: Sequence[Message],
        schema: type[M],
        *,
        max_output_tokens: int,
        timeout_s: float,
    ) -> Structured[M]:
        """An answer that fits `schema` (strict JSON schema), within `timeout_s` in all."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        import pydantic

        started = self._clock()

        def attempt(attempt_timeout_s: float) -> Response:
            # `text_format` puts the strict schema in `text.format`; `parse_as=None` leaves
            # validation to us, after the status is known (a cut-off answer is not JSON).
            response = self._client.responses.parse(
                **self._request(instructions, messages, max_output_tokens),
                text_format=schema,
                parse_as=None,
                timeout=attempt_timeout_s,
                extra_headers=self._auth_headers,
            )
            _raise_if_failed(response)
            return response

        response = self._attempts(
            "structured",
            attempt,
            deadline=started + timeout_s,
            max_retries=min(MAX_STRUCTURED_RETRIES, self._max_retries),
        )
        if _finish(response) != "complete":
            raise StructuredOutputInvalid("the structured answer was cut off")
        if _refusal(response):
            raise StructuredOutputInvalid("the model refused the structured answer")
        try:
            value = schema.model_validate_json(response.output_text)
        except pydantic.ValidationError:
            # The validation error quotes the answer: never let it travel.
            raise StructuredOutputInvalid(
                f"the structured answer does not fit {schema.__name__}"
            ) from None
        usage = response.usage
        return Structured(
            value=value,
            tokens_in=usage.input_tokens if usage else 0,
            tokens_out=usage.output_tokens if usage else 0,
            model_ms=self._elapsed_ms(started),
        )

    def _request(
        self, instructions: str, messages: Sequence[Message], max_output_tokens: int
    ) -> _RequestBody:
        if max_output_tokens < 1:
            raise ValueError("max_output_tokens must be positive")
        return {
            "model": self._deployment,
            "instructions": instructions,
            "input": [{"role": message.role, "content": message.text} for message in messages],
            "max_output_tokens": max_output_tokens,
            "store": False,  # Timbre's memory is the only copy of the conversation
        }

    def _stream_once(
        self,
        *,
        instructions: str,
        messages: Sequence[Message],
        max_output_tokens: int,
        started: float,
        deadline: float,
        delivered: list[str],
    ) -> Iterator[StreamEvent]:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise _unavailable(_TIMEOUT)
        events = self._client.responses.create(
            **self._request(instructions, messages, max_output_tokens),
            stream=True,
            timeout=min(self._timeout_s, remaining),
            extra_headers=self._auth_headers,
        )
        with events:
            for event in events:
                if self._clock() > deadline:
                    raise _unavailable(_TIMEOUT)
                if event.type == "response.output_text.delta":
                    if event.delta:
                        delivered.append(event.delta)
                        yield TextDelta(event.delta)
                elif event.type in ("response.completed", "response.incomplete"):
                    response = event.response
                    usage = response.usage
                    yield ModelReply(
                        text="".join(delivered),
                        tokens_in=usage.input_tokens if usage else 0,
                        tokens_out=usage.output_tokens if usage else 0,
                        model_ms=self._elapsed_ms(started),
                        finish=_finish(response),
                    )
                    return
                elif event.type == "response.failed":
                    error = event.response.error
                    raise _ResponseFailed(error.code if error else None)
                elif event.type == "error":
                    if event.code == "content_filter":
                        raise ContentFiltered("reply")
                    raise _ResponseFailed(event.code)
        raise _ResponseFailed("stream_ended_early")

    def _attempts(
        self,
        operation: str,
        call: Callable[[float], T],
        *,
        deadline: float,
        max_retries: int,
    ) -> T:
        """`call(timeout_s)` until it succeeds, a failure is final, or the deadline is near."""
        attempt = 1
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise _unavailable(_TIMEOUT)
            try:
                return call(min(self._timeout_s, remaining))
            except Exception as error:
                verdict = self._judge(error, attempt)
                if not self._retries(verdict, attempt, deadline, max_retries):
                    self._log_failure(operation, verdict, attempt)
                    raise verdict.error from None
            assert verdict.wait_s is not None
            self._sleep(verdict.wait_s)
            attempt += 1

    def _retries(self, verdict: _Verdict, attempt: int, deadline: float, max_retries: int) -> bool:
        """Whether another attempt is allowed and fits, with its wait, before the deadline."""
        if verdict.wait_s is None or attempt > max_retries:
            return False
        return self._clock() + verdict.wait_s + verdict.needs_s <= deadline

    def _judge(self, error: Exception, attempt: int) -> _Verdict:
        """The port's error a failed attempt stands for, and when it may be retried."""
        import openai

        backoff = backoff_delay(attempt, base_s=_BACKOFF_BASE_S, max_s=_BACKOFF_MAX_S)
        short = min(self._timeout_s, _MIN_ATTEMPT_S)
        if isinstance(error, DomainError | ContextTooLong | StructuredOutputInvalid):
            return _Verdict(error, None, 0.0)
        if isinstance(error, openai.APITimeoutError):
            # Only a whole attempt is worth it: the last one used all its time.
            return _Verdict(_unavailable(_TIMEOUT), backoff, self._timeout_s)
        if isinstance(error, openai.APIConnectionError):
            return _Verdict(_unavailable(_UNAVAILABLE), backoff, short)
        if isinstance(error, _ResponseFailed):
            return _Verdict(_unavailable(_UNAVAILABLE), backoff, short, code=error.code)
        if isinstance(error, _NoToken):
            return _Verdict(_unavailable(_MISCONFIGURED), None, 0.0, code="no_token")
        if not isinstance(error, openai.APIStatusError):
            raise error  # a defect, not a failure of the service
        return self._judge_status(error, backoff, short)

    def _judge_status(self, error: APIStatusError, backoff: float, short: float) -> _Verdict:
        """The verdict on an HTTP error answer."""
        status = error.status_code
        code = error.code if isinstance(error.code, str) else None
        body: object = error.body
        inner = body.get("innererror") if isinstance(body, dict) else None
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        if status == 429:
            wait = retry_after_seconds(error.response.headers)
            retry_after = math.ceil(wait) if wait is not None else DEFAULT_RETRY_AFTER_S
            failure = _unavailable(_THROTTLED, retry_after_s=retry_after)
            return _Verdict(failure, backoff if wait is None else wait, short, status, code)
        if status >= 500:
            # A 503 may say when to come back: that wait, else the backoff.
            wait = retry_after_seconds(error.response.headers)
            retry_after = math.ceil(wait) if wait is not None else DEFAULT_RETRY_AFTER_S
            failure = _unavailable(_UNAVAILABLE, retry_after_s=retry_after)
            return _Verdict(failure, backoff if wait is None else wait, short, status, code)
        if code == "content_filter" or inner_code == "ResponsibleAIPolicyViolation":
            return _Verdict(ContentFiltered("message"), None, 0.0, status, code)
        if code == "context_length_exceeded" or (
            status == 400 and _CONTEXT_TOO_LONG.search(error.message)
        ):
            too_long = ContextTooLong("the context is longer than the model's window")
            return _Verdict(too_long, None, 0.0, status, code)
        if status in (401, 403, 404):
            return _Verdict(_unavailable(_MISCONFIGURED), None, 0.0, status, code)
        return _Verdict(_unavailable(_REJECTED), None, 0.0, status, code)

    def _log_failure(self, operation: str, verdict: _Verdict, attempts: int) -> None:
        code = verdict.code if verdict.code and _LOGGABLE_CODE.match(verdict.code) else None
        error = verdict.error
        logger.warning(
            "chat model call failed",
            extra={
                "operation": operation,
                "deployment": self._deployment,
                "status": verdict.status,
                "code": code,
                "reason": getattr(error, "reason", type(error).__name__),
                "attempts": attempts,
            },
        )

    def _elapsed_ms(self, started: float) -> float:
        return (self._clock() - started) * 1000


def _checked_tokens(token_provider: Callable[[], str]) -> Callable[[], str]:
    """The token provider, with its failures (credential SDK errors) made ours."""

    def token() -> str:
        try:
            value = token_provider()
        except Exception:
            raise _NoToken("the token provider failed") from None
        if not value:
            raise _NoToken("the token provider returned no token")
        return value

    return token


def _raise_if_failed(response: Response) -> None:
    if response.status == "failed" or response.status in ("in_progress", "queued", "cancelled"):
        raise _ResponseFailed(response.error.code if response.error else response.status)


def _finish(response: Response) -> Finish:
    """`complete` or `length`; an answer cut off by the output filter is `ContentFiltered`."""
    if response.status != "incomplete":
        return "complete"
    reason = response.incomplete_details.reason if response.incomplete_details else None
    if reason == "content_filter":
        raise ContentFiltered("reply")
    return "length"


def _refusal(response: Response) -> str:
    """The model's refusal text, if it refused instead of answering."""
    return "".join(
        content.refusal
        for output in response.output
        if output.type == "message"
        for content in output.content
        if content.type == "refusal"
    )


class _RedactInput(logging.Filter):
    """Blanks the messages and instructions in the SDK's debug log of request options."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, Mapping):
            body = args.get("json_data")
            if isinstance(body, Mapping) and ("input" in body or "instructions" in body):
                blanked = {key: "<redacted>" for key in ("input", "instructions") if key in body}
                record.args = {**args, "json_data": {**body, **blanked}}
        return True


def _redact_request_bodies() -> None:
    sdk_logger = logging.getLogger("openai._base_client")
    if not any(isinstance(found, _RedactInput) for found in sdk_logger.filters):
        sdk_logger.addFilter(_RedactInput())
