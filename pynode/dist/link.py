"""One distribution link: :class:`PeerConnection` and its :class:`LinkState`.

A connection is made on demand by the first signal addressed to a node. Until the
handshake completes, outgoing signals wait in the connection's queue as small builders
(:data:`Builder`, ``flags -> (control, payload)``: :mod:`pynode.dist.outgoing`), because their
encoding depends on the negotiated flags. Once the handshake is done the connected phase is an
:class:`erl_interop.aio.Link` (reader, ticker, coalescing writer): every frame produced in one
turn of the event loop goes out in one ``write`` (one socket write per frame tops out near
180k frames/s from Python; batching is ~10x that: bench/dist_bench.py). Ticks: a frame (or a
tick) at least every T/4; the link is dropped after T of read silence.

Owns: :class:`PeerConnection`, :class:`LinkState`, :data:`Builder`. May import:
:mod:`erl_interop`.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any, Callable

from erl_interop import aio
from erl_interop.connection import MAX_PENDING_FRAGMENT_BYTES, Connection
from erl_interop.flags import DistFlags
from erl_interop.terms import Atom

if TYPE_CHECKING:
    from .distribution import Distribution

__all__ = ["Builder", "LinkState", "PeerConnection", "UP", "CONNECTING", "YIELDED", "SUPERSEDED", "CLOSED"]

#: builds a signal's (control tuple, payload) for the negotiated flags; a ``None`` control drops it
Builder = Callable[[DistFlags], tuple[tuple[Any, ...] | None, Any]]


class LinkState(enum.StrEnum):
    """The life of one :class:`PeerConnection` (``state``)."""

    #: dialling or handshaking; outgoing signals wait in ``queue``
    CONNECTING = "connecting"
    #: our dial lost a simultaneous connect; the peer's own connection is expected
    YIELDED = "yielded"
    #: handshake done, connected phase
    UP = "up"
    #: replaced by the peer's accepted connection (its queue moved there)
    SUPERSEDED = "superseded"
    #: gone; what is sent to it is dropped
    CLOSED = "closed"


# Module constants for the states: an Enum member lookup (``LinkState.UP``) costs five times
# a global's on Python 3.11, and the send path checks the state of every message.
UP, CONNECTING, YIELDED = LinkState.UP, LinkState.CONNECTING, LinkState.YIELDED
SUPERSEDED, CLOSED = LinkState.SUPERSEDED, LinkState.CLOSED


class PeerConnection:
    """One distribution link. Created in the ``connecting`` state by the first signal; once
    the handshake is done its connected phase is an :class:`erl_interop.aio.Link` (reader,
    ticker, coalescing writer)."""

    def __init__(self, dist: "Distribution", peer: Atom, *, outgoing: bool) -> None:
        self.dist = dist
        self.peer = peer
        self.outgoing = outgoing
        self.state = CONNECTING
        self.queue: list[Builder] = []
        self.flags = DistFlags(0)
        #: ``flags & SEND_SENDER``, computed once: an IntFlag ``&`` costs microseconds per send.
        self.send_sender = False
        self.conn: Connection | None = None
        self.link: aio.Link | None = None
        self.task: asyncio.Task[Any] | None = None
        self.peer_creation = 0
        self._closed = asyncio.get_running_loop().create_future()
        self._up = asyncio.get_running_loop().create_future()
        #: the error that ended an outgoing attempt before the link came up
        self.failure: BaseException | None = None
        #: a failed dial logs at DEBUG (discovery's attempts: discovery logs them itself)
        self.quiet = False

    def __repr__(self) -> str:
        return f"<PeerConnection {self.peer} {self.state}>"

    # -- sending ----------------------------------------------------------------------------
    def submit(self, build: Builder) -> None:
        if self.state is UP:
            control, payload = build(self.flags)
            if control is None:  # a builder that drops the signal for these flags
                return
            self.link.write(self.conn.send_terms(control, payload))  # type: ignore[union-attr]
        elif self.state is CONNECTING or self.state is YIELDED:
            self.queue.append(build)
        # closed: dropped, as a send on a dead link is on the BEAM

    # -- lifetime ---------------------------------------------------------------------------
    def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, complete: Any) -> None:
        """The handshake is done: switch to the connected phase and flush the queue."""
        self.flags = DistFlags(complete.flags)
        self.send_sender = bool(self.flags & DistFlags.SEND_SENDER)
        self.peer_creation = complete.peer_creation
        st = self.dist.settings
        self.conn = Connection(self.flags, initial=complete.trailing, max_message_size=st.max_message_size,
                               max_pending_fragment_bytes=max(2 * st.max_message_size, MAX_PENDING_FRAGMENT_BYTES))
        self.link = aio.Link(reader, writer, self.conn, st.tick_time, peer=str(self.peer), on_close=self.close,
                             busy_limit=st.busy_limit)
        self.state = UP
        queued, self.queue = self.queue, []
        for build in queued:
            self.submit(build)
        if not self._up.done():
            self._up.set_result(None)

    async def run(self) -> None:
        """Read and dispatch until the link ends; tick meanwhile (the link's own loop)."""
        assert self.link is not None
        await self.link.run(self.dist.handlers, self)

    async def settled(self) -> None:
        """Return once the link is up or closed (whichever comes first)."""
        await asyncio.wait([self._up, self._closed], return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        if self.state is CLOSED:
            return
        was_up = self.state is UP
        self.state = CLOSED
        self.queue.clear()
        if self.link is not None:
            self.link.close()  # flushes what is queued; its on_close comes back here: a no-op
        self.dist._connection_closed(self, was_up)
        if not self._closed.done():
            self._closed.set_result(None)
