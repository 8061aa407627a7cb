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

TLS (``inet_tls_dist``, docs/WIRE.md §7): given an ``ssl`` context, :func:`connect` and
:func:`start_server` run the TLS handshake on the TCP connection first (bounded by
``setup_timeout`` too), then the distribution handshake inside it, whose packets then have a
4-byte length instead of 2 (:class:`_Framed4`; :func:`accept` sees a TLS pair by itself). A
TLS failure is a ``HandshakeError("tls_handshake", reason, detail)`` whose detail names the
cause (the peer's certificate did not verify and why, the peer refused ours, the peer does not
speak TLS). The TLS server accepts by itself (:class:`TlsServer`) rather than through
``asyncio.start_server(ssl=...)``, which drops handshake failures silently.

:class:`Link` drives the connected phase that follows: it reads and feeds the connection,
dispatches its events, ticks (docs/WIRE.md §3.1: a frame at least every T/4, the link
dropped after T of read silence) and coalesces writes: every frame written in one turn of
the event loop goes out in one ``write`` (a socket write per frame tops out near 180k
frames/s from Python; batching is ~10x that, bench/dist_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl as _ssl
import struct
from typing import Any, Awaitable, Callable, Mapping, Sequence

from erl_interop.bounded import bounded_logger
from erl_interop.connection import TICK, BadMessage, Connection, ConnectionClosed, TickTimer
from erl_interop.epmd.client import port_please
from erl_interop.errors import DistProtocolError, HandshakeError
from erl_interop._events import NeedData
from erl_interop.flags import DEFAULT_FLAGS, DistFlags
from erl_interop.handshake import NEED_DATA, Handshake, HandshakeComplete, HandshakePolicy

__all__ = ["connect", "accept", "start_server", "Link", "DEFAULT_SETUP_TIMEOUT", "DIST_BUF_BUSY_LIMIT", "resolve_host", "TlsServer"]

log = bounded_logger(logging.getLogger(__name__))

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


async def _flush(hs: "Handshake | _Framed4", writer: asyncio.StreamWriter, timeout: float) -> None:
    out = hs.data_to_send()
    if out:
        writer.write(out)
        async with asyncio.timeout(max(timeout, 0.0)):
            await writer.drain()


class _Framed4:
    """The handshake machine as ``inet_tls_dist`` frames it: inside TLS the socket is
    ``{packet, 4}`` from the start, so every handshake packet has a 4-byte length where plain
    TCP has 2 (docs/WIRE.md §7). Incoming frames are handed to the machine one at a time, each
    with a 2-byte length, and what it queues goes out with 4-byte lengths; bytes read past
    the handshake's last packet stay the connection's (``trailing``), as they came."""

    def __init__(self, hs: Handshake) -> None:
        self.hs = hs
        self.role = hs.role
        self._in = bytearray()
        self._eof = False

    @property
    def step(self) -> str:
        return self.hs.step

    def receive_data(self, data: bytes) -> None:
        if data:
            self._in += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        out = self.hs.data_to_send()
        framed = bytearray()
        pos = 0
        while pos + 2 <= len(out):
            (n,) = struct.unpack_from(">H", out, pos)
            framed += struct.pack(">I", n) + out[pos + 2 : pos + 2 + n]
            pos += 2 + n
        return bytes(framed)

    def next_event(self) -> Any:
        while True:
            event = self.hs.next_event()
            if isinstance(event, HandshakeComplete):
                rest, self._in = bytes(self._in), bytearray()
                return dataclasses.replace(event, trailing=event.trailing + rest)
            if event is not NEED_DATA:
                return event
            if len(self._in) >= 4:
                (n,) = struct.unpack_from(">I", self._in)
                if n > 0xFFFF:
                    raise self._fail("oversized", f"handshake packet claims {n} bytes")
                if len(self._in) >= 4 + n:
                    body = bytes(self._in[4 : 4 + n])
                    del self._in[: 4 + n]
                    self.hs.receive_data(struct.pack(">H", n) + body)
                    continue
            if self._eof:
                self._eof = False
                self.hs.receive_data(b"")  # the machine names the step and the cause
                continue
            return NEED_DATA

    def _fail(self, reason: str, detail: str) -> HandshakeError:
        return HandshakeError(self.hs.step, reason, detail)

    def timed_out(self) -> HandshakeError:
        return self.hs.timed_out()


#: OpenSSL reason codes and what they mean for a distribution connection
_TLS_CAUSES = {
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (plain inet_tcp distribution?)",
    "HTTP_REQUEST": "the peer does not speak TLS",
    "UNEXPECTED_EOF_WHILE_READING": "the peer closed the connection during the TLS handshake",
    "PACKET_LENGTH_TOO_LONG": "the peer does not speak TLS (plain inet_tcp distribution?)",
    "RECORD_LAYER_FAILURE": "the peer does not speak TLS (plain inet_tcp distribution?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate (unknown CA)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer refused our certificate: it has expired",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the peer refused our certificate (unsupported certificate)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a certificate and we sent none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no certificate (fail_if_no_peer_cert)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer aborted the TLS handshake (our certificate is not valid for the name it dialled, "
                                     "it requires a certificate, or no cipher in common)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (versions)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (versions)",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version in common (versions)",
    "NO_SHARED_CIPHER": "no cipher suite in common (ciphers)",
    "TLSV1_ALERT_INTERNAL_ERROR": "the peer failed the TLS handshake (internal error)",
}


def _tls_failure(e: BaseException, where: str) -> HandshakeError:
    """A failed TLS handshake with ``where`` (``host:port``) as a ``HandshakeError`` naming the cause."""
    if isinstance(e, _ssl.SSLCertVerificationError):
        return HandshakeError("tls_handshake", "certificate_verify_failed",
                              f"TLS with {where}: the peer's certificate does not verify: {e.verify_message}")
    if isinstance(e, _ssl.SSLError):
        code = e.reason or type(e).__name__
        cause = _TLS_CAUSES.get(code, e.strerror or str(e))
        return HandshakeError("tls_handshake", code.lower(), f"TLS with {where}: {cause} [{code}]")
    if isinstance(e, TimeoutError) or (isinstance(e, ConnectionAbortedError) and "taking longer" in str(e)):
        return HandshakeError("tls_handshake", "timeout", f"TLS with {where}: the TLS handshake did not finish within "
                              "the setup time (a peer without TLS, plain inet_tcp distribution, waits silently for "
                              "the rest of what it takes for a handshake packet)")
    return HandshakeError("tls_handshake", "closed", f"TLS with {where}: the peer closed the connection during the TLS "
                          f"handshake (it may not run inet_tls distribution, or refused our certificate): {str(e) or type(e).__name__}")


def _set_sockopts(transport: Any, sockopts: Sequence[tuple[int, int, int]]) -> None:
    """``setsockopt`` each ``(level, option, value)`` on the transport's socket (best effort)."""
    if not sockopts:
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for level, option, value in sockopts:
        try:
            sock.setsockopt(level, option, value)
        except OSError as e:
            log.warning("setsockopt(%s, %s, %s) failed: %s", level, option, value, e)


async def _drive(
    hs: "Handshake | _Framed4", reader: asyncio.StreamReader, writer: asyncio.StreamWriter, setup_timeout: float
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
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    tls_check: Callable[[Any], str | None] | None = None,
    sockopts: Sequence[tuple[int, int, int]] = (),
    local_addr: tuple[str, int] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, HandshakeComplete]:
    """Dial ``peer_name`` and run the initiator handshake.

    ``host`` defaults to the host part of ``peer_name``; ``port`` defaults to what the EPMD on
    that host reports. Returns the open stream pair and the :class:`HandshakeComplete`.
    Raises :class:`HandshakeError` (``step="port_please"`` when EPMD does not know the name,
    ``reason="timeout"`` when a step exceeds ``setup_timeout``), ``EpmdError`` (EPMD refused,
    misbehaved or could not be reached), ``EpmdLocalError`` (a bad ``$ERL_EPMD_PORT``, an alive
    name EPMD cannot carry) or ``OSError``.

    ``ssl``: dial with TLS (``inet_tls_dist``); ``server_hostname`` is the SNI and the name the
    server's certificate is checked against when the context checks hostnames (default: the
    host part of ``peer_name``; ``""``: none). A TLS failure is
    ``HandshakeError("tls_handshake", ...)``; ``tls_check(ssl_object)`` may refuse the peer
    after the TLS handshake by returning why. ``sockopts`` are ``(level, option, value)`` for
    the socket; ``local_addr`` the address to dial from.
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
    if ssl is not None and server_hostname is None:
        server_hostname = peer_name.rpartition("@")[2]
    try:
        async with asyncio.timeout(setup_timeout):
            reader, writer = await asyncio.open_connection(addr, port, local_addr=local_addr)
    except TimeoutError:
        raise HandshakeError("connect", "timeout", f"{addr}:{port} did not accept in {setup_timeout}s") from None
    _set_sockopts(writer.transport, sockopts)
    if ssl is not None:
        try:
            async with asyncio.timeout(setup_timeout):
                await writer.start_tls(ssl, server_hostname=server_hostname or None, ssl_handshake_timeout=setup_timeout)
        except (OSError, TimeoutError, EOFError) as e:
            writer.transport.abort()
            raise _tls_failure(e, f"{peer_name} ({addr}:{port})") from None
        except ValueError as e:  # a context that checks host names, dialled without one
            writer.transport.abort()
            raise HandshakeError("tls_handshake", "bad_options", f"TLS with {peer_name}: {e}") from None
        except BaseException:
            writer.transport.abort()
            raise
        why = tls_check(writer.get_extra_info("ssl_object")) if tls_check is not None else None
        if why is not None:
            await _close(writer)
            raise HandshakeError("tls_handshake", "refused", f"TLS with {peer_name} ({addr}:{port}): {why}")
    complete = await _drive(_Framed4(hs) if ssl is not None else hs, reader, writer, setup_timeout)
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
    :class:`HandshakeError` is raised. On a TLS pair (``inet_tls_dist``) the handshake packets
    have 4-byte lengths (docs/WIRE.md §7).
    """
    hs = Handshake("acceptor", our_name, cookie, creation, flags=flags, policy=policy)
    tls = writer.get_extra_info("sslcontext") is not None
    return await _drive(_Framed4(hs) if tls else hs, reader, writer, setup_timeout)


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
    ssl: _ssl.SSLContext | None = None,
    tls_check: Callable[[Any], str | None] | None = None,
    sockopts: Sequence[tuple[int, int, int]] = (),
    backlog: int = 100,
    reuse_address: bool | None = None,
) -> "asyncio.Server | TlsServer":
    """Listen on ``host:port`` (0 = any free port; read it from ``server.sockets``), run
    :func:`accept` for each incoming connection, then await ``on_connected(reader, writer,
    complete)``. The writer is closed when ``on_connected`` returns. Handshake failures are
    logged and passed to ``on_error``; they never reach the server.

    ``creation`` may be a callable, read at each accept: a node listens first, then registers
    the port with EPMD, and only then learns its creation. ``handlers``, if given, holds the
    task of every connection being served (handshake included), so that the owner can cancel
    them when it stops: closing the server does not end the connections it accepted.

    ``ssl``: accept TLS only (``inet_tls_dist``): each connection's TLS handshake runs first,
    bounded by ``setup_timeout``; its failure (a peer without TLS, a certificate that does not
    verify) is a ``HandshakeError("tls_handshake", ...)`` logged and passed to ``on_error``
    like any other, and ``tls_check(ssl_object)`` may refuse the peer after it by returning
    why. ``sockopts`` (``(level, option, value)``) are set on every accepted socket.
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
            log.debug("%s: incoming handshake failed: %s", our_name, e)
            if on_error is not None:
                on_error(e)
            return
        try:
            await on_connected(reader, writer, complete)
        finally:
            await _close(writer)

    def failed(e: HandshakeError) -> None:
        log.debug("%s: incoming handshake failed: %s", our_name, e)
        if on_error is not None:
            on_error(e)

    if ssl is None:
        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _set_sockopts(writer.transport, sockopts)
            await handle(reader, writer)

        return await asyncio.start_server(plain, host, port, backlog=backlog, reuse_address=reuse_address)
    ctx = ssl
    loop = asyncio.get_running_loop()

    async def upgrade(conn: socket.socket, peer: Any) -> None:
        task = asyncio.current_task()
        if handlers is not None and task is not None:
            handlers.add(task)
            task.add_done_callback(handlers.discard)
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a peer"
        for level, option, value in sockopts:
            with contextlib.suppress(OSError):
                conn.setsockopt(level, option, value)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # The TLS layer owns the socket from the first byte: the peer's ClientHello
            # cannot reach anything else.
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=ctx,
                                                              ssl_handshake_timeout=setup_timeout)
        except (OSError, TimeoutError, EOFError) as e:
            conn.close()
            failed(_tls_failure(e, where))
            return
        except BaseException:  # cancelled: the owner is stopping
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        why = tls_check(writer.get_extra_info("ssl_object")) if tls_check is not None else None
        if why is not None:
            transport.abort()
            failed(HandshakeError("tls_handshake", "refused", f"TLS with {where}: {why}"))
            return
        await handle(reader, writer)

    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot listen on {host}:{port}: no address")
    family, type_, proto, _, addr = infos[0]
    lsock = socket.socket(family, type_, proto)
    try:
        if reuse_address is not False:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(addr)
        lsock.listen(backlog)
        lsock.setblocking(False)
    except OSError:
        lsock.close()
        raise
    return TlsServer(lsock, lambda conn, peer: loop.create_task(upgrade(conn, peer)))


class TlsServer(asyncio.AbstractServer):
    """What :func:`start_server` returns for TLS: a listening socket and its accept loop,
    which hands each connection to ``loop.connect_accepted_socket(ssl=...)``. (Neither
    ``asyncio.start_server(ssl=...)``, which drops handshake failures without a word, nor
    ``start_tls`` on an accepted stream, which may lose a ClientHello read before it, will do.)"""

    def __init__(self, sock: socket.socket, on_accept: Callable[[socket.socket, Any], Any]) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._accept(on_accept))

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._sock.fileno() >= 0 else ()

    async def _accept(self, on_accept: Callable[[socket.socket, Any], Any]) -> None:
        try:
            while True:
                try:
                    conn, peer = await self._loop.sock_accept(self._sock)
                except OSError as e:  # out of file descriptors, say: the server goes on
                    log.warning("accept on %s failed: %s", self._sock.getsockname(), e)
                    await asyncio.sleep(0.1)
                    continue
                on_accept(conn, peer)
        finally:
            self._sock.close()  # here, once the pending accept is cancelled

    def close(self) -> None:
        if not self._task.done():
            self._task.cancel()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._task.done()

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        await asyncio.wait([self._task])

    async def wait_closed(self) -> None:
        await asyncio.wait([self._task])


#: bytes asked of the socket per read in the connected phase
_LINK_READ_SIZE = 262144

#: a link's send buffer above which senders wait: OTP's ``dist_buf_busy_limit`` default, 1 MiB
#: (``erl +zdbbl 1024``; docs/WIRE.md §3.5)
DIST_BUF_BUSY_LIMIT = 1024 * 1024


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
        busy_limit: int = DIST_BUF_BUSY_LIMIT,
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
        #: bytes above which the link is busy (OTP's ``dist_buf_busy_limit``)
        self.busy_limit = busy_limit
        #: bytes written and not yet known to be on the socket: frames queued this turn plus
        #: what the transport still held after the last flush (an upper bound between flushes)
        self.pending = 0
        transport = writer.transport
        try:
            # the transport pauses (drain() waits) above the limit and resumes below half of it
            transport.set_write_buffer_limits(high=busy_limit, low=busy_limit // 2)
        except (AttributeError, NotImplementedError):
            pass

    # -- writing ----------------------------------------------------------------------------
    def write(self, frame: bytes) -> None:
        """Queue ``frame``; it goes out with the others of this turn of the event loop."""
        self._out.append(frame)
        self.pending += len(frame)
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
            log.debug("write to %s failed: %s", self.peer, e)  # a closed connection: as quiet as net_kernel
            self.close()
            return
        self.pending = self._transport_buffered()
        self.timer.on_data_sent(asyncio.get_running_loop().time())

    def _transport_buffered(self) -> int:
        try:
            return int(self.writer.transport.get_write_buffer_size())
        except (AttributeError, NotImplementedError, RuntimeError):
            return 0

    def buffered(self) -> int:
        """Bytes written to the link and not yet handed to the socket (now, not the bound)."""
        return sum(map(len, self._out)) + self._transport_buffered()

    @property
    def busy(self) -> bool:
        """More than ``busy_limit`` bytes may wait for the socket: senders should
        :meth:`wait_writable` (OTP suspends a process that sends on a busy link)."""
        return self.pending > self.busy_limit

    async def wait_writable(self) -> None:
        """Return once the link holds no more than ``busy_limit`` bytes (or is closed)."""
        while not self.closed:
            if self._out:
                self._flush()  # what this turn queued goes to the transport now
            self.pending = self._transport_buffered()
            if self.pending <= self.busy_limit:
                return
            try:
                await self.writer.drain()  # the transport resumed: below half the limit
            except (ConnectionError, RuntimeError):
                return

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
            log.debug("link to %s lost: %s", self.peer, e)  # as quiet as net_kernel (nodedown tells)
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
        if self._transport_buffered() > self.busy_limit:
            # a peer that stopped reading would keep the buffer alive as long as the socket:
            # drop it (the link is gone for us either way)
            self.writer.transport.abort()
        else:
            self.writer.close()
        self.pending = 0
        if self.on_close is not None:
            self.on_close()
