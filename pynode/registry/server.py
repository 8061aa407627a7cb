"""The registry process ``pynode_registry`` (Elixir: ``Pynode.Registry.Impl``): the
GenServer that speaks the protocol with the other nodes' registries, owns this node's
registrations, keeps the :class:`~pynode.registry.mirror.Mirror` and applies the conflict
rule to it (evicting local losers with ``{name_conflict, Key, Winner}``).

Owns: :class:`Registry` and :class:`LocalWrite`, the message a
:class:`~pynode.registry.api.RegistryAPI` of the same node puts in its mailbox for ``reg``
and ``unreg`` (it still accepts the plain ``{reg, Key, Value}`` / ``{unreg, Key}`` calls, which
are what other callers send). May import: :mod:`erl_interop`, :mod:`pynode.errors`,
:mod:`pynode.otp.gen_server`, :mod:`pynode.core.process`, :mod:`pynode.registry.protocol` and
:mod:`pynode.registry.mirror`. It reads the node's dist links (``node.dist.conns``) to drop
messages from a link already down and to skip C nodes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable

from erl_interop.bounded import bounded_logger
from erl_interop.errors import EncodeError
from erl_interop.flags import DistFlags
from erl_interop.terms import Atom, Pid, Reference

from ..errors import CallError
from ..otp.gen_server import From, GenServer
from ..core.process import DOWN_TAG
from ..dist import LinkState
from .mirror import Mirror
from .protocol import (
    ALREADY_REGISTERED,
    BADARG,
    DISCOVER,
    ERROR,
    N,
    NAME_CONFLICT,
    NODEDOWN,
    NODEUP,
    OK,
    PROTOCOL_VERSION,
    REG,
    REGISTRY_NAME,
    SYNC,
    TAG,
    UNREG,
    check_key,
    key_bytes,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["Registry", "LocalWrite"]

log = bounded_logger(logging.getLogger("pynode.registry"))


class LocalWrite:
    """A ``reg``/``unreg`` call made by :class:`RegistryAPI` from a process of this node.

    It is the Python twin of ``{'$gen_call', From, {reg, Key, Value}}`` without the
    monitor/alias/selective-receive machinery: the object is put in the registry process's
    mailbox (so it is served in mailbox order, serialized with every other write), and the
    server resolves ``fut`` with the reply. The key arrives checked and encoded (``kb``; None
    when it could not be encoded, and the server answers ``{error, badarg}`` as before). It is
    a Python object, so it never comes off the wire: remote callers can only send the plain
    ``{reg, Key, Value}`` / ``{unreg, Key}`` requests, which the server checks and encodes.
    A registry that dies with calls pending fails them with its exit reason
    (:meth:`Registry._fail_pending`), as ``gen_server:call``'s monitor would."""

    __slots__ = ("unreg", "key", "kb", "value", "pid", "fut", "timeout")

    def __init__(self, unreg: bool, key: Any, kb: bytes | None, value: Any, pid: Pid,
                 fut: "asyncio.Future[Any]", timeout: float | None) -> None:
        self.unreg = unreg
        self.key = key
        self.kb = kb
        self.value = value
        self.pid = pid
        self.fut = fut
        self.timeout = timeout

    def plain(self) -> tuple[Any, ...]:
        """The request as ``gen_server:call`` carries it (for :class:`CallError`)."""
        return (UNREG, self.key) if self.unreg else (REG, self.key, self.value)



# -- the registry process ------------------------------------------------------------------
class Registry(GenServer):
    """The ``pynode_registry`` process. Start with :meth:`start_for` (done by ``Node.start``)."""

    mirror: Mirror
    #: peer node -> (its registry pid, our monitor ref on it)
    peers: dict[Atom, tuple[Pid, Reference]]
    #: peer node -> its registry pid that has our snapshot (protocol, "Membership and
    #: discovery": a ``discover`` is answered once per peer registry, until it is relearnt)
    synced: dict[Atom, Pid]
    #: peer node -> its registry pid whose snapshot (``sync``) this node has applied
    heard: dict[Atom, Pid]
    #: peer node -> the member list its snapshot carried
    claims: dict[Atom, list[Atom]]

    @classmethod
    async def start_for(cls, node: "Node") -> "Registry":
        """Start the registry of ``node``, registered as ``pynode_registry``."""
        server = await cls.start(node, name=REGISTRY_NAME)
        assert isinstance(server, Registry)
        return server

    async def init(self, *args: Any) -> None:
        self.mirror = Mirror()
        self.peers = {}
        self.synced = {}
        self.heard = {}
        self.claims = {}
        #: futures resolved at the next applied snapshot (:meth:`RegistryAPI.wait_synced`)
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._peer_refs: dict[Reference, Atom] = {}
        self._local_mons: dict[Pid, Reference] = {}
        self._waiters: dict[bytes, list[asyncio.Future[tuple[Pid, Any]]]] = {}
        self._warned: set[Any] = set()
        #: local calls in flight (:class:`LocalWrite`), failed if this process dies
        self._pending: dict[asyncio.Future[Any], LocalWrite] = {}
        task = self.process.task
        assert task is not None
        task.add_done_callback(self._fail_pending)
        node = self.process.node
        node.monitor_nodes(self.process)
        for peer in list(node.connected_nodes):
            self._discover_node(peer)

    # -- state views used by RegistryAPI ---------------------------------------------------
    def members(self) -> list[Atom]:
        return sorted([self.process.node.name, *self.peers])

    def synced_members(self) -> list[Atom]:
        """This node plus every member whose snapshot this node has applied, sorted."""
        return sorted([self.process.node.name, *(n for n in self.peers if n in self.heard)])

    def claimed_members(self) -> list[Atom]:
        """Every node this node knows as a member or that a member's snapshot named as one,
        sorted: the membership this node converges to once it has heard from them all."""
        out = {self.process.node.name, *self.peers}
        for ms in self.claims.values():
            out.update(ms)
        return sorted(out)

    def next_sync(self) -> "asyncio.Future[None]":
        """A future resolved when the next snapshot from any peer has been applied."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append(fut)
        return fut

    def drop_sync_waiter(self, fut: "asyncio.Future[None]") -> None:
        """Forget a :meth:`next_sync` future its waiter gave up on (a timeout, a cancel)."""
        try:
            self._sync_waiters.remove(fut)
        except ValueError:
            pass  # resolved and taken by a snapshot already

    def add_waiter(self, kb: bytes, fut: "asyncio.Future[tuple[Pid, Any]]") -> None:
        self._waiters.setdefault(kb, []).append(fut)

    def drop_waiter(self, kb: bytes, fut: "asyncio.Future[tuple[Pid, Any]]") -> None:
        ws = self._waiters.get(kb)
        if ws is not None:
            try:
                ws.remove(fut)
            except ValueError:
                pass
            if not ws:
                del self._waiters[kb]

    # -- local writes (calls) --------------------------------------------------------------
    async def handle_call(self, request: Any, from_: From) -> Any:
        pid = from_[0]
        try:
            if type(request) is tuple and len(request) == 3 and request[0] == REG:
                return self._local_reg(pid, request[1], request[2])
            if type(request) is tuple and len(request) == 2 and request[0] == UNREG:
                return self._local_unreg(pid, request[1])
        except (ValueError, EncodeError):
            return (ERROR, BADARG)
        return (ERROR, (Atom("unknown_call"), request))

    async def handle_cast(self, request: Any) -> None:
        self._warn_once(("cast", type(request).__name__), "ignored cast %r", request)

    def _local_reg(self, pid: Pid, key: Any, value: Any) -> Any:
        key = check_key(key)
        return self._reg_kb(pid, key, key_bytes(key), value)

    def _reg_kb(self, pid: Pid, key: tuple[Atom, Atom, Any], kb: bytes, value: Any) -> Any:
        """``reg`` of a checked ``key`` whose mirror bytes are ``kb``."""
        if type(pid) is not Pid or pid.node != self.process.node.name:
            return (ERROR, Atom("not_local"))
        proc = self.process.node.process(pid)
        if proc is None or not proc.alive:
            return (ERROR, Atom("noproc"))
        if key[0] == N:
            h = self.mirror.holder(kb)
            if h is not None and h[0] != pid:
                return (ERROR, (ALREADY_REGISTERED, h[0]))
        self.mirror.put(kb, key, pid, value)
        if pid not in self._local_mons:
            self._local_mons[pid] = self.process.monitor(pid)
        self._broadcast((TAG, PROTOCOL_VERSION, REG, self.pid, key, pid, value))
        self._wake(kb)
        return OK

    def _local_unreg(self, pid: Pid, key: Any) -> Any:
        key = check_key(key)
        return self._unreg_kb(pid, key, key_bytes(key))

    def _unreg_kb(self, pid: Pid, key: tuple[Atom, Atom, Any], kb: bytes) -> Any:
        """``unreg`` of a checked ``key`` whose mirror bytes are ``kb``."""
        if self.mirror.remove(kb, pid):
            self._broadcast((TAG, PROTOCOL_VERSION, UNREG, self.pid, key, pid))
            self._maybe_demonitor(pid)
        return OK

    def _maybe_demonitor(self, pid: Pid) -> None:
        if pid not in self.mirror.by_pid:
            ref = self._local_mons.pop(pid, None)
            if ref is not None:
                self.process.demonitor(ref, flush=True)

    # -- everything else (info) ------------------------------------------------------------
    def _fail_pending(self, _task: Any) -> None:
        """The registry process is gone: fail the calls still waiting for it."""
        reason = self.process.exit_reason
        pending, self._pending = self._pending, {}
        for fut, w in pending.items():
            if not fut.done():
                fut.set_exception(CallError(reason, self.process.pid, w.plain(), w.timeout))

    def _local_write(self, w: LocalWrite) -> None:
        # As handle_call for the plain request; an unexpected error crashes the registry
        # (and _fail_pending answers the caller with the exit reason), as there.
        try:
            if w.kb is None:
                result: Any = (ERROR, BADARG)
            elif w.unreg:
                result = self._unreg_kb(w.pid, w.key, w.kb)
            else:
                result = self._reg_kb(w.pid, w.key, w.kb, w.value)
        except (ValueError, EncodeError):
            result = (ERROR, BADARG)
        fut = w.fut
        self._pending.pop(fut, None)
        if not fut.done():  # else the caller timed out or was killed: the write stands
            fut.set_result(result)

    async def handle_info(self, msg: Any) -> None:
        if type(msg) is LocalWrite:
            self._local_write(msg)
            return
        try:
            self._info(msg)
        except Exception:  # a bad message must never take the registry down
            log.exception("%s: registry failed to handle %r (ignored)", self.process.node.name, msg)

    def _info(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            self._warn_once("junk", "ignored message %r", msg)
            return
        tag = msg[0]
        if tag == TAG and type(tag) is Atom:
            self._protocol(msg)
        elif tag == DOWN_TAG and len(msg) == 5:
            self._down(msg[1], msg[3], msg[4])
        elif tag == NODEUP and len(msg) == 2:
            self._discover_node(msg[1])
        elif tag == NODEDOWN and len(msg) == 2:
            pass  # the peer registry's DOWN (noconnection) does the purge
        else:
            self._warn_once("junk", "ignored message %r", msg)

    def _protocol(self, msg: tuple[Any, ...]) -> None:
        n = len(msg)
        vsn = msg[1] if n > 1 else None
        frm = msg[3] if n > 3 else None
        sender: Any = frm if type(frm) is Pid else "unknown"
        if type(vsn) is not int or vsn != PROTOCOL_VERSION:
            self._warn_once(sender, "ignored registry message of another version from %s: %r", sender, msg)
            return
        kind = msg[2] if n > 2 else None
        if type(frm) is not Pid or frm.node == self.process.node.name:
            self._warn_once(sender, "ignored registry message with a bad sender: %r", msg)
            return
        if not self._linked(frm.node):
            # Read off a link that has already gone down (its DOWN is processed or on its
            # way): acting on it would resurrect a member the partition removed.
            log.debug("%s: dropped a registry message from %s, which is not connected", self.process.node.name, frm)
            return
        if kind == DISCOVER and n == 4:
            self._on_discover(frm)
        elif kind == SYNC and n == 6 and type(msg[4]) is list and type(msg[5]) is list:
            self._on_sync(frm, msg[4], msg[5])
        elif kind == REG and n == 7:
            self._on_reg(frm, msg[4], msg[5], msg[6])
        elif kind == UNREG and n == 6:
            self._on_unreg(frm, msg[4], msg[5])
        else:
            self._warn_once(sender, "ignored malformed registry message from %s: %r", sender, msg)

    def _linked(self, peer: Atom) -> bool:
        dist = self.process.node.dist
        c = None if dist is None else dist.conns.get(peer)
        return c is not None and c.state is LinkState.UP

    def _warn_once(self, sender: Any, fmt: str, *args: Any) -> None:
        if sender in self._warned:
            return
        self._warned.add(sender)
        log.warning("%s: " + fmt, self.process.node.name, *args)

    # -- discovery -------------------------------------------------------------------------
    def _discover_node(self, peer: Any) -> None:
        if type(peer) is not Atom or peer == self.process.node.name or "@" not in peer:
            return  # not a node name (alive@host): a hostile member list must not make us dial it
        dist = self.process.node.dist
        c = dist.conns.get(peer) if dist is not None else None
        if c is not None and c.state is LinkState.UP and not c.flags & DistFlags.SPAWN:
            # A C node (erl_call, ei, JInterface): it runs no registry, and a message it does
            # not expect makes erl_call fail. BEAM nodes and pynodes all have SPAWN.
            return
        self.process.send((Atom(REGISTRY_NAME), peer), (TAG, PROTOCOL_VERSION, DISCOVER, self.pid))

    def _know(self, frm: Pid) -> bool:
        """Record ``frm`` as the registry of its node; True when it was not known."""
        cur = self.peers.get(frm.node)
        if cur is not None:
            if cur[0] == frm:
                return False
            # Another registry for that node: the old one is gone, whatever its DOWN says.
            self._forget(frm.node)
        ref = self.process.monitor(frm)
        self.synced.pop(frm.node, None)  # (re)learnt: it gets a fresh snapshot
        self.heard.pop(frm.node, None)
        self.claims.pop(frm.node, None)
        self.peers[frm.node] = (frm, ref)
        self._peer_refs[ref] = frm.node
        return True

    def _forget(self, node: Atom) -> None:
        pid, ref = self.peers.pop(node)
        self.synced.pop(node, None)
        self.heard.pop(node, None)
        self.claims.pop(node, None)
        self._peer_refs.pop(ref, None)
        self.process.demonitor(ref, flush=True)
        self._settle(self.mirror.drop_node(node))

    def _is_current(self, frm: Pid) -> bool:
        cur = self.peers.get(frm.node)
        return cur is not None and cur[0] == frm

    def _on_discover(self, frm: Pid) -> None:
        if self._know(frm):
            self.process.send(frm, (TAG, PROTOCOL_VERSION, DISCOVER, self.pid))
        if self.synced.get(frm.node) == frm:
            # It has our snapshot already, and every change since went to it after that
            # snapshot on the same ordered link: another one would only repeat it.
            return
        self.synced[frm.node] = frm
        own = [(k, p, v) for k, p, v in self.mirror.entries_of_node(self.process.node.name)]
        self.process.send(frm, (TAG, PROTOCOL_VERSION, SYNC, self.pid, own, self.members()))

    def _on_sync(self, frm: Pid, entries: list[Any], members: list[Any]) -> None:
        self._know(frm)
        parsed: list[tuple[bytes, Any, Pid, Any]] = []
        for e in entries:
            ok = self._parse_remote(frm, e[0], e[1], e[2]) if type(e) is tuple and len(e) == 3 else None
            if ok is None:
                self._warn_once((frm, "entry"), "ignored bad entry %r in a sync from %s", e, frm)
                continue
            parsed.append((ok[0], ok[1], e[1], e[2]))
        self._settle(self.mirror.replace_node(frm.node, parsed))
        self.heard[frm.node] = frm
        me = self.process.node.name
        self.claims[frm.node] = [m for m in members if type(m) is Atom and m != me and "@" in m]
        waiters, self._sync_waiters = self._sync_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        me = self.process.node.name
        for m in members:
            if type(m) is Atom and m != me and m not in self.peers:
                self._discover_node(m)

    def _parse_remote(self, frm: Pid, key: Any, pid: Any, value: Any) -> tuple[bytes, Any] | None:
        """``(kb, Key)`` of an entry announced by ``frm``, or None when it breaks the protocol."""
        if type(pid) is not Pid or pid.node != frm.node:
            return None
        try:
            key = check_key(key)
            return key_bytes(key), key
        except (ValueError, EncodeError):
            return None

    def _on_reg(self, frm: Pid, key: Any, pid: Any, value: Any) -> None:
        if not self._is_current(frm):
            # Not (or no longer) a member: its snapshot, asked for now, will carry this entry.
            self.process.send(frm, (TAG, PROTOCOL_VERSION, DISCOVER, self.pid))
            return
        ok = self._parse_remote(frm, key, pid, value)
        if ok is None:
            self._warn_once((frm, "reg"), "ignored reg violating the protocol from %s: %r", frm, (key, pid))
            return
        kb, key = ok
        self.mirror.put(kb, key, pid, value)
        self._settle({kb})

    def _on_unreg(self, frm: Pid, key: Any, pid: Any) -> None:
        if not self._is_current(frm):
            return
        ok = self._parse_remote(frm, key, pid, None)
        if ok is None:
            self._warn_once((frm, "unreg"), "ignored unreg violating the protocol from %s: %r", frm, (key, pid))
            return
        kb, _key = ok
        if self.mirror.remove(kb, pid):
            self._settle({kb})

    # -- DOWN ------------------------------------------------------------------------------
    def _down(self, ref: Any, obj: Any, reason: Any) -> None:
        node = self._peer_refs.pop(ref, None)
        if node is not None:
            cur = self.peers.get(node)
            if cur is not None and cur[1] == ref:
                del self.peers[node]
                self.synced.pop(node, None)  # it purged our entries too (or is gone)
                self.heard.pop(node, None)
                self.claims.pop(node, None)
                log.debug("%s: registry of %s is gone (%s); purging its entries", self.process.node.name, node, reason)
                self._settle(self.mirror.drop_node(node))
            return
        if type(obj) is Pid and self._local_mons.get(obj) == ref:
            del self._local_mons[obj]
            for kb, key in self.mirror.remove_pid(obj):
                self._broadcast((TAG, PROTOCOL_VERSION, UNREG, self.pid, key, obj))
                self._settle({kb})

    # -- conflicts and waiters -------------------------------------------------------------
    def _settle(self, kbs: Iterable[bytes]) -> None:
        """Apply the conflict rule to ``kbs`` (evicting local losers) and wake waiters."""
        me = self.process.node.name
        for kb in kbs:
            losers = self.mirror.losers(kb)
            if losers:
                h = self.mirror.holder(kb)
                assert h is not None
                for loser in losers:
                    if loser.node == me:
                        self._evict(kb, loser, h[0])
            self._wake(kb)

    def _evict(self, kb: bytes, loser: Pid, winner_pid: Pid) -> None:
        claim = self.mirror.claim(kb, loser)
        if claim is None:
            return
        key = claim[0]
        self.mirror.remove(kb, loser)
        self._broadcast((TAG, PROTOCOL_VERSION, UNREG, self.pid, key, loser))
        self._maybe_demonitor(loser)
        log.info("%s: %s lost %r to %s", self.process.node.name, loser, key, winner_pid)
        self.process.exit(loser, (NAME_CONFLICT, key, winner_pid))

    def _wake(self, kb: bytes) -> None:
        ws = self._waiters.get(kb)
        if not ws:
            return
        h = self.mirror.holder(kb)
        if h is None:
            return
        del self._waiters[kb]
        for fut in ws:
            if not fut.done():
                fut.set_result((h[0], h[2]))

    def _broadcast(self, msg: Any) -> None:
        for pid, _ref in self.peers.values():
            self.process.send(pid, msg)
