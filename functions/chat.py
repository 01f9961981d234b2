"""Chat with the persona agents: messages, sessions, facts, and the follow-up of each turn."""

from __future__ import annotations

import logging
import re

import azure.functions as func
from pydantic import ValidationError

from functions._http import Call, endpoint, paging, wrap_continuation
from shared.chat.views import (
    AgentSwitchRequest,
    ChatReply,
    ChatRequest,
    FactPage,
    FollowUp,
    SessionDetail,
    SessionPage,
    SessionView,
)
from shared.core.api import Reply
from shared.core.errors import InvalidRequest
from shared.core.identity import Role
from shared.core.openapi import PAGING, PATH_PARAMETERS, QueryParameter
from shared.core.telemetry import bound
from shared.runtime import runtime

log = logging.getLogger(__name__)

bp = func.Blueprint()

#: The queue of follow-ups (facts, compaction, latency rollup); its messages hold ids only.
FOLLOW_UP_QUEUE = "chat-followups"

_HISTORY = (
    QueryParameter(
        "after",
        {"type": "integer", "minimum": 0, "default": 0},
        "Return the turns numbered above this (the `next_after` of the previous page)",
    ),
    QueryParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        "Turns per page",
    ),
)


def _session_id(call: Call) -> str:
    return PATH_PARAMETERS["session_id"].check(call.route["session_id"])


@endpoint(
    bp,
    "v1/chat",
    "POST",
    role=Role.USER,
    tag="chat",
    body=ChatRequest,
    response=ChatReply,
    errors=(400, 404, 409, 413, 503),
    queue=FOLLOW_UP_QUEUE,
    summary="Send a message to a persona agent and get its reply",
)
def chat(call: Call) -> ChatReply:
    """Answer one message in a new or existing session of the caller."""
    assert isinstance(call.body, ChatRequest)
    return call.runtime.chat.send(call.caller, call.body, call.enqueue)


@endpoint(
    bp,
    "v1/chat/sessions",
    "GET",
    role=Role.USER,
    tag="chat",
    response=SessionPage,
    errors=(400,),
    query=PAGING,
    summary="The caller's chat sessions, most recently active first (paged)",
)
def list_chat_sessions(call: Call) -> SessionPage:
    """One page of the caller's sessions; `next` is the continuation of the next page."""
    with paging(call) as (page_size, continuation):
        page = call.runtime.chat.sessions(
            call.caller, page_size=page_size, continuation=continuation
        )
    page.next = wrap_continuation(page.next)
    return page


@endpoint(
    bp,
    "v1/chat/sessions/{session_id}",
    "GET",
    role=Role.USER,
    tag="chat",
    response=SessionDetail,
    errors=(400, 404),
    query=_HISTORY,
    summary="One of the caller's sessions: its summary and a page of its turns",
)
def get_chat_session(call: Call) -> SessionDetail:
    """The session, its rolling summary and the turns after `after`."""
    after = _whole(call, "after", 0, minimum=0, maximum=10**9)
    page_size = _whole(call, "page_size", 50, minimum=1, maximum=200)
    return call.runtime.chat.session(call.caller, _session_id(call), after=after, limit=page_size)


@endpoint(
    bp,
    "v1/chat/sessions/{session_id}",
    "DELETE",
    role=Role.USER,
    tag="chat",
    status=204,
    errors=(400, 404),
    summary="Delete one of the caller's sessions with its turns, summary and facts",
)
def delete_chat_session(call: Call) -> Reply:
    """Erase the session and what came from it."""
    call.runtime.chat.delete_session(call.caller, _session_id(call))
    return Reply(None, status=204)


@endpoint(
    bp,
    "v1/chat/sessions/{session_id}/agent",
    "POST",
    role=Role.USER,
    tag="chat",
    body=AgentSwitchRequest,
    response=SessionView,
    errors=(400, 404),
    summary="Switch the agent of a session; the history stays",
)
def switch_chat_agent(call: Call) -> SessionView:
    """The next reply of the session comes from the named agent."""
    assert isinstance(call.body, AgentSwitchRequest)
    return call.runtime.chat.switch_agent(call.caller, _session_id(call), call.body.agent_id)


@endpoint(
    bp,
    "v1/chat/facts",
    "GET",
    role=Role.USER,
    tag="chat",
    response=FactPage,
    errors=(400,),
    query=PAGING,
    summary="What the agents remember about the caller, most recent first (paged)",
)
def list_chat_facts(call: Call) -> FactPage:
    """One page of the caller's facts."""
    with paging(call) as (page_size, continuation):
        page = call.runtime.chat.facts(call.caller, page_size=page_size, continuation=continuation)
    page.next = wrap_continuation(page.next)
    return page


@endpoint(
    bp,
    "v1/chat/facts/{fact_id}",
    "DELETE",
    role=Role.USER,
    tag="chat",
    status=204,
    errors=(400, 404),
    summary="Forget one fact about the caller",
)
def delete_chat_fact(call: Call) -> Reply:
    """Delete one of the caller's facts."""
    fact_id = PATH_PARAMETERS["fact_id"].check(call.route["fact_id"])
    call.runtime.chat.delete_fact(call.caller, fact_id)
    return Reply(None, status=204)


@bp.function_name("chat_followup")
@bp.queue_trigger(arg_name="message", queue_name=FOLLOW_UP_QUEUE, connection="AzureWebJobsStorage")
def chat_followup(message: func.QueueMessage, context: func.Context) -> None:
    """After a turn: facts, background compaction and the latency rollup."""
    with bound(context.invocation_id):
        try:
            work = FollowUp.model_validate_json(message.get_body())
        except ValidationError:
            log.error("unreadable chat follow-up", extra={"event": "chat_followup_unreadable"})
            return  # consumed: a message that cannot be read never will be
        result = runtime().chat.follow_up(work)
        log.info(
            "chat follow-up done",
            extra={
                "event": "chat_followup",
                "facts_added": result.facts_added,
                "facts_through": result.facts_through,
                "summarised_through": result.summarised_through,
                "skipped": result.skipped,
            },
        )


def _whole(call: Call, name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = call.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(
            f"{name} must be a whole number from {minimum} to {maximum}", reason=f"invalid_{name}"
        )
    return int(raw)
