"""Thin asyncio drivers for the sans-IO :class:`~erl_interop.handshake.Handshake` and the
connected phase (:class:`Link`, over :class:`~erl_interop.connection.Connection`).

Theory of operation
-------------------
:func:`connect` dials a node (asking EPMD for its port when none is given) and runs the
initiator side; :func:`accept` runs the acceptor side on a stream pair that a server handed
us; :func:`start_server` is ``asyncio.start_server`` plus :func:`accept`. All three share
one loop (:func:`_drive`): write what the machine queued, ask it for the next event, read
more bytes when it says :data:`~erl_interop.handshake.NEED_DATA`.

Time lives here, not in the machine. ``setup_timeout`` is OTP's ``net_setuptime`` (7 s,
docs/WIRE.md §2.1): like ``dist_util``'s setup timer, which is reset after each step, it bounds
every wait for the peer's *next step*, so a peer that stalls (or dribbles bytes without
finishing a packet) fails with ``HandshakeError(step, "timeout")``.

On failure the driver flushes what the machine still queued (``snot_allowed``, ``snok``),
closes the socket and raises the :class:`~erl_interop.errors.HandshakeError`. On success the
stream pair is handed back open; ``HandshakeComplete.trailing`` holds bytes already read that
belong to the connected phase (4-byte framing, docs/WIRE.md §3.1).

:class:`Link` drives the connected phase that follows: it reads and feeds the connection,
dispatches its events, ticks (docs/WIRE.md §3.1: a frame at least every T/4, the link
dropped after T of read silence) and coalesces writes: every frame written in one turn of
the event loop goes out in one ``write`` (a socket write per frame tops out near 180k
frames/s from Python; batching is ~10x that, bench/dist_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable, Mapping

from erl_interop.connection import TICK, BadMessage, Connection, ConnectionClosed, TickTimer
from erl_interop.epmd.client import port_please
from erl_interop.errors import DistProtocolError, HandshakeError
from erl_interop._events import NeedData
from erl_interop.flags import DEFAULT_FLAGS, DistFlags
from erl_interop.handshake import NEED_DATA, Handshake, HandshakeComplete, HandshakePolicy

__all__ = ["connect", "accept", "start_server", "Link", "DEFAULT_SETUP_TIMEOUT", "resolve_host"]

log = logging.getLogger(__name__)

#: OTP's default ``net_setuptime`` in seconds (docs/WIRE.md §2.1).
DEFAULT_SETUP_TIMEOUT = 7.0
#: Read size while handshaking; handshake packets are at most MAX_PACKET + 2 bytes.
_READ_SIZE = 4096
#: How long a failing side may spend flushing its last status before closing.
_FLUSH_TIMEOUT = 1.0

ConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter, HandshakeComplete], Awaitable[None]]


def resolve_host(node_or_host: str) -> str:
    """The host to dial for ``alive@host`` (or a bare host); ``localhost`` -> ``127.0.0.1``."""
    host = node_or_host.rpartition("@")[2]
    return "127.0.0.1" if host == "localhost" else host


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        async with asyncio.timeout(_FLUSH_TIMEOUT):
            await writer.wait_closed()


async def _flush(hs: Handshake, writer: asyncio.StreamWriter, timeout: float) -> None:
    out = hs.data_to_send()
    if out:
        writer.write(out)
        async with asyncio.timeout(max(timeout, 0.0)):
            await writer.drain()


async def _drive(
    hs: Handshake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, setup_timeout: float
) -> HandshakeComplete:
    """Run ``hs`` over the stream pair until it completes; close the writer on any failure."""
    loop = asyncio.get_running_loop()
    step = hs.step
    deadline = loop.time() + setup_timeout
    try:
        while True:
            try:
                event = hs.next_event()
            except HandshakeError:
                # best effort: the peer should see our refusal status before the close
                with contextlib.suppress(OSError, TimeoutError):
                    await _flush(hs, writer, _FLUSH_TIMEOUT)
                raise
            if hs.step != step:  # a step completed: reset the setup timer (dist_util:reset_timer)
                step = hs.step
                deadline = loop.time() + setup_timeout
            try:
                await _flush(hs, writer, deadline - loop.time())
            except TimeoutError:
                raise hs.timed_out() from None
            except OSError as e:
                if isinstance(event, HandshakeComplete):
                    raise HandshakeError("send_challenge_ack", "closed", f"peer went away: {e}") from None
                hs.receive_data(b"")  # the peer is gone; the machine names the step
                continue
            if isinstance(event, HandshakeComplete):
                return event
            if event is NEED_DATA:
                try:
                    async with asyncio.timeout(deadline - loop.time()):
                        data = await reader.read(_READ_SIZE)
                except TimeoutError:
                    raise hs.timed_out() from None
                except OSError:
                    data = b""
                hs.receive_data(data)
            # other events (NameReceived, StatusReceived, ChallengeReceived) are informational
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("handshake %s: %r", hs.role, event)
    except BaseException:
        await _close(writer)
        raise


async def connect(
    our_name: str,
    peer_name: str,
    cookie: str | bytes,
    creation: int,
    *,
    flags: DistFlags = DEFAULT_FLAGS,
    host: str | None = None,
    port: int | None = None,
    policy: HandshakePolicy | None = None,
    epmd_port: int | None = None,
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, HandshakeComplete]:
    """Dial ``peer_name`` and run the initiator handshake.

    ``host`` defaults to the host part of ``peer_name``; ``port`` defaults to what the EPMD on
    that host reports. Returns the open stream pair and the :class:`HandshakeComplete`.
    Raises :class:`HandshakeError` (``step="port_please"`` when EPMD does not know the name,
    ``reason="timeout"`` when a step exceeds ``setup_timeout``), ``EpmdError`` (EPMD refused,
    misbehaved or could not be reached), ``EpmdLocalError`` (a bad ``$ERL_EPMD_PORT``, an alive
    name EPMD cannot carry) or ``OSError``.
    """
    hs = Handshake("initiator", our_name, cookie, creation, flags=flags, peer_name=peer_name, policy=policy)
    addr = resolve_host(host if host is not None else peer_name)
    if port is None:
        alive = peer_name.partition("@")[0]
        try:
            info = await port_please(alive, host=addr, epmd_port=epmd_port, timeout=setup_timeout)
        except TimeoutError:
            raise HandshakeError("port_please", "timeout", f"epmd at {addr} did not answer") from None
        if info is None:
            raise HandshakeError("port_please", "not_registered", f"{alive!r} is not registered with epmd at {addr}")
        port = info.port
    try:
        async with asyncio.timeout(setup_timeout):
            reader, writer = await asyncio.open_connection(addr, port)
    except TimeoutError:
        raise HandshakeError("connect", "timeout", f"{addr}:{port} did not accept in {setup_timeout}s") from None
    complete = await _drive(hs, reader, writer, setup_timeout)
    return reader, writer, complete


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    our_name: str,
    cookie: str | bytes,
    creation: int,
    *,
    flags: DistFlags = DEFAULT_FLAGS,
    policy: HandshakePolicy | None = None,
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT,
) -> HandshakeComplete:
    """Run the acceptor handshake on an accepted stream pair.

    On success the pair stays open for the connected phase; on failure it is closed and the
    :class:`HandshakeError` is raised.
    """
    hs = Handshake("acceptor", our_name, cookie, creation, flags=flags, policy=policy)
    return await _drive(hs, reader, writer, setup_timeout)


async def start_server(
    our_name: str,
    cookie: str | bytes,
    creation: int | Callable[[], int],
    on_connected: ConnectedCallback,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    flags: DistFlags = DEFAULT_FLAGS,
    policy: HandshakePolicy | None = None,
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT,
    on_error: Callable[[HandshakeError], None] | None = None,
    handlers: set["asyncio.Task[Any]"] | None = None,
) -> asyncio.Server:
    """Listen on ``host:port`` (0 = any free port; read it from ``server.sockets``), run
    :func:`accept` for each incoming connection, then await ``on_connected(reader, writer,
    complete)``. The writer is closed when ``on_connected`` returns. Handshake failures are
    logged and passed to ``on_error``; they never reach the server.

    ``creation`` may be a callable, read at each accept: a node listens first, then registers
    the port with EPMD, and only then learns its creation. ``handlers``, if given, holds the
    task of every connection being served (handshake included), so that the owner can cancel
    them when it stops: closing the server does not end the connections it accepted.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if handlers is not None and task is not None:
            handlers.add(task)
            task.add_done_callback(handlers.discard)
        try:
            await serve(reader, writer)
        except asyncio.CancelledError:
            # The server's owner is stopping. This task belongs to asyncio's server, whose
            # done-callback on Python 3.11 logs a cancelled task as an error with a traceback
            # (3.12 checks task.cancelled() first): end it normally, the connection closed.
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            current = creation() if callable(creation) else creation
            complete = await accept(
                reader, writer, our_name, cookie, current, flags=flags, policy=policy, setup_timeout=setup_timeout
            )
        except HandshakeError as e:
            log.info("%s: incoming handshake failed: %s", our_name, e)
            if on_error is not None:
                on_error(e)
            return
        try:
            await on_connected(reader, writer, complete)
        finally:
            await _close(writer)

    return await asyncio.start_server(handle, host, port)


#: bytes asked of the socket per read in the connected phase
_LINK_READ_SIZE = 262144


class Link:
    """The connected phase of one distribution connection on asyncio.

    It owns the stream pair, the sans-IO ``conn`` and a :class:`TickTimer`.

    - :meth:`write` queues a frame; every frame written in one turn of the event loop goes
      out in one ``write``.
    - :meth:`run` reads until the link ends. For each event of the connection it calls
      ``handlers[type(event)](target, event)``; ticks are handled here, bad messages are
      logged and the link kept, but a handler that raises
      :class:`~erl_interop.errors.DistProtocolError` (an invalid message) drops the link. It returns when the peer closes, on a protocol or socket
      error, on a tick timeout, or when :meth:`close` is called (events already read are
      then dropped). A ticker task runs meanwhile and is cancelled when it returns.
    - :meth:`close` flushes what is queued, closes the writer and calls ``on_close`` once.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: Connection,
        tick_time: float,
        *,
        peer: str = "",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.peer = peer
        self.on_close = on_close
        self.closed = False
        self.timer = TickTimer(tick_time, now=asyncio.get_running_loop().time())
        self._out: list[bytes] = []
        self._flush_scheduled = False

    # -- writing ----------------------------------------------------------------------------
    def write(self, frame: bytes) -> None:
        """Queue ``frame``; it goes out with the others of this turn of the event loop."""
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.closed:
            self._out.clear()
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError) as e:
            log.info("write to %s failed: %s", self.peer, e)
            self.close()
            return
        self.timer.on_data_sent(asyncio.get_running_loop().time())

    # -- reading ----------------------------------------------------------------------------
    async def run(self, handlers: Mapping[type, Callable[[Any, Any], None]], target: Any) -> None:
        """Read and dispatch until the link ends (see the class docstring); then close it."""
        loop = asyncio.get_running_loop()
        ticker = loop.create_task(self._tick_loop())
        conn = self.conn
        timer = self.timer
        reader = self.reader
        try:
            while True:
                while True:
                    ev = conn.next_event()
                    # Control messages first: they are nearly every event, and none of the
                    # other event types has a handler.
                    h = handlers.get(type(ev))
                    if h is not None:
                        try:
                            h(target, ev)
                        except DistProtocolError:
                            raise  # the handler found the message invalid: drop the link
                        except Exception:
                            log.exception("error handling %r from %s", ev, self.peer)
                        if self.closed:
                            return  # closed meanwhile: frames already read are stale
                        continue
                    if type(ev) is NeedData:
                        break
                    if ev is TICK:
                        continue
                    if type(ev) is BadMessage:
                        log.warning("bad message from %s (ignored, link kept): %s", self.peer, ev.error)
                        continue
                    if type(ev) is ConnectionClosed:
                        return
                    log.info("ignored control message from %s: %r", self.peer, ev)
                data = await reader.read(_LINK_READ_SIZE)
                if self.closed:
                    return
                timer.on_data_received(loop.time())
                conn.receive_data(data)
                # b"" (the peer closed): the events still buffered are drained, then
                # ConnectionClosed ends the loop.
        except DistProtocolError as e:
            log.error("protocol error on the link to %s, dropping it: %s", self.peer, e)
        except (ConnectionError, OSError) as e:
            log.info("link to %s lost: %s", self.peer, e)
        finally:
            ticker.cancel()
            self.close()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        timer = self.timer
        while not self.closed:
            await asyncio.sleep(max(0.0, timer.next_deadline() - loop.time()) + 0.001)
            what = timer.poll(loop.time())
            if what == "timeout":
                log.warning("net_tick_timeout: %s said nothing for %ss; dropping the link", self.peer, timer.tick_time)
                self.close()
                return
            if what == "send_tick":
                self.write(self.conn.tick())
                timer.on_data_sent(loop.time())

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Flush what is queued, close the writer, call ``on_close``; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._out:
            try:
                self.writer.write(b"".join(self._out))
            except Exception:
                pass
            self._out.clear()
        self.writer.close()
        if self.on_close is not None:
            self.on_close()
