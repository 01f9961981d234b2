"""Voice turns run in this process: the development stand-in for the Service Bus queue.

On a laptop without Docker there is no Service Bus (its emulator is a container), so with
`TIMBRE_REALTIME_TURNS=inprocess` (development and test only; the settings refuse it
elsewhere) a committed turn is handed to a small thread pool of the same process instead
of the queue. It keeps what the session queue guarantees and the worker relies on: the
turns of one connection run one at a time and in commit order, a commit delivered twice
runs once (the message id), and a put never waits for a turn. It is bounded: a connection
with too many turns waiting, or too many connections at once, gets `QueueUnavailable`
(the client sees `turn_not_queued`), never an unbounded backlog.

What it cannot do is what the queue is for in Azure: survive the instance (a turn in
flight when the process stops is lost) and spread turns over instances. So it is for one
local Functions host, never for production.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from shared.realtime.turn_queue import QueueUnavailable, TurnTicket

log = logging.getLogger(__name__)

#: Message ids remembered for duplicate detection (the queue's history window, in count).
SEEN_IDS: Final = 10_000


class InProcessTurns:
    """A `TurnQueue` whose turns run on this process's threads, in order per connection."""

    def __init__(
        self,
        run: Callable[[TurnTicket], object],
        *,
        workers: int = 4,
        max_waiting: int = 8,
        max_connections: int = 64,
    ) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voice-turn")
        self._max_waiting = max_waiting
        self._max_connections = max_connections
        self._waiting: dict[str, deque[TurnTicket]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Condition()

    def put(self, ticket: TurnTicket) -> None:
        """Start the turn after the connection's earlier ones; returns at once."""
        with self._lock:
            if ticket.message_id in self._seen:
                return  # a commit delivered twice runs once
            waiting = self._waiting.get(ticket.connection_id)
            if waiting is None:
                if len(self._waiting) >= self._max_connections:
                    raise QueueUnavailable()
                waiting = self._waiting[ticket.connection_id] = deque()
                start = True
            else:
                start = False
                if len(waiting) >= self._max_waiting:
                    raise QueueUnavailable()
            if start:
                try:
                    self._pool.submit(self._drain, ticket.connection_id)
                except RuntimeError:  # closed: nothing would run it
                    del self._waiting[ticket.connection_id]
                    raise QueueUnavailable() from None
            waiting.append(ticket)
            self._seen[ticket.message_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)

    def idle(self, timeout_s: float) -> bool:
        """Wait until no turn is waiting or running (tests, shutdown); whether none is."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._waiting, timeout_s)

    def close(self) -> None:
        """Stop taking turns; waiting ones are dropped, a running one finishes."""
        with self._lock:
            self._waiting.clear()
            self._lock.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _drain(self, connection_id: str) -> None:
        """Run the connection's turns one after another until none is waiting."""
        while True:
            with self._lock:
                waiting = self._waiting.get(connection_id)
                if not waiting:
                    self._waiting.pop(connection_id, None)
                    self._lock.notify_all()
                    return
                ticket = waiting[0]
            try:
                self._run(ticket)
            except Exception:
                log.exception("voice turn failed", extra={"event": "voice_turn_crashed"})
            with self._lock:
                waiting = self._waiting.get(connection_id)
                if waiting:
                    waiting.popleft()
