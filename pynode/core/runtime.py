"""The runtime core: identity, the process table, names, aliases, and the signal router.

Theory of operation
-------------------
A :class:`Runtime` owns every process it spawns. All signals go through :meth:`Runtime.send`
and the ``link``/``monitor``/``exit_signal`` family, which decide between a local delivery
(done at once, in order) and a control message to the peer node, handed to the
:class:`Transport` in :attr:`Runtime.dist` (the distribution layer, :mod:`pynode.dist`,
plugs itself in there: this module defines the seam and never imports it). Remote state is
kept on the local side only: which local processes are linked to, monitor, or are
monitored by processes on each peer. When a connection goes down that state turns into
``noconnection`` exit signals and ``DOWN`` messages, as on the BEAM
(:meth:`Runtime.connection_lost`, called by the transport).

Tasks: processes own their tasks; everything else the runtime runs is created with
:meth:`Runtime.create_task`, kept in one set, and cancelled and awaited by
:meth:`Runtime.shutdown`.

Several runtimes (nodes) may live in one Python process; nothing here is global.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any, Awaitable, Callable, Mapping, Protocol

from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom, Pid, Reference

from ..errors import BadArg, NotStarted
from .process import (
    DOWN_TAG,
    EXIT_TAG,
    KILL,
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    PROCESS,
    Process,
)

__all__ = ["Runtime", "Transport"]

log = bounded_logger(logging.getLogger("pynode.node"))


class Transport(Protocol):
    """What the runtime asks of the distribution layer (:class:`pynode.dist.Distribution`
    implements it): put a signal on the wire to a remote process or name."""

    def send(self, to: Pid, msg: Any, sender: Pid | None) -> None: ...
    def alias_send(self, to: Reference, msg: Any, sender: Pid | None) -> None: ...
    def reg_send(self, node: Atom, name: Atom, msg: Any, sender: Pid | None) -> None: ...
    def link(self, frm: Pid, to: Pid) -> None: ...
    def unlink(self, frm: Pid, to: Pid) -> int: ...
    def monitor(self, frm: Pid, obj: Any, ref: Reference) -> None: ...
    def demonitor(self, frm: Pid, obj: Any, ref: Reference) -> None: ...
    def link_exit(self, frm: Pid, to: Pid, reason: Any) -> None: ...
    def exit2(self, frm: Pid, to: Pid, reason: Any) -> None: ...
    def monitor_exit(self, obj: Any, watcher: Pid, ref: Reference, reason: Any) -> None: ...
    def spawn_request(self, proc: Process, node: Atom, req_id: Reference, mfa: tuple[Atom, Atom, int],
                      opts: list[Any], args: list[Any]) -> None: ...
    def forget_spawn(self, req_id: Reference) -> None: ...
    def spawn_reply(self, req_id: Reference, to: Pid, flags: int, result: Any) -> None: ...
    def ensure_connected_soon(self, peer: Atom) -> None: ...
    def connected_nodes(self) -> list[Atom]: ...


class Runtime:
    """The process table and signal router of one node (see the module docstring).
    :class:`pynode.node.Node` is the runtime with the network and the built-in services."""

    def __init__(self, name: str) -> None:
        if "@" not in name:
            raise ValueError(f"node name must be alive@host, got {name!r}")
        self.name = Atom(name)
        # A creation before EPMD hands out the real one: non-zero, 32-bit.
        self.creation = secrets.randbelow(0xFFFFFFF0) + 4
        self.started_at = time.time()
        self._procs: dict[Pid, Process] = {}
        self._names: dict[Atom, Process] = {}
        self._aliases: dict[Reference, Process] = {}
        #: monitor refs whose alias goes away with the monitor ({alias, demonitor})
        self._demonitor_aliases: set[Reference] = set()
        self._pid_ids = itertools.count(1)
        self._ref_ids = itertools.count(1)
        self._ref_salt = secrets.randbits(32)
        #: the tables the transport reads to deliver incoming signals (never writes): the
        #: same dicts as the runtime's own, so that a delivery costs one dict lookup
        self.procs: Mapping[Pid, Process] = self._procs
        self.names: Mapping[Atom, Process] = self._names
        self.aliases: Mapping[Reference, Process] = self._aliases
        self._exposed: dict[tuple[str, str], Callable[..., Any]] = {}
        self._node_watchers: dict[Pid, set[Atom] | None] = {}
        #: the distribution layer, plugged in when the node starts
        self.dist: Transport | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- identifiers ------------------------------------------------------------------------
    def make_pid(self) -> Pid:
        n = next(self._pid_ids)
        # OTP keeps 15 bits of id and 13 of serial for compatibility with old peers.
        return Pid(self.name, n & 0x7FFF, (n >> 15) & 0x1FFF, self.creation)

    def make_ref(self) -> Reference:
        n = next(self._ref_ids)
        # Three words like OTP 25 refs; the first holds 18 bits.
        return Reference(self.name, self.creation, (n & 0x3FFFF, (n >> 18) & 0xFFFFFFFF, self._ref_salt))

    def is_local(self, node: str) -> bool:
        return node == self.name

    # -- processes --------------------------------------------------------------------------
    def spawn(
        self,
        body: Callable[..., Awaitable[Any]],
        *args: Any,
        link: Process | None = None,
        monitor: Process | None = None,
        trap_exit: bool = False,
        name: str | None = None,
        remote_link: Pid | None = None,
        remote_monitor: tuple[Reference, Pid] | None = None,
    ) -> Process:
        """Start ``body(proc, *args)`` as a new process; return it. The process takes its
        first step at the next turn of the event loop, not before this returns.

        ``link``/``monitor``: a process that is linked to / monitors the new one from its
        first instant (``spawn_link``/``spawn_monitor``). ``name`` registers it.
        ``remote_link`` / ``remote_monitor`` (``(Ref, WatcherPid)``): the same for a process
        on another node (a ``SPAWN_REQUEST`` with the ``link``/``monitor`` options).
        """
        proc = Process(self, self.make_pid(), trap_exit=trap_exit)  # type: ignore[arg-type]  # a Runtime is the Node that user code sees
        if remote_link is not None:
            proc.links.add(remote_link)
        if remote_monitor is not None:
            ref, watcher = remote_monitor
            proc.monitored_by[ref] = (watcher, proc.pid)
        self._procs[proc.pid] = proc
        if name is not None:
            self.register(name, proc)
        if link is not None:
            proc.links.add(link.pid)
            link.links.add(proc.pid)
        if monitor is not None:
            ref = self.make_ref()
            proc.monitored_by[ref] = (monitor.pid, proc.pid)
            monitor.monitors[ref] = proc.pid
        proc.task = asyncio.get_running_loop().create_task(proc._run(body, args), name=f"pynode {proc.pid}")
        return proc

    def process(self, pid: Pid) -> Process | None:
        return self._procs.get(pid)

    @property
    def processes(self) -> list[Process]:
        return list(self._procs.values())

    def register(self, name: str, proc: Process) -> None:
        """Register ``proc`` under ``name`` (``register/2``). Fails if either is taken."""
        a = Atom(name)
        if a in self._names:
            raise BadArg(f"name {a} is already registered")
        if proc.name is not None:
            raise BadArg(f"{proc} already has the name {proc.name}")
        if not proc.alive:
            raise BadArg(f"{proc} is not alive")
        self._names[a] = proc
        proc.name = a

    def unregister(self, name: str) -> None:
        proc = self._names.pop(Atom(name))
        proc.name = None

    def whereis(self, name: str) -> Pid | None:
        p = self._names.get(Atom(name))
        return p.pid if p else None

    @property
    def registered(self) -> list[Atom]:
        return list(self._names)

    # -- exposing functions to rpc ---------------------------------------------------------
    def expose(self, module: str, function: str | None = None, fn: Callable[..., Any] | None = None) -> Any:
        """Make ``fn`` callable from other nodes as ``module:function(Args...)``.

        Use as ``node.expose("math", "add", add)`` or as a decorator ``@node.expose("math")``
        (the function's ``__name__`` is the Erlang function name). ``fn`` may be sync or
        async; its arity is its positional parameter count. Nothing else on this node can
        be reached by rpc.
        """
        if fn is None:
            def deco(f: Callable[..., Any]) -> Callable[..., Any]:
                self._exposed[(module, function or f.__name__)] = f
                return f
            return deco
        self._exposed[(module, function or fn.__name__)] = fn
        return fn

    def exposed(self, module: str, function: str) -> Callable[..., Any] | None:
        return self._exposed.get((str(module), str(function)))

    # -- sending ---------------------------------------------------------------------------
    def send(self, dest: Any, msg: Any, sender: Pid | None = None) -> None:
        """``dest ! msg``. ``dest``: pid, registered name (str/Atom), ``(name, node)`` or alias ref.

        Like Erlang, sending to something that does not exist is silently dropped, except
        a local *name* that is not registered, which raises ``ValueError`` (``badarg``).
        """
        t = type(dest)
        if t is Pid:
            if dest.node == self.name:
                p = self._procs.get(dest)
                if p is not None:
                    p.deliver(msg)
            else:
                self._dist().send(dest, msg, sender)
        elif t is Reference:
            if dest.node == self.name:
                p = self._aliases.get(dest)
                if p is not None:
                    p.deliver(msg)
            else:
                self._dist().alias_send(dest, msg, sender)
        elif t is tuple and len(dest) == 2:
            name, node = dest
            if node == self.name:
                p = self._names.get(Atom(name))
                if p is not None:
                    p.deliver(msg)
            else:
                self._dist().reg_send(Atom(node), Atom(name), msg, sender)
        elif isinstance(dest, str):
            p = self._names.get(Atom(dest))
            if p is None:
                raise BadArg(f"no process registered as {dest!r}")
            p.deliver(msg)
        else:
            raise BadArg(f"cannot send to {dest!r}")

    def _dist(self) -> Transport:
        if self.dist is None:
            raise NotStarted("the node is not started: await node.start() first")
        return self.dist

    # -- aliases ---------------------------------------------------------------------------
    def _alias(self, proc: Process) -> Reference:
        ref = self.make_ref()
        self._aliases[ref] = proc
        proc.aliases.add(ref)
        return ref

    def _unalias(self, proc: Process, ref: Reference) -> None:
        if self._aliases.get(ref) is proc:
            del self._aliases[ref]
        proc.aliases.discard(ref)
        self._demonitor_aliases.discard(ref)

    # -- links -----------------------------------------------------------------------------
    def _link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid or pid in proc.links:
            return
        if pid.node == self.name:
            other = self._procs.get(pid)
            if other is None:
                self.exit_signal(pid, proc.pid, NOPROC, link=True, force=True)
                return
            proc.links.add(pid)
            other.links.add(proc.pid)
        else:
            proc.links.add(pid)
            proc.unlinking.pop(pid, None)
            self._dist().link(proc.pid, pid)

    def _unlink(self, proc: Process, pid: Pid) -> None:
        if pid not in proc.links:
            return
        proc.links.discard(pid)
        if pid.node == self.name:
            other = self._procs.get(pid)
            if other is not None:
                other.links.discard(proc.pid)
        else:
            proc.unlinking[pid] = self._dist().unlink(proc.pid, pid)

    # -- monitors --------------------------------------------------------------------------
    def _monitor(self, proc: Process, target: Any, *, alias: str | None = None) -> Reference:
        ref = self.make_ref()
        if alias is not None:
            self._aliases[ref] = proc
            proc.aliases.add(ref)
            if alias == "demonitor":
                self._demonitor_aliases.add(ref)
        if type(target) is Pid:
            obj: Any = target
            node = target.node
        elif type(target) is tuple and len(target) == 2:
            obj = (Atom(target[0]), Atom(target[1]))
            node = obj[1]
        elif isinstance(target, str):
            obj = (Atom(target), self.name)
            node = self.name
        else:
            raise BadArg(f"cannot monitor {target!r}")
        proc.monitors[ref] = obj
        if node == self.name:
            tp = self._procs.get(obj) if type(obj) is Pid else self._names.get(obj[0])
            if tp is None or not tp.alive:
                self._fire_down(proc, ref, NOPROC)
            else:
                tp.monitored_by[ref] = (proc.pid, obj)
        else:
            self._dist().monitor(proc.pid, obj, ref)
        return ref

    def _demonitor(self, proc: Process, ref: Reference) -> None:
        obj = proc.monitors.pop(ref, None)
        if ref in self._demonitor_aliases:
            self._unalias(proc, ref)
        if obj is None:
            return
        node = obj.node if type(obj) is Pid else obj[1]
        if node == self.name:
            tp = self._procs.get(obj) if type(obj) is Pid else self._names.get(obj[0])
            if tp is not None:
                tp.monitored_by.pop(ref, None)
            else:  # a name monitor: the name may have moved since; search the holders
                for p in self._procs.values():
                    p.monitored_by.pop(ref, None)
        else:
            self._dist().demonitor(proc.pid, obj, ref)

    def _fire_down(self, watcher: Process, ref: Reference, reason: Any) -> None:
        """Deliver ``('DOWN', Ref, process, Object, Reason)`` for a monitor ``watcher`` holds."""
        obj = watcher.monitors.pop(ref, None)
        if obj is None:
            return
        if ref in self._demonitor_aliases:
            self._unalias(watcher, ref)
        watcher.deliver((DOWN_TAG, ref, PROCESS, obj, reason))

    # -- exit signals ----------------------------------------------------------------------
    def exit_signal(self, from_pid: Pid, to_pid: Pid, reason: Any, *, link: bool, force: bool = False) -> None:
        """An exit signal from ``from_pid`` to ``to_pid``: a link breaking (``link=True``)
        or ``exit/2``. Remote targets get the matching control message."""
        if to_pid.node != self.name:
            if link:
                self._dist().link_exit(from_pid, to_pid, reason)
            else:
                self._dist().exit2(from_pid, to_pid, reason)
            return
        target = self._procs.get(to_pid)
        if target is None or not target.alive:
            return
        if link:
            if from_pid in target.unlinking:
                return  # an unlink is in flight: the link is already gone for this side
            if from_pid not in target.links and not force:
                return
            target.links.discard(from_pid)
            if target.trap_exit:
                target.deliver((EXIT_TAG, from_pid, reason))
            elif reason != NORMAL or type(reason) is not Atom:
                target.kill(reason)
            return
        if reason == KILL and type(reason) is Atom:
            target.kill(KILLED)
        elif target.trap_exit:
            target.deliver((EXIT_TAG, from_pid, reason))
        elif reason != NORMAL or type(reason) is not Atom:
            target.kill(reason)
        elif from_pid == to_pid:
            target.kill(NORMAL)

    def _process_exited(self, proc: Process, reason: Any) -> None:
        proc.exit_reason = reason
        self._procs.pop(proc.pid, None)
        if proc.name is not None and self._names.get(proc.name) is proc:
            del self._names[proc.name]
        for ref in list(proc.aliases):
            self._unalias(proc, ref)
        for pid in list(proc.links):
            self.exit_signal(proc.pid, pid, reason, link=True)
        proc.links.clear()
        for ref, (watcher, obj) in list(proc.monitored_by.items()):
            if watcher.node == self.name:
                w = self._procs.get(watcher)
                if w is not None:
                    self._fire_down(w, ref, reason)
            else:
                self._dist().monitor_exit(obj, watcher, ref, reason)
        proc.monitored_by.clear()
        for ref, obj in list(proc.monitors.items()):
            node = obj.node if type(obj) is Pid else obj[1]
            if node == self.name:
                tp = self._procs.get(obj) if type(obj) is Pid else self._names.get(obj[0])
                if tp is not None:
                    tp.monitored_by.pop(ref, None)
            elif self.dist is not None:
                self.dist.demonitor(proc.pid, obj, ref)
        proc.monitors.clear()
        self._node_watchers.pop(proc.pid, None)

    # -- incoming signals from peers (called by pynode.dist.incoming) ----------------------
    def remote_link(self, from_pid: Pid, to_pid: Pid) -> None:
        target = self._procs.get(to_pid)
        if target is None or not target.alive:
            self._dist().link_exit(to_pid, from_pid, NOPROC)
            return
        target.links.add(from_pid)
        target.unlinking.pop(from_pid, None)

    def remote_unlink(self, from_pid: Pid, to_pid: Pid) -> None:
        target = self._procs.get(to_pid)
        if target is not None:
            target.links.discard(from_pid)

    def remote_unlink_ack(self, from_pid: Pid, to_pid: Pid, unlink_id: int) -> None:
        target = self._procs.get(to_pid)
        if target is not None and target.unlinking.get(from_pid) == unlink_id:
            del target.unlinking[from_pid]

    def remote_monitor(self, watcher: Pid, target: Any, ref: Reference) -> None:
        if type(target) is Pid:
            tp = self._procs.get(target)
            obj: Any = target
        else:
            tp = self._names.get(target)
            obj = target
        if tp is None or not tp.alive:
            self._dist().monitor_exit(obj, watcher, ref, NOPROC)
            return
        tp.monitored_by[ref] = (watcher, obj)

    def remote_demonitor(self, watcher: Pid, target: Any, ref: Reference) -> None:
        tp = self._procs.get(target) if type(target) is Pid else self._names.get(target)
        if tp is not None:
            tp.monitored_by.pop(ref, None)

    def remote_down(self, watcher: Pid, ref: Reference, reason: Any) -> None:
        w = self._procs.get(watcher)
        if w is not None:
            self._fire_down(w, ref, reason)

    def connection_lost(self, node: Atom) -> None:
        """The connection to ``node`` went down: ``noconnection`` everywhere it matters."""
        for proc in list(self._procs.values()):
            for pid in [p for p in proc.links if p.node == node]:
                self.exit_signal(pid, proc.pid, NOCONNECTION, link=True)
            for pid in [p for p in proc.unlinking if p.node == node]:
                del proc.unlinking[pid]
            for ref, obj in list(proc.monitors.items()):
                if (obj.node if type(obj) is Pid else obj[1]) == node:
                    self._fire_down(proc, ref, NOCONNECTION)
            for ref, (watcher, _obj) in list(proc.monitored_by.items()):
                if watcher.node == node:
                    del proc.monitored_by[ref]
        self.notify_nodes(Atom("nodedown"), node)

    # -- node monitoring -------------------------------------------------------------------
    def monitor_nodes(self, proc: Process, on: bool = True) -> None:
        """``net_kernel:monitor_nodes(true)`` (hidden nodes included): ``proc`` receives
        ``('nodeup', Node)`` and ``('nodedown', Node)``."""
        if on:
            self._node_watchers[proc.pid] = None
        else:
            self._node_watchers.pop(proc.pid, None)

    def monitor_node(self, proc: Process, node: str, on: bool = True) -> None:
        """``erlang:monitor_node(Node, true)``: one ``('nodedown', Node)`` when it goes down."""
        node_a = Atom(node)
        s = self._node_watchers.setdefault(proc.pid, set())
        if s is None:
            return
        if on:
            s.add(node_a)
            if self.dist is not None:
                self.dist.ensure_connected_soon(node_a)
        else:
            s.discard(node_a)

    def notify_nodes(self, event: Atom, node: Atom) -> None:
        for pid, which in list(self._node_watchers.items()):
            p = self._procs.get(pid)
            if p is None:
                continue
            if which is None:
                p.deliver((event, node))
            elif event == "nodedown" and node in which:
                which.discard(node)
                p.deliver((event, node))

    @property
    def connected_nodes(self) -> list[Atom]:
        return [] if self.dist is None else self.dist.connected_nodes()

    # -- lifetime --------------------------------------------------------------------------
    def create_task(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        """A task owned by the node: cancelled when the node stops."""
        t: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def shutdown(self, reason: Any) -> None:
        """Kill every process with ``reason``, then cancel and await every owned task."""
        for p in list(self._procs.values()):
            p.kill(reason)
        tasks = [p.task for p in list(self._procs.values()) if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
