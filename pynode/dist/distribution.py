"""Distribution: the node table, one connection per peer, and the control-message pump.

Theory of operation
-------------------
:class:`Distribution` listens for peers, registers with EPMD (starting pynode's own EPMD
when none answers) and keeps at most one :class:`PeerConnection` per peer node.

A connection is made on demand by the first signal addressed to a node. Until the
handshake completes, outgoing signals wait in the connection's queue as small builders
(``flags -> (control, payload)``), because their encoding depends on the negotiated flags
(EXIT_PAYLOAD, UNLINK_ID, ALIAS, SEND_SENDER). If the connection cannot be set up, the
queue is dropped and the node turns links and monitors to that peer into
``noconnection``, as the BEAM does.

Simultaneous connects follow ``net_kernel``: when a peer dials us while we dial it, the
node with the greater name keeps its own attempt (we answer ``nok``), otherwise we drop
ours (``ok_simultaneous``) and its queue moves to the accepted connection. A peer that
dials while we think we are connected gets ``alive``.

Writes are coalesced: every frame produced in one turn of the event loop goes out in one
``write`` (one socket write per frame tops out near 180k frames/s from Python; batching
is ~10x that: bench/dist_bench.py). Ticks: a frame (or a tick) at least every T/4; the
link is dropped after T of read silence.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, Callable

from erl_interop import aio
from erl_interop.epmd.client import ensure_epmd, register
from erl_interop.handshake import Status
from erl_interop.connection import Connection
from erl_interop import control as C
from erl_interop.control import MISSING
from erl_interop.errors import DistProtocolError, EpmdError, HandshakeError, LocalProtocolError
from erl_interop.flags import DEFAULT_FLAGS, DistFlags
from erl_interop.terms import Atom, Pid, Reference

from ..core import NOCONNECTION, Process, Runtime
from ..errors import RpcError

#: what the node does with a SPAWN_REQUEST (``erpc``/``rpc:call`` into this node): the rpc
#: server of :mod:`pynode.otp.rpc`, handed in by the composition root (:mod:`pynode.node`)
SpawnHandler = Callable[[Runtime, Any], None]

__all__ = ["Distribution", "LinkState", "PeerConnection", "SpawnHandler"]

log = logging.getLogger("pynode.dist")

EMPTY = Atom("")
#: control message tags (docs/WIRE.md §4.2), named once from erl_interop.control
_T_LINK = C.Link.TAG
_T_SEND = C.Send.TAG
_T_EXIT = C.Exit.TAG
_T_UNLINK = C.Unlink.TAG
_T_REG_SEND = C.RegSend.TAG
_T_EXIT2 = C.Exit2.TAG
_T_MONITOR_P = C.MonitorP.TAG
_T_DEMONITOR_P = C.DemonitorP.TAG
_T_MONITOR_P_EXIT = C.MonitorPExit.TAG
_T_SEND_SENDER = C.SendSender.TAG
_T_PAYLOAD_EXIT = C.PayloadExit.TAG
_T_PAYLOAD_EXIT2 = C.PayloadExit2.TAG
_T_PAYLOAD_MONITOR_P_EXIT = C.PayloadMonitorPExit.TAG
_T_SPAWN_REQUEST = C.SpawnRequest.TAG
_T_SPAWN_REPLY = C.SpawnReply.TAG
_T_ALIAS_SEND = C.AliasSend.TAG
_T_UNLINK_ID = C.UnlinkId.TAG
_T_UNLINK_ID_ACK = C.UnlinkIdAck.TAG
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
        self.conn = Connection(self.flags, initial=complete.trailing)
        self.link = aio.Link(reader, writer, self.conn, self.dist.node.tick_time, peer=str(self.peer), on_close=self.close)
        self.state = UP
        queued, self.queue = self.queue, []
        for build in queued:
            self.submit(build)
        if not self._up.done():
            self._up.set_result(None)

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Read and dispatch until the link ends; tick meanwhile (the link's own loop)."""
        assert self.link is not None
        await self.link.run(self.dist.handlers, self)

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


class Distribution:
    """The node's view of the network. Created and started by :meth:`Node.start`."""

    def __init__(self, node: Any, spawn_handler: SpawnHandler | None = None) -> None:
        self.node = node
        self.spawn_handler = spawn_handler
        self.conns: dict[Atom, PeerConnection] = {}
        base = DistFlags(node.dist_flags) if node.dist_flags is not None else DEFAULT_FLAGS
        self.flags = base if node.hidden else base | DistFlags.PUBLISHED
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.registration: Any = None
        self._unlink_ids = 0
        self._spawn_waiters: dict[Reference, Process] = {}
        self._anon: Pid | None = None
        #: set by stop(): no new connections (signals to other nodes are dropped)
        self.stopped = False
        #: control message type -> bound handler ``(connection, message)``, for the links' loops
        self.handlers: dict[type, Callable[[Any, Any], None]] = {
            t: getattr(self, f.__name__) for t, f in _HANDLERS.items()
        }
        #: the tasks serving accepted connections (incoming handshakes included): stop() ends them
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- start / stop -----------------------------------------------------------------------
    async def start(self) -> None:


        node = self.node
        self.server = await aio.start_server(
            node.name,
            node.cookie,
            lambda: node.creation,
            self._on_incoming,
            host=node.listen_host,
            port=node.listen_port,
            flags=self.flags,
            policy=self,
            setup_timeout=node.setup_timeout,
            on_error=self._on_handshake_error,
            handlers=self._handlers,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        alive = node.name.split("@", 1)[0]
        await ensure_epmd(node.epmd_port)
        try:
            self.registration = await register(alive, self.port, epmd_port=node.epmd_port)
        except EpmdError as e:
            self.server.close()
            raise EpmdError(f"could not register {alive!r} with epmd: {e} (is another node using this name?)") from e
        node.creation = self.registration.creation

    def _on_handshake_error(self, e: HandshakeError) -> None:
        # 'nok' is us winning a simultaneous connect (net_kernel's rule), not a refusal.
        level = logging.DEBUG if e.reason == "nok" else logging.WARNING
        log.log(level, "%s refused an incoming connection: %s", self.node.name, e)

    async def stop(self) -> None:
        self.stopped = True
        for c in list(self.conns.values()):
            c.close()
        if self.server is not None:
            self.server.close()
        pending = [t for t in self._handlers if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        if self.registration is not None:
            r = self.registration.close()
            if asyncio.iscoroutine(r):
                await r
        await asyncio.sleep(0)

    def connected_nodes(self) -> list[Atom]:
        return [n for n, c in self.conns.items() if c.state is UP]

    # -- handshake policy (erl_interop.handshake.HandshakePolicy) ---------------------------
    def accept_pending(self, peer_name: str, peer_flags: DistFlags, peer_creation: int) -> Status:
        peer = Atom(peer_name)
        c = self.conns.get(peer)
        if c is None or c.state is CLOSED:
            return "ok"
        if c.state is UP:
            return "alive"
        # Both sides are dialling: the greater name's attempt wins (net_kernel).
        if self.node.name > peer:
            return "nok"
        return "ok_simultaneous"

    def answer_alive(self, peer_name: str) -> bool:
        return True

    # -- connections ------------------------------------------------------------------------
    def _conn(self, peer: Atom) -> PeerConnection:
        c = self.conns.get(peer)
        if c is not None and c.state is not CLOSED:
            return c
        c = PeerConnection(self, peer, outgoing=True)
        if self.stopped:
            c.state = CLOSED  # a stopped node dials nobody; what is sent to it is dropped
            return c
        self.conns[peer] = c
        c.task = self.node.create_task(self._dial(c), name=f"pynode dial {peer}")
        return c

    def ensure_connected_soon(self, peer: Atom) -> None:
        if peer != self.node.name:
            self._conn(peer)

    async def connect(self, peer: str, timeout: float | None = None) -> bool:
        """Connect to ``peer`` (``net_kernel:connect_node``); True when the link is up. The
        attempt is bounded by the setup time; ``timeout`` bounds the wait for it too."""
        if timeout is None:
            up, _ = await self.attempt(peer)
            return up
        try:
            async with asyncio.timeout(timeout):
                up, _ = await self.attempt(peer)
        except TimeoutError:
            return False
        return up

    async def attempt(self, peer: str, quiet: bool = False) -> tuple[bool, BaseException | None]:
        """One connection attempt (for discovery): ``(True, None)`` once the link is up,
        ``(False, error)`` when it failed, ``error`` being what ended it (``None`` when the
        dial yielded to a simultaneous connect that never arrived). ``quiet``: a failure is
        logged at DEBUG only (the caller logs it)."""
        peer_a = Atom(peer)
        if peer_a == self.node.name:
            return True, None
        c = self._conn(peer_a)
        if quiet and c.state is CONNECTING:
            c.quiet = True
        while True:
            if c.state is UP:
                return True, None
            cur = self.conns.get(peer_a)
            if cur is not None and cur is not c and cur.state is not CLOSED:
                c = cur  # the peer's own attempt took over (simultaneous connect)
                continue
            if c.state in (CLOSED, SUPERSEDED):
                return False, c.failure
            await asyncio.wait([c._up, c._closed], return_when=asyncio.FIRST_COMPLETED)

    async def _dial(self, c: PeerConnection) -> None:
        node = self.node
        try:
            reader, writer, complete = await aio.connect(
                node.name,
                c.peer,
                node.cookie,
                node.creation,
                flags=self.flags,
                policy=self,
                epmd_port=node.epmd_port,
                setup_timeout=node.setup_timeout,
            )
        except HandshakeError as e:
            if e.reason in ("nok", "ok_simultaneous") or str(e.reason).startswith("nok"):
                # The peer's own attempt wins; its connection will arrive on our listener
                # and take over our queue.
                log.debug("dial to %s yielded to the peer's attempt: %s", c.peer, e)
                if self.conns.get(c.peer) is c:
                    c.state = YIELDED
                    # OTP fails the signals of a connect that never completes; so do we,
                    # if the peer's own attempt has not arrived within the setup time.
                    await asyncio.sleep(node.setup_timeout)
                    if self.conns.get(c.peer) is c and c.state is YIELDED:
                        log.warning("%s: %s won the simultaneous connect but never connected", node.name, c.peer)
                        c.close()
                return
            log.log(logging.DEBUG if c.quiet else logging.WARNING, "%s could not connect to %s: %s", node.name, c.peer, e)
            c.failure = e
            c.close()
            return
        except (OSError, EpmdError, LocalProtocolError, asyncio.TimeoutError) as e:
            log.log(logging.DEBUG if c.quiet else logging.WARNING, "%s could not connect to %s: %s", node.name, c.peer, e)
            c.failure = e
            c.close()
            return
        except asyncio.CancelledError:
            c.close()
            raise
        if c.state is not CONNECTING or self.conns.get(c.peer) is not c:
            writer.close()
            return
        c.attach(reader, writer, complete)
        self.node._notify_nodes(Atom("nodeup"), c.peer)
        await c.run(reader)

    async def _on_incoming(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, complete: Any) -> None:
        peer = Atom(complete.peer_name)
        old = self.conns.get(peer)
        c = PeerConnection(self, peer, outgoing=False)
        if old is not None and old.state in (CONNECTING, YIELDED):
            c.queue, old.queue = old.queue, []
            old.state = SUPERSEDED
            if old.task is not None:
                old.task.cancel()
        elif old is not None and old.state is UP:
            old.close()  # the peer confirmed 'alive' -> true: the old link is dead to it
        self.conns[peer] = c
        c.attach(reader, writer, complete)
        self.node._notify_nodes(Atom("nodeup"), peer)
        await c.run(reader)

    def _connection_closed(self, c: PeerConnection, was_up: bool) -> None:
        if self.conns.get(c.peer) is c:
            del self.conns[c.peer]
            if was_up:  # a dial that failed has said why already
                log.info("%s: connection to %s closed", self.node.name, c.peer)
            self.node._connection_lost(c.peer)

    # -- outgoing signals -------------------------------------------------------------------
    def _sender(self, sender: Pid | None) -> Pid:
        if sender is not None:
            return sender
        if self._anon is None:
            self._anon = self.node.make_pid()
        return self._anon

    def send(self, to: Pid, msg: Any, sender: Pid | None) -> None:
        frm = self._sender(sender)
        c = self.conns.get(to.node)
        if c is not None and c.state is UP:
            # Hot path: no builder, straight to bytes.
            if c.send_sender:
                c.link.write(c.conn.send_terms((_T_SEND_SENDER, frm, to), msg))  # type: ignore[union-attr]
            else:
                c.link.write(c.conn.send_terms((_T_SEND, EMPTY, to), msg))  # type: ignore[union-attr]
            return
        self._conn(to.node).submit(
            lambda f: (((_T_SEND_SENDER, frm, to) if f & DistFlags.SEND_SENDER else (_T_SEND, EMPTY, to)), msg)
        )

    def reg_send(self, node: Atom, name: Atom, msg: Any, sender: Pid | None) -> None:
        frm = self._sender(sender)
        c = self.conns.get(node)
        if c is not None and c.state is UP:
            c.link.write(c.conn.send_terms((_T_REG_SEND, frm, EMPTY, name), msg))  # type: ignore[union-attr]
            return
        self._conn(node).submit(lambda f: ((_T_REG_SEND, frm, EMPTY, name), msg))

    def alias_send(self, alias: Reference, msg: Any, sender: Pid | None) -> None:
        frm = self._sender(sender)

        def build(f: DistFlags) -> tuple[tuple[Any, ...] | None, Any]:
            if not f & DistFlags.ALIAS:
                return _DROP  # OTP drops alias sends on a link without ALIAS
            return (_T_ALIAS_SEND, frm, alias), msg

        self._submit(alias.node, build)

    def _submit(self, node: Atom, build: Builder) -> None:
        """A signal for ``node``: dial it if there is no link yet."""
        self._conn(node).submit(build)

    def link(self, frm: Pid, to: Pid) -> None:
        self._submit(to.node, lambda f: ((_T_LINK, frm, to), MISSING))

    def unlink(self, frm: Pid, to: Pid) -> int:
        self._unlink_ids += 1
        uid = self._unlink_ids

        def build(f: DistFlags) -> tuple[tuple[Any, ...] | None, Any]:
            if f & DistFlags.UNLINK_ID:
                return (_T_UNLINK_ID, uid, frm, to), MISSING
            return (_T_UNLINK, frm, to), MISSING

        self._submit(to.node, build)
        return uid

    def link_exit(self, frm: Pid, to: Pid, reason: Any) -> None:
        def build(f: DistFlags) -> tuple[tuple[Any, ...] | None, Any]:
            if f & DistFlags.EXIT_PAYLOAD:
                return (_T_PAYLOAD_EXIT, frm, to), reason
            return (_T_EXIT, frm, to, reason), MISSING

        self._submit_existing(to.node, build)

    def exit2(self, frm: Pid, to: Pid, reason: Any) -> None:
        def build(f: DistFlags) -> tuple[tuple[Any, ...] | None, Any]:
            if f & DistFlags.EXIT_PAYLOAD:
                return (_T_PAYLOAD_EXIT2, frm, to), reason
            return (_T_EXIT2, frm, to, reason), MISSING

        self._submit(to.node, build)

    def monitor(self, watcher: Pid, obj: Any, ref: Reference) -> None:
        if type(obj) is Pid:
            node, target = obj.node, obj
        else:
            target, node = obj
        self._submit(node, lambda f: ((_T_MONITOR_P, watcher, target, ref), MISSING))

    def demonitor(self, watcher: Pid, obj: Any, ref: Reference) -> None:
        if type(obj) is Pid:
            node, target = obj.node, obj
        else:
            target, node = obj
        self._submit_existing(node, lambda f: ((_T_DEMONITOR_P, watcher, target, ref), MISSING))

    def monitor_exit(self, obj: Any, watcher: Pid, ref: Reference, reason: Any) -> None:
        def build(f: DistFlags) -> tuple[tuple[Any, ...] | None, Any]:
            if f & DistFlags.EXIT_PAYLOAD:
                return (_T_PAYLOAD_MONITOR_P_EXIT, obj, watcher, ref), reason
            return (_T_MONITOR_P_EXIT, obj, watcher, ref, reason), MISSING

        self._submit_existing(watcher.node, build)

    def spawn_reply(self, req_id: Reference, to: Pid, flags: int, result: Any) -> None:
        self._submit(to.node, lambda f: ((_T_SPAWN_REPLY, req_id, to, flags, result), MISSING))

    def _submit_existing(self, node: Atom, build: Builder) -> None:
        """Signals that only make sense on a live link (exits, DOWNs, demonitors): never dial."""
        c = self.conns.get(node)
        if c is not None:
            c.submit(build)

    # -- rpc out ----------------------------------------------------------------------------
    async def erpc_call(self, proc: Process, node: Atom, m: Atom, f: Atom, args: list[Any], timeout: float | None) -> Any:
        req_id = self.node.make_ref()
        res = self.node.make_ref()
        proc.monitors[req_id] = Pid(node, 0, 0, 0)  # placeholder until SPAWN_REPLY names the pid
        self._spawn_waiters[req_id] = proc
        self._submit(
            node,
            lambda fl: ((_T_SPAWN_REQUEST, req_id, proc.pid, proc.pid, (Atom("erpc"), Atom("execute_call"), 4), [Atom("monitor")]), [res, m, f, args]),
        )
        spawn_reply = Atom("$spawn_reply")
        try:
            msg = await proc.receive(
                lambda x: type(x) is tuple
                and len(x) >= 2
                and x[1] == req_id
                and (x[0] == spawn_reply or x[0] == Atom("DOWN")),
                timeout,
            )
            if msg[0] == spawn_reply:
                result = msg[3]
                if type(result) is not Pid:
                    proc.monitors.pop(req_id, None)
                    raise RpcError((Atom("erpc"), result))
                proc.monitors[req_id] = result
                msg = await proc.receive(lambda x: type(x) is tuple and len(x) == 5 and x[0] == Atom("DOWN") and x[1] == req_id, timeout)
        except TimeoutError:
            self._spawn_waiters.pop(req_id, None)
            pid = proc.monitors.pop(req_id, None)
            if type(pid) is Pid and pid.id:
                self.exit2(proc.pid, pid, Atom("kill"))
            raise RpcError((Atom("erpc"), Atom("timeout"))) from None
        finally:
            self._spawn_waiters.pop(req_id, None)
        reason = msg[4]
        if reason == NOCONNECTION:
            raise RpcError((Atom("erpc"), NOCONNECTION))
        if type(reason) is tuple and len(reason) >= 3 and reason[0] == res:
            if reason[1] == Atom("return"):
                return reason[2]
            raise RpcError(tuple(reason[1:]))
        raise RpcError((Atom("exit"), (Atom("signal"), reason)))

    # -- incoming ---------------------------------------------------------------------------
    def _dispatch(self, c: PeerConnection, m: Any) -> None:
        h = _HANDLERS.get(type(m))
        if h is None:
            log.info("ignored control message from %s: %r", c.peer, m)
            return
        h(self, c, m)

    def _in_send(self, c: PeerConnection, m: Any) -> None:
        p = self.node.procs.get(m.to_pid)
        if p is not None:
            p.deliver(m.message)

    def _in_reg_send(self, c: PeerConnection, m: Any) -> None:
        p = self.node.names.get(m.to_name)
        if p is not None:
            p.deliver(m.message)

    def _in_alias_send(self, c: PeerConnection, m: Any) -> None:
        p = self.node.aliases.get(m.alias)
        if p is not None:
            p.deliver(m.message)

    def _in_link(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_link(m.from_pid, m.to_pid)

    def _in_unlink(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_unlink(m.from_pid, m.to_pid)

    def _in_unlink_id(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_unlink(m.from_pid, m.to_pid)
        c.submit(lambda f: ((_T_UNLINK_ID_ACK, m.id, m.to_pid, m.from_pid), MISSING))

    def _in_unlink_ack(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_unlink_ack(m.from_pid, m.to_pid, m.id)

    def _in_exit(self, c: PeerConnection, m: Any) -> None:
        self.node._exit_signal(m.from_pid, m.to_pid, m.reason, link=True)

    def _in_exit2(self, c: PeerConnection, m: Any) -> None:
        self.node._exit_signal(m.from_pid, m.to_pid, m.reason, link=False)

    def _in_monitor(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_monitor(m.from_pid, m.to_proc, m.ref)

    def _in_demonitor(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_demonitor(m.from_pid, m.to_proc, m.ref)

    def _in_down(self, c: PeerConnection, m: Any) -> None:
        self.node._remote_down(m.to_pid, m.ref, m.reason)

    def _in_spawn_request(self, c: PeerConnection, m: Any) -> None:
        if self.spawn_handler is not None:
            self.spawn_handler(self.node, m)
        else:
            log.warning("%s: SPAWN_REQUEST from %s but no spawn handler", self.node.name, c.peer)

    def _in_spawn_reply(self, c: PeerConnection, m: Any) -> None:
        p = self._spawn_waiters.pop(m.req_id, None)
        if p is not None:
            p.deliver((Atom("$spawn_reply"), m.req_id, m.flags, m.result))

    def _in_ignore(self, c: PeerConnection, m: Any) -> None:
        pass


_DROP: tuple[None, None] = (None, None)

_HANDLERS: dict[type, Callable[[Distribution, PeerConnection, Any], None]] = {
    C.Send: Distribution._in_send,
    C.SendTT: Distribution._in_send,
    C.SendSender: Distribution._in_send,
    C.SendSenderTT: Distribution._in_send,
    C.RegSend: Distribution._in_reg_send,
    C.RegSendTT: Distribution._in_reg_send,
    C.AliasSend: Distribution._in_alias_send,
    C.AliasSendTT: Distribution._in_alias_send,
    C.Link: Distribution._in_link,
    C.Unlink: Distribution._in_unlink,
    C.UnlinkId: Distribution._in_unlink_id,
    C.UnlinkIdAck: Distribution._in_unlink_ack,
    C.Exit: Distribution._in_exit,
    C.ExitTT: Distribution._in_exit,
    C.PayloadExit: Distribution._in_exit,
    C.PayloadExitTT: Distribution._in_exit,
    C.Exit2: Distribution._in_exit2,
    C.Exit2TT: Distribution._in_exit2,
    C.PayloadExit2: Distribution._in_exit2,
    C.PayloadExit2TT: Distribution._in_exit2,
    C.MonitorP: Distribution._in_monitor,
    C.DemonitorP: Distribution._in_demonitor,
    C.MonitorPExit: Distribution._in_down,
    C.PayloadMonitorPExit: Distribution._in_down,
    C.SpawnRequest: Distribution._in_spawn_request,
    C.SpawnRequestTT: Distribution._in_spawn_request,
    C.SpawnReply: Distribution._in_spawn_reply,
    C.SpawnReplyTT: Distribution._in_spawn_reply,
    C.GroupLeader: Distribution._in_ignore,
    C.NodeLink: Distribution._in_ignore,
}
