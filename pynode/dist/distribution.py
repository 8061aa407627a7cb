"""The node table and ``net_kernel``'s connection policy: :class:`Distribution`.

Theory of operation
-------------------
:class:`Distribution` listens for peers, registers with EPMD (starting pynode's own EPMD
when none answers) and keeps at most one :class:`~pynode.dist.link.PeerConnection` per
peer node. It implements the core's :class:`~pynode.core.runtime.Transport`: a signal for a
remote process becomes a builder (:mod:`pynode.dist.outgoing`) submitted to the peer's
connection, dialling it if there is none. If the connection cannot be set up, the queue is
dropped and the runtime turns links and monitors to that peer into ``noconnection``, as
the BEAM does. Incoming control messages go through :mod:`pynode.dist.incoming`.

Simultaneous connects follow ``net_kernel``: when a peer dials us while we dial it, the
node with the greater name keeps its own attempt (we answer ``nok``), otherwise we drop
ours (``ok_simultaneous``) and its queue moves to the accepted connection. A peer that
dials while we think we are connected gets ``alive``.

Owns: :class:`Distribution`, :class:`DistSettings`, :data:`SpawnHandler`. May import:
:mod:`erl_interop`, :mod:`pynode.errors`, :mod:`pynode.core` and the other modules of
:mod:`pynode.dist`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
from typing import Any, Callable

from erl_interop.bounded import bounded_logger
from erl_interop import aio
from erl_interop.connection import MAX_MESSAGE_SIZE
from erl_interop.epmd.client import Registration, ensure_epmd, register
from erl_interop.handshake import Status
from erl_interop.errors import EpmdError, HandshakeError, LocalProtocolError
from erl_interop.flags import DEFAULT_FLAGS, DistFlags
from erl_interop.terms import Atom, Pid, Reference

from ..config import SocketOptions
from ..core import Process, Runtime
from . import outgoing as out
from .outgoing import EMPTY, T_REG_SEND, T_SEND, T_SEND_SENDER
from .incoming import HANDLERS, SPAWN_REPLY_TAG
from .link import CLOSED, CONNECTING, SUPERSEDED, UP, YIELDED, Builder, PeerConnection
from .tls import DistTls

#: what the node does with a SPAWN_REQUEST (``erpc``/``rpc:call`` into this node): the rpc
#: server of :mod:`pynode.otp.rpc`, handed in by the composition root (:mod:`pynode.node`)
SpawnHandler = Callable[[Runtime, Any], None]

__all__ = ["Distribution", "DistSettings", "SpawnHandler", "name_kind_error"]

log = bounded_logger(logging.getLogger("pynode.dist"))

NODEUP = Atom("nodeup")
NOTSUP = Atom("notsup")


#: incoming handshake failures logged at DEBUG only (see Distribution._on_handshake_error)
_ROUTINE_HANDSHAKE_FAILURES = frozenset({"nok", "closed", "timeout", "bad_cookie", "not_allowed"})


@dataclasses.dataclass(frozen=True)
class DistSettings:
    """How the node meets the network (the composition root makes it from the node's
    arguments: :class:`pynode.node.Node`)."""

    cookie: str
    #: ``net_ticktime``, seconds
    tick_time: float = 60.0
    epmd_port: int | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    #: ``net_setuptime``, seconds
    setup_timeout: float = 7.0
    hidden: bool = True
    #: the flags to advertise (``None``: :data:`erl_interop.flags.DEFAULT_FLAGS`)
    dist_flags: int | None = None
    #: ``-name`` (True) or ``-sname`` (False): which peer names it may talk to (:func:`name_kind_error`)
    longnames: bool = False
    #: largest message (or reassembled fragmented message) a peer may send, bytes; a larger
    #: one drops that link (docs/WIRE.md §3.5)
    max_message_size: int = MAX_MESSAGE_SIZE
    #: a link's send buffer above which a sending process waits (``dist_buf_busy_limit``)
    busy_limit: int = aio.DIST_BUF_BUSY_LIMIT
    #: TLS distribution (``-proto_dist inet_tls``): the contexts and the client's name rules
    #: (:mod:`pynode.dist.tls`); None: plain TCP (``inet_tcp``)
    tls: DistTls | None = None
    #: ``inet_dist_listen_min``/``max``: the ports tried in turn when ``listen_port`` is 0
    listen_port_range: tuple[int, int] | None = None
    #: ``dist_auto_connect``: ``always`` (OTP's default), ``once`` or ``never``. A signal for a
    #: node with no connection dials it unless this bars it; explicit connects always dial.
    auto_connect: str = "always"
    #: ``inet_dist_connect_options`` / ``inet_dist_listen_options``, mapped onto sockets
    connect_options: SocketOptions = SocketOptions()
    listen_options: SocketOptions = SocketOptions()


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def name_kind_error(peer: str, longnames: bool) -> str | None:
    """Why a node running with ``-name`` (``longnames``) or ``-sname`` may not talk to
    ``peer``, or None. The rule and the words are ``inet_tcp_dist:splitnode/3``'s: a
    long-name node refuses a host with no dot that is not an address; a short-name node
    refuses a host with a dot (an IPv4 address included) (docs/WIRE.md §4.6)."""
    alive, _, host = peer.partition("@")
    if not alive or not host:
        return f"** Nodename {peer} illegal **"
    if longnames and "." not in host and not is_ip_address(host):
        return f"** System running to use fully qualified hostnames **\n** Hostname {host} is illegal **"
    if not longnames and "." in host:
        return f"** System NOT running to use fully qualified hostnames **\n** Hostname {host} is illegal **"
    return None


class Distribution:
    """The node's view of the network. Created and started by :meth:`Node.start`."""

    def __init__(self, node: Runtime, settings: DistSettings, spawn_handler: SpawnHandler | None = None) -> None:
        self.node = node
        self.settings = settings
        self.spawn_handler = spawn_handler
        self.conns: dict[Atom, PeerConnection] = {}
        base = DistFlags(settings.dist_flags) if settings.dist_flags is not None else DEFAULT_FLAGS
        self.flags = base if settings.hidden else base | DistFlags.PUBLISHED
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.registration: Registration | None = None
        self._unlink_ids = 0
        #: SPAWN_REQUEST id -> the process waiting for its SPAWN_REPLY
        self.spawn_waiters: dict[Reference, Process] = {}
        self._anon: Pid | None = None
        #: set by stop(): no new connections (signals to other nodes are dropped)
        self.stopped = False
        #: control message type -> bound handler ``(connection, message)``, for the links' loops
        self.handlers: dict[type, Callable[[Any, Any], None]] = {
            t: (lambda h: lambda c, m: h(self, c, m))(h) for t, h in HANDLERS.items()
        }
        #: the tasks serving accepted connections (incoming handshakes included): stop() ends them
        self._handlers: set[asyncio.Task[Any]] = set()
        #: ``dist_auto_connect once``: the nodes whose connection has gone (no more automatic dials)
        self._barred: set[Atom] = set()

    # -- start / stop -----------------------------------------------------------------------
    async def start(self) -> None:


        node, st = self.node, self.settings
        tls = st.tls
        lopts = st.listen_options
        # inet_dist_listen_min..max: the first free port of the range, as inet_tcp_dist does
        span = st.listen_port_range if not st.listen_port else None
        ports = list(range(span[0], span[1] + 1)) if span is not None else [st.listen_port]
        server: asyncio.Server | aio.TlsServer | None = None
        for i, port in enumerate(ports):
            try:
                server = await aio.start_server(
                    node.name,
                    st.cookie,
                    lambda: node.creation,
                    self._on_incoming,
                    host=st.listen_host,
                    port=port,
                    flags=self.flags,
                    policy=self,
                    setup_timeout=st.setup_timeout,
                    on_error=self._on_handshake_error,
                    handlers=self._handlers,
                    ssl=tls.server if tls is not None else None,
                    tls_check=(lambda so: tls.check_peer(so, server_side=True)) if tls is not None else None,
                    sockopts=lopts.sockopts,
                    backlog=lopts.backlog if lopts.backlog is not None else 128,  # inet_tcp_dist's default
                    reuse_address=lopts.reuseaddr,
                )
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or span is None:
                    raise
                if i == len(ports) - 1:
                    raise OSError(errno.EADDRINUSE, f"no free distribution port in {span[0]}..{span[1]} "
                                  f"(inet_dist_listen_min/max) on {st.listen_host}") from None
        assert server is not None
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        if tls is not None:
            log.info("%s: TLS distribution (inet_tls) on %s:%s: %s", node.name, st.listen_host, self.port, tls.summary)
        alive = node.name.split("@", 1)[0]
        await ensure_epmd(st.epmd_port)
        try:
            self.registration = await register(alive, self.port, epmd_port=st.epmd_port)
        except EpmdError as e:
            self.server.close()
            # erl says "Protocol 'inet_tcp': the name N seems to be in use by another Erlang node"
            raise EpmdError(f"the name {node.name} seems to be in use by another Erlang node ({e})") from e
        node.creation = self.registration.creation

    def _on_handshake_error(self, e: HandshakeError) -> None:
        # As quiet as net_kernel: 'nok' is us winning a simultaneous connect, not a refusal; a
        # peer that closes or times out mid-handshake is routine (a client giving up, a port
        # probe); another cookie and a name of the other kind have their one ERROR line, as
        # erl's, already (erl_interop.handshake, accept_pending). Anything else is worth a line.
        level = logging.DEBUG if e.reason in _ROUTINE_HANDSHAKE_FAILURES else logging.WARNING
        hint = ""
        if self.settings.tls is None and e.step == "recv_name" and e.reason == "oversized":
            # 0x16 0x03: a TLS ClientHello read as a 2-byte length
            hint = " (a TLS ClientHello? the peer runs -proto_dist inet_tls, this node plain TCP)"
        log.log(level, "%s refused an incoming connection: %s%s", self.node.name, e, hint)

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
            await self.registration.aclose()

    def connected_nodes(self) -> list[Atom]:
        return [n for n, c in self.conns.items() if c.state is UP]

    # -- handshake policy (erl_interop.handshake.HandshakePolicy) ---------------------------
    def accept_pending(self, peer_name: str, peer_flags: DistFlags, peer_creation: int) -> Status:
        why = name_kind_error(peer_name, self.settings.longnames)
        if why is not None:
            # inet_tcp_dist refuses such a peer once its name is known; we say so in the
            # handshake (not_allowed) rather than after it, so the dialler learns why.
            log.error("%s\n** Connection attempt from node %s rejected **", why, peer_name)
            return "not_allowed"
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
    def _conn(self, peer: Atom, explicit: bool = False) -> PeerConnection:
        """The connection to ``peer``, dialling it if there is none: a signal's automatic
        connect unless ``dist_auto_connect`` bars it; ``explicit`` (``net_kernel:connect_node``)
        always dials."""
        c = self.conns.get(peer)
        if c is not None and c.state is not CLOSED:
            return c
        c = PeerConnection(self, peer, outgoing=True)
        if self.stopped:
            c.state = CLOSED  # a stopped node dials nobody; what is sent to it is dropped
            return c
        self.conns[peer] = c
        if explicit:
            self._barred.discard(peer)
            why = None
        else:
            why = self._auto_connect_barred(peer)
        if why is None:
            c.task = self.node.create_task(self._dial(c), name=f"pynode dial {peer}")
        else:
            c.task = self.node.create_task(self._no_auto_connect(c, why), name=f"pynode no dial {peer}")
        return c

    def _auto_connect_barred(self, peer: Atom) -> str | None:
        mode = self.settings.auto_connect
        if mode == "never":
            return "dist_auto_connect is never: connect explicitly (Node.network.connect)"
        if mode == "once" and peer in self._barred:
            return f"dist_auto_connect is once and the connection to {peer} has gone: connect explicitly"
        return None

    async def _no_auto_connect(self, c: PeerConnection, why: str) -> None:
        # As net_kernel with dist_auto_connect never/once: no dial, and what was sent fails
        # as on a connection that could not be set up (links and monitors: noconnection).
        log.debug("%s: not connecting to %s: %s", self.node.name, c.peer, why)
        c.failure = HandshakeError("connect", "not_auto_connected", why)
        c.close()

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
        c = self._conn(peer_a, explicit=True)
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
            await c.settled()

    async def _dial(self, c: PeerConnection) -> None:
        node, st = self.node, self.settings
        why = name_kind_error(c.peer, st.longnames)
        if why is not None:
            log.error("%s", why)
            c.failure = HandshakeError("connect", "illegal_hostname", why.replace("\n", " "))
            c.close()
            return
        tls, copts = st.tls, st.connect_options
        try:
            reader, writer, complete = await aio.connect(
                node.name,
                c.peer,
                st.cookie,
                node.creation,
                flags=self.flags,
                policy=self,
                epmd_port=st.epmd_port,
                setup_timeout=st.setup_timeout,
                ssl=tls.client if tls is not None else None,
                server_hostname=tls.client_hostname(c.peer) if tls is not None else None,
                tls_check=(lambda so: tls.check_peer(so, server_side=False)) if tls is not None else None,
                sockopts=copts.sockopts,
                local_addr=(copts.ip or "0.0.0.0", copts.port or 0) if copts.ip or copts.port else None,
            )
        except HandshakeError as e:
            if e.reason in ("nok", "ok_simultaneous") or str(e.reason).startswith("nok"):
                # The peer's own attempt wins; its connection will arrive on our listener
                # and take over our queue.
                log.debug("dial to %s yielded to the peer's attempt: %s", c.peer, e)
                if self.conns.get(c.peer) is c:
                    c.state = YIELDED
                    # OTP fails the signals of a connect that never completes; so do we,
                    # if the peer's own attempt has not arrived within the setup time (when
                    # it arrives, _on_incoming cancels this task: the wait is a timer, not a poll).
                    try:
                        await asyncio.sleep(st.setup_timeout)
                    except asyncio.CancelledError:
                        # superseded by the peer's connection: end this attempt, so that
                        # attempt() waiting on it wakes up and follows the new connection
                        c.close()
                        raise
                    if self.conns.get(c.peer) is c and c.state is YIELDED:
                        log.warning("%s: %s won the simultaneous connect but never connected", node.name, c.peer)
                        c.close()
                return
            hint = ""
            if tls is None and e.step == "recv_status" and e.reason == "oversized":
                # 0x15 0x03: a TLS alert read as a 2-byte length
                hint = " (the peer answered with a TLS record: it runs -proto_dist inet_tls, this node plain TCP)"
            log.log(logging.DEBUG if c.quiet else logging.WARNING, "%s could not connect to %s: %s%s", node.name, c.peer,
                    e, hint)
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
        self.node.notify_nodes(NODEUP, c.peer)
        await c.run()

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
        self.node.notify_nodes(NODEUP, peer)
        await c.run()

    def _connection_closed(self, c: PeerConnection, was_up: bool) -> None:
        if self.conns.get(c.peer) is c:
            del self.conns[c.peer]
            if self.settings.auto_connect == "once":
                self._barred.add(c.peer)  # connected (or tried) once: no more automatic dials
            if was_up:  # a dial that failed has said why already
                log.debug("%s: connection to %s closed", self.node.name, c.peer)  # as quiet as net_kernel
            self.node.connection_lost(c.peer)

    # -- outgoing signals (the core's Transport) ------------------------------------------
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
            # Hot path: no builder, straight to bytes (the tuples of outgoing.send).
            link = c.link
            if c.send_sender:
                link.write(c.conn.send_terms((T_SEND_SENDER, frm, to), msg))  # type: ignore[union-attr]
            else:
                link.write(c.conn.send_terms((T_SEND, EMPTY, to), msg))  # type: ignore[union-attr]
            if link.pending > link.busy_limit:  # type: ignore[union-attr]
                self._suspend(sender, c)
            return
        self._conn(to.node).submit(out.send(frm, to, msg))

    def reg_send(self, node: Atom, name: Atom, msg: Any, sender: Pid | None) -> None:
        frm = self._sender(sender)
        c = self.conns.get(node)
        if c is not None and c.state is UP:
            link = c.link
            link.write(c.conn.send_terms((T_REG_SEND, frm, EMPTY, name), msg))  # type: ignore[union-attr]
            if link.pending > link.busy_limit:  # type: ignore[union-attr]
                self._suspend(sender, c)
            return
        self._conn(node).submit(out.reg_send(frm, name, msg))

    def alias_send(self, alias: Reference, msg: Any, sender: Pid | None) -> None:
        self._submit(alias.node, out.alias_send(self._sender(sender), alias, msg))

    def _submit(self, node: Atom, build: Builder) -> None:
        """A signal for ``node``: dial it if there is no link yet."""
        self._conn(node).submit(build)

    def _suspend(self, sender: Pid | None, c: PeerConnection) -> None:
        """``sender`` wrote on a busy link: it waits at its next receive until the link
        drains below its limit (OTP suspends the sending process; docs/WIRE.md §3.5). A send
        from outside any process (``Node.send``) cannot wait and only adds to the buffer."""
        if sender is None or c.link is None:
            return
        p = self.node.procs.get(sender)
        if p is not None:
            p.backpressure = c.link.wait_writable

    def _submit_existing(self, node: Atom, build: Builder) -> None:
        """Signals that only make sense on a live link (exits, DOWNs, demonitors): never dial."""
        c = self.conns.get(node)
        if c is not None:
            c.submit(build)

    def link(self, frm: Pid, to: Pid) -> None:
        self._submit(to.node, out.link(frm, to))

    def unlink(self, frm: Pid, to: Pid) -> int:
        self._unlink_ids += 1
        uid = self._unlink_ids
        self._submit(to.node, out.unlink(uid, frm, to))
        return uid

    def link_exit(self, frm: Pid, to: Pid, reason: Any) -> None:
        self._submit_existing(to.node, out.link_exit(frm, to, reason))

    def exit2(self, frm: Pid, to: Pid, reason: Any) -> None:
        self._submit(to.node, out.exit2(frm, to, reason))

    def monitor(self, watcher: Pid, obj: Any, ref: Reference) -> None:
        node, target = (obj.node, obj) if type(obj) is Pid else (obj[1], obj[0])
        self._submit(node, out.monitor(watcher, target, ref))

    def demonitor(self, watcher: Pid, obj: Any, ref: Reference) -> None:
        node, target = (obj.node, obj) if type(obj) is Pid else (obj[1], obj[0])
        self._submit_existing(node, out.demonitor(watcher, target, ref))

    def monitor_exit(self, obj: Any, watcher: Pid, ref: Reference, reason: Any) -> None:
        self._submit_existing(watcher.node, out.monitor_exit(obj, watcher, ref, reason))

    def spawn_reply(self, req_id: Reference, to: Pid, flags: int, result: Any) -> None:
        self._submit(to.node, out.spawn_reply(req_id, to, flags, result))

    def spawn_request(self, proc: Process, node: Atom, req_id: Reference, mfa: tuple[Atom, Atom, int],
                      opts: list[Any], args: list[Any]) -> None:
        """``erlang:spawn_request(Node, M, F, A, Opts)`` for ``proc``: its SPAWN_REPLY is
        delivered to ``proc`` as ``{'$spawn_reply', ReqId, Flags, Result}``
        (:data:`~pynode.dist.incoming.SPAWN_REPLY_TAG`) unless :meth:`forget_spawn` was called."""
        self.spawn_waiters[req_id] = proc

        def refused() -> None:  # the peer has no SPAWN: OTP answers notsup at once
            waiter = self.spawn_waiters.pop(req_id, None)
            if waiter is not None:
                waiter.deliver((SPAWN_REPLY_TAG, req_id, 0, NOTSUP))

        self._submit(node, out.spawn_request(req_id, proc.pid, proc.pid, mfa, opts, args, refused))

    def forget_spawn(self, req_id: Reference) -> None:
        """No longer deliver the SPAWN_REPLY of ``req_id`` (its requester gave up)."""
        self.spawn_waiters.pop(req_id, None)
