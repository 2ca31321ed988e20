"""Server-sent-event stream of messages (``GET /v1/stream``) with automatic resume.

:class:`EventStream` yields :class:`~ringmq.types.StreamMessage` objects. When the connection drops
(a network error or the server closing it) it reconnects, waiting 0.5 s doubling up to 30 s, and
sends ``Last-Event-ID`` so the broker resumes after the last message seen (for up to 60 s after
the drop, on the same shard, key and filter). An ``event: gap`` (messages lost, or a fresh stream)
is counted in :attr:`EventStream.gaps` and passed to ``on_gap``; ``event: revoked`` ends the
iteration with :class:`~ringmq.errors.StreamRevokedError`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator, Mapping

import httpx

from .errors import RingmqError, StreamRevokedError, error_from_response
from .types import StreamMessage
from .urls import with_query

__all__ = ["EventStream", "SseEvent", "parse_sse"]

log = logging.getLogger("ringmq")


@dataclass
class SseEvent:
    """One raw server-sent event."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse text/event-stream lines into events (comments-only blocks are skipped)."""
    ev = SseEvent()
    data: list[str] = []
    seen = False
    for line in lines:
        line = line.rstrip("\r\n")
        if line == "":
            if data or ev.event != "message" or ev.id is not None:
                ev.data = "\n".join(data)
                yield ev
            ev, data, seen = SseEvent(), [], False
            continue
        seen = True
        if line.startswith(":"):
            ev.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            ev.event = value or "message"
        elif name == "id":
            ev.id = value
        elif name == "retry" and value.isdigit():
            ev.retry = int(value)
    if seen and data:
        ev.data = "\n".join(data)
        yield ev


class EventStream(Iterator[StreamMessage]):
    """An iterator over the messages of ``GET /v1/stream``, resuming after dropped connections.

    Use it as an iterator, ideally in a ``with`` block (or call :meth:`close`)::

        with api.stream(topic="agents/#") as stream:
            for msg in stream:
                print(msg.topic, msg.payload)

    :ivar last_event_id: the id of the last event received (the resume point).
    :ivar reconnects: how many times the stream reconnected.
    :ivar gaps: how many ``gap`` events were received.
    """

    def __init__(
        self,
        http: httpx.Client,
        params: Mapping[str, str],
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        on_gap: Callable[[SseEvent], object] | None = None,
        owns_http: bool = True,
    ) -> None:
        self._http = http
        self._owns_http = owns_http
        self.params = dict(params)
        self.last_event_id = last_event_id
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.on_gap = on_gap
        self.reconnects = 0
        self.gaps = 0
        self._closed = threading.Event()
        self._response: httpx.Response | None = None
        self._gen = self._messages()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> StreamMessage:
        return next(self._gen)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop_connection(self) -> None:
        """Close the current HTTP connection only: the stream reconnects and resumes (tests, or
        to move to a fresh connection)."""
        resp = self._response
        if resp is not None:
            resp.close()

    def close(self) -> None:
        """Stop the stream and release its connection."""
        self._closed.set()
        resp = self._response
        if resp is not None:
            try:
                resp.close()
            except (httpx.HTTPError, OSError, RuntimeError):
                pass
        try:
            self._gen.close()
        except (ValueError, RuntimeError):  # closing from another thread while it runs
            pass
        if self._owns_http:
            self._http.close()

    # -- internals --------------------------------------------------------------------------------
    def _messages(self) -> Generator[StreamMessage, None, None]:
        delay = self.min_delay
        while not self._closed.is_set():
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            retry_after: float | None = None
            try:
                target = with_query("/v1/stream", self.params)
                with self._http.stream("GET", target, headers=headers) as resp:
                    self._response = resp
                    if resp.status_code != 200:
                        resp.read()
                        err = _error(resp)
                        if resp.status_code not in (429, 503) or not self.reconnect:
                            raise err
                        retry_after = getattr(err, "retry_after", None)
                        log.info("ringmq: stream refused (%s), retrying", err)
                    else:
                        for ev in parse_sse(resp.iter_lines()):
                            delay = self.min_delay
                            msg = self._handle(ev)
                            if msg is not None:
                                yield msg
            except (httpx.TransportError, httpx.StreamError) as e:
                if self._closed.is_set():
                    return
                log.info("ringmq: stream connection lost (%s)", e)
            finally:
                self._response = None
            if self._closed.is_set() or not self.reconnect:
                return
            if self.max_reconnects is not None and self.reconnects >= self.max_reconnects:
                raise RingmqError(None, "stream_lost", f"stream lost after {self.reconnects} reconnects")
            wait = delay if retry_after is None else min(max(retry_after, delay), 60.0)
            delay = min(delay * 2, self.max_delay)
            if self._closed.wait(wait):
                return
            self.reconnects += 1

    def _handle(self, ev: SseEvent) -> StreamMessage | None:
        if ev.id:
            self.last_event_id = ev.id
        if ev.event == "message":
            try:
                frame = json.loads(ev.data)
            except ValueError:
                log.warning("ringmq: stream frame is not JSON: %r", ev.data[:200])
                return None
            if not isinstance(frame, dict):
                return None
            return StreamMessage.from_json(frame, ev.id)
        if ev.event == "gap":
            self.gaps += 1
            if self.on_gap is not None:
                self.on_gap(ev)
            return None
        if ev.event == "revoked":
            body: Any
            try:
                body = json.loads(ev.data)
            except ValueError:
                body = {}
            error = str(body.get("error", "revoked")) if isinstance(body, dict) else "revoked"
            detail = str(body.get("detail", "")) if isinstance(body, dict) else ev.data
            self.last_event_id = None
            raise StreamRevokedError(None, error, detail)
        log.debug("ringmq: stream event %r ignored", ev.event)
        return None


def _error(resp: httpx.Response) -> RingmqError:
    body: Any
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return error_from_response(resp.status_code, body, resp.headers)
