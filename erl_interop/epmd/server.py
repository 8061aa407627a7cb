"""asyncio EPMD server, behaving as OTP 25's ``epmd`` does (erts/epmd/src/epmd_srv.c).

Theory of operation
-------------------
Every accepted connection carries exactly one request, parsed by :class:`.proto.RequestParser`
(a client that sends a bad, oversized or truncated packet, or nothing within ``packet_timeout``,
is logged and closed; the others are not affected). Then:

- ALIVE2 registers the node and *keeps* the connection: the registration lives exactly as long
  as that socket. Anything arriving on it, or its closing, unregisters the name (as epmd does).
- PORT_PLEASE2, NAMES, DUMP are answered, then the connection is closed.
- KILL and STOP are the admin requests. Without ``relaxed_command_check`` (epmd's default),
  KILL answers ``NO`` while any node is registered and ``OK`` (then the server stops) otherwise;
  STOP is refused by closing without an answer. With it, KILL always stops the server and STOP
  unregisters the named node.
- ALIVE2, DUMP, KILL and STOP are only accepted from local peers (loopback, or the address
  the server is reached on); epmd closes others without an answer, and so does this server.

Creations (docs/WIRE.md §1.5): as epmd, each name has its own 32-bit counter that goes up by
one each time the name registers again, skipping 0..3; names seen before are remembered (up
to :data:`MAX_UNREG_COUNT`) after they unregister so that their next creation differs. A name
never seen gets the next value of a server-wide counter that starts at a random value (epmd
seeds it with the clock). A node asking with HighestVer < 6 gets the 16-bit ``counter % 3 + 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import socket
from collections import OrderedDict
from dataclasses import dataclass

from erl_interop.bounded import bounded_logger
from erl_interop.errors import EpmdError

from .proto import (
    EPMD_PORT,
    NEED_DATA,
    Alive2Request,
    DumpRequest,
    KillRequest,
    NamesRequest,
    NodeInfo,
    PortPlease2Request,
    Request,
    RequestParser,
    StopRequest,
    encode_alive2_resp,
    encode_dump_resp,
    encode_names_resp,
    encode_port2_resp,
)

__all__ = ["EpmdServer", "MAX_UNREG_COUNT", "PACKET_TIMEOUT"]

log = bounded_logger(logging.getLogger("erl_interop.epmd"))

MAX_UNREG_COUNT = 1000
"""How many unregistered names keep their creation counter (epmd's MAX_UNREG_COUNT)."""
PACKET_TIMEOUT = 60.0
"""Seconds a client gets to send its request (epmd's default ``-packet_timeout``)."""
_CREATION_FLOOR = 4  # epmd's bump_creation never hands out 0..3 as a 32-bit creation
_READ_SIZE = 4096


@dataclass(slots=True)
class _Entry:
    node: NodeInfo
    counter: int
    conn_id: int
    task: asyncio.Task[None] | None  # the connection handler holding the registration socket


def _bump(counter: int) -> int:
    counter = (counter + 1) & 0xFFFFFFFF
    return counter if counter >= _CREATION_FLOOR else _CREATION_FLOOR


class EpmdServer:
    """An EPMD on ``address``:``port`` (``port=0`` picks a free one; see :attr:`port`).

    >>> server = EpmdServer(port=0)            # doctest: +SKIP
    >>> await server.start()                   # doctest: +SKIP
    >>> await server.serve_until_stopped()     # doctest: +SKIP
    """

    def __init__(
        self,
        port: int = EPMD_PORT,
        address: str | list[str] = "127.0.0.1",
        *,
        relaxed_command_check: bool = False,
        packet_timeout: float = PACKET_TIMEOUT,
    ) -> None:
        self._requested_port = port
        self.addresses = [address] if isinstance(address, str) else list(address)
        self.relaxed_command_check = relaxed_command_check
        self.packet_timeout = packet_timeout
        self._server: asyncio.Server | None = None
        self._registered: dict[str, _Entry] = {}  # insertion order = registration order
        self._unregistered: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._next_counter = random.randrange(_CREATION_FLOOR, 1 << 31)
        self._conn_ids = itertools.count(1)
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    # -- lifetime -------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start accepting. Raises ``OSError`` if the port is taken."""
        self._server = await asyncio.start_server(
            self._on_connect, self.addresses, self._requested_port, reuse_address=True
        )
        log.info("epmd listening on %s port %d", ",".join(self.addresses), self.port)

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def serve_until_stopped(self) -> None:
        """Wait until the server is closed (by :meth:`close` or an accepted KILL)."""
        await self._stopped.wait()

    def close(self) -> None:
        """Stop listening and drop every connection (which unregisters every node)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        self._stopped.set()

    async def aclose(self) -> None:
        self.close()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> "EpmdServer":
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- state, for tests and the DUMP request -------------------------------------------
    def registered(self) -> list[NodeInfo]:
        """Registered nodes, most recent first (the order of epmd's NAMES reply)."""
        return [e.node for e in reversed(self._registered.values())]

    # -- connections ----------------------------------------------------------------------
    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each connection gets a task owned by the server so close() can cancel it.
        conn_id = next(self._conn_ids)
        task = asyncio.get_running_loop().create_task(self._handle(conn_id, reader, writer), name=f"epmd-conn-{conn_id}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            request = await self._read_request(reader, conn_id, peer)
            if request is not None:
                await self._dispatch(request, conn_id, peer, reader, writer)
        except OSError as e:
            log.info("connection %d from %s failed: %s", conn_id, peer, e)
        except Exception:  # a bug here must not take the other connections down
            log.exception("internal error on connection %d from %s", conn_id, peer)
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader, conn_id: int, peer: object) -> Request | None:
        parser = RequestParser()
        try:
            async with asyncio.timeout(self.packet_timeout):
                while True:
                    request = parser.next_event()
                    if request is not NEED_DATA:
                        return request
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        # Not parser.receive_data(b""): nothing is left to parse, and the
                        # log says "closed", not "bad request".
                        log.warning("connection %d from %s closed before a complete request", conn_id, peer)
                        return None
                    parser.receive_data(data)
        except EpmdError as e:
            log.warning("bad request on connection %d from %s, closing it: %s", conn_id, peer, e)
        except TimeoutError:
            log.warning("connection %d from %s sent no complete request in %ss", conn_id, peer, self.packet_timeout)
        return None

    def _is_local(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")
        if sock is None or not peer:
            return False
        try:
            addr = ipaddress.ip_address(peer[0].split("%", 1)[0])
        except ValueError:
            return bool(sock.family == getattr(socket, "AF_UNIX", None))
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.is_loopback:
            return True
        local = writer.get_extra_info("sockname")
        return bool(local) and local[0] == peer[0]

    async def _dispatch(
        self,
        request: Request,
        conn_id: int,
        peer: object,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if isinstance(request, (Alive2Request, DumpRequest, KillRequest, StopRequest)) and not self._is_local(writer):
            log.warning("%s from non-local address %s refused", type(request).__name__, peer)
            return
        if isinstance(request, Alive2Request):
            await self._alive2(request, conn_id, reader, writer)
        elif isinstance(request, PortPlease2Request):
            entry = self._registered.get(request.name)
            writer.write(encode_port2_resp(entry.node if entry else None))
            await writer.drain()
        elif isinstance(request, NamesRequest):
            nodes = [(e.node.name, e.node.port) for e in reversed(self._registered.values())]
            writer.write(encode_names_resp(self.port, nodes))
            await writer.drain()
        elif isinstance(request, DumpRequest):
            active = [(e.node.name, e.node.port, e.conn_id) for e in reversed(self._registered.values())]
            unused = [(e.node.name, e.node.port, e.conn_id) for e in self._unregistered.values()]
            writer.write(encode_dump_resp(self.port, active, unused))
            await writer.drain()
        elif isinstance(request, KillRequest):
            await self._kill(writer)
        elif isinstance(request, StopRequest):
            await self._stop(request, writer)

    # -- requests -------------------------------------------------------------------------
    async def _alive2(
        self, request: Alive2Request, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        node = request.node
        extended = node.high >= 6
        refusal = request.refusal
        if refusal is None and node.name in self._registered:
            refusal = "node name already occupied"
        if refusal is not None:
            log.warning("refusing ALIVE2 for %r: %s", node.name, refusal)
            # epmd answers result 1 with creation 99 (docs/WIRE.md §1.3).
            writer.write(encode_alive2_resp(1, 99, extended=extended))
            await writer.drain()
            return  # epmd would keep the socket; the client closes it anyway, so we do it here
        old = self._unregistered.pop(node.name, None)
        if old is not None:
            counter = _bump(old.counter)
        else:
            counter = self._next_counter
            self._next_counter = _bump(self._next_counter)
        entry = _Entry(node, counter, conn_id, asyncio.current_task())
        self._registered[node.name] = entry
        creation = counter if extended else counter % 3 + 1
        log.info("registered %r at port %d, creation %d (connection %d)", node.name, node.port, creation, conn_id)
        try:
            writer.write(encode_alive2_resp(0, creation, extended=extended))
            await writer.drain()
            # The registration lives as long as this socket. epmd unregisters on EOF and on
            # "got more than expected on ALIVE socket" alike.
            data = await reader.read(_READ_SIZE)
            if data:
                log.warning("unexpected %d bytes on the registration socket of %r; unregistering", len(data), node.name)
        finally:
            self._unregister(entry)

    def _unregister(self, entry: _Entry) -> None:
        name = entry.node.name
        if self._registered.get(name) is not entry:
            return
        del self._registered[name]
        entry.task = None
        self._unregistered[name] = entry
        while len(self._unregistered) > MAX_UNREG_COUNT:
            self._unregistered.popitem(last=False)
        log.info("unregistered %r (port %d)", name, entry.node.port)

    async def _kill(self, writer: asyncio.StreamWriter) -> None:
        if not self.relaxed_command_check and self._registered:
            log.warning("KILL refused: nodes are registered (no relaxed command check)")
            writer.write(b"NO")
            await writer.drain()
            return
        writer.write(b"OK")
        await writer.drain()
        log.warning("got KILL, stopping")
        asyncio.get_running_loop().call_soon(self.close)

    async def _stop(self, request: StopRequest, writer: asyncio.StreamWriter) -> None:
        if not self.relaxed_command_check:
            log.warning("STOP refused: no relaxed command check")
            return
        if not request.name:
            log.warning("STOP without a node name")
            return
        entry = self._registered.get(request.name)
        if entry is None:
            # epmd answers NOEXIST and then, falling through, STOPPED as well.
            writer.write(b"NOEXIST")
        else:
            task = entry.task
            self._unregister(entry)
            if task is not None:
                task.cancel()  # closes that node's registration socket
        writer.write(b"STOPPED")
        await writer.drain()
