"""The job host ``pynode_jobs`` (Elixir: ``Pynode.Jobs.Host``): the GenServer on every node
that hosts jobs. It starts and adopts jobs, stores the replicas other hosts send it and
adopts them when their owner's node dies, tells its jobs when the set of hosts changes,
answers ``{client, Op, Args}`` for client-only nodes, and at shutdown hands every job off.

Owns: :class:`JobHost`, the replica store (``_Replica``), the handoff driver, and
:func:`start_host` (how ``Node.start`` starts it). May import: :mod:`erl_interop`,
:mod:`pynode.errors`, :mod:`pynode.otp.gen_server`, :mod:`pynode.core.process`, :mod:`pynode.registry`
(``key_bytes``) and every other module of :mod:`pynode.jobs`; nothing imports it but the
package's ``__init__``.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom, Pid, Reference

from ..otp.gen_server import NOREPLY as _NOREPLY, From, GenServer, reply as gen_reply
from ..core.process import DOWN_TAG, NOCONNECTION, Process, ReceiveTimeout, exception_reason
from ..registry import key_bytes
from .client import _client_op
from .job import ADMIT, _Job
from .format import format_term
from .kinds import RunKind, kind_class, kinds
from .protocol import (
    ADOPT,
    CLIENT,
    DROP_REPLICA,
    ERROR,
    HANDOFF,
    HOST_KEY,
    HOST_NAME,
    K_STATE,
    K_STATUS,
    LIST,
    LOAD_KEY,
    MEMBERSHIP,
    NODEDOWN,
    NODEUP,
    OK,
    REPLICAS,
    REPLICATE,
    START,
    STOPPING,
    TERMINAL,
    UNKNOWN_KIND,
    adopts,
    cfg,
    has_room,
    job_key,
    load_of,
    node_order,
    place,
    secs,
    wire,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["JobHost", "start_host"]

log = bounded_logger(logging.getLogger("pynode.jobs"))

_SHUTDOWN = Atom("$pynode_jobs_shutdown")
_CHECK = Atom("$pynode_jobs_check")


def _id_bytes(job_id: Any) -> bytes:
    return key_bytes(job_id)


@dataclasses.dataclass(slots=True)
class _Replica:
    id: Any
    kind: Atom
    portable: Any
    seq: int
    owner: Pid
    replicas: list[Atom]
    #: when it was stored, on this node's monotonic clock (seconds): "Waited time"
    stored_at: float = 0.0


@dataclasses.dataclass(slots=True)
class _Entry:
    job: _Job
    pid: Pid
    ref: Reference


def _kinds_key(value: Any) -> Any:
    """A host's advertised kinds as a hashable value (lists become tuples)."""
    return tuple(value) if isinstance(value, list) else value


class JobHost(GenServer):
    """The ``pynode_jobs`` process. Start with :func:`start_host` (done by ``Node.start``)."""

    handoff_driver: Pid | None = None

    async def init(self, *args: Any) -> None:
        node = self.process.node
        conf_kinds = cfg(node, "job_kinds")
        known = kinds()
        if conf_kinds != Atom("all"):
            wanted = {Atom(str(x).removeprefix("Elixir.")) for x in (conf_kinds if isinstance(conf_kinds, list) else [conf_kinds])}
            known = {k: v for k, v in known.items() if k in wanted}
        self.kinds: list[Atom] = sorted(known)
        self.stopping = False
        #: the handoff is over: nothing more is adopted here (the node is about to go)
        self.closed = False
        self.jobs: dict[Pid, _Entry] = {}
        self._job_refs: dict[Reference, Pid] = {}
        self.replicas: dict[bytes, _Replica] = {}
        self._owner_mons: dict[Pid, Reference] = {}
        self._owner_refs: dict[Reference, Pid] = {}
        #: the replica keys held per owner pid (so an owner's DOWN and a forget are O(1))
        self._by_owner: dict[Pid, set[bytes]] = {}
        self.orphans: set[bytes] = set()
        #: processes running a ``{client, Op, Args}`` operation for a caller
        self.client_workers: set[Process] = set()
        self._rr = 0
        # -- load (protocol, "Load") --
        max_jobs = cfg(node, "max_jobs")
        self.max_jobs: Any = max_jobs if type(max_jobs) is int else Atom("infinity")
        #: run-kind jobs holding a slot; the queue (oldest first, a dict as an ordered set)
        self.slots: set[Pid] = set()
        self.queue: dict[Pid, None] = {}
        #: queued jobs sent to another host (overflow), with when, on the loop's clock
        self._moving: dict[Pid, float] = {}
        self._published: Any = None
        #: jobs this host placed on each target since the last look at the loads (handoff)
        self._placed: dict[Atom, int] = {}
        node.monitor_nodes(self.process)
        r = await node.registry.reg(self.process, HOST_KEY, list(self.kinds))
        if r != OK:
            raise RuntimeError(f"job host could not register {HOST_KEY}: {r!r}")
        #: the host nodes last seen (protocol, "Replicas follow membership")
        self._hosts_seen: frozenset[tuple[Atom, Any]] = frozenset()
        self._check_timer: asyncio.TimerHandle | None = None
        await self._publish_load()
        self._check_membership()

    @property
    def node(self) -> "Node":
        return self.process.node

    # -- inspection -----------------------------------------------------------------------
    def list(self) -> builtins.list[tuple[Any, Atom, Pid]]:
        """``[(Id, Kind, Pid)]`` of the jobs this host runs (the ``list`` call)."""
        return [(e.job.id, e.job.kind, e.pid) for e in self.jobs.values() if e.job.ready]

    # -- calls ----------------------------------------------------------------------------
    async def handle_call(self, request: Any, from_: From) -> Any:
        if request == LIST and type(request) is Atom:
            return self.list()
        if request == REPLICAS and type(request) is Atom:
            return [(r.id, r.kind, r.owner, r.seq) for r in self.replicas.values()]
        if type(request) is not tuple or not request:
            return (ERROR, (Atom("unknown_call"), request))
        tag = request[0]
        if tag == START and len(request) == 4:
            _, kind, job_id, args = wire(request)
            if self.stopping:
                return (ERROR, STOPPING)
            if kind not in self.kinds or type(kind) is not Atom:
                return (ERROR, UNKNOWN_KIND)
            self._spawn_job(kind, job_id, lambda job, proc: job.run_start(proc, args, from_), fresh=True)
            return _NOREPLY
        if tag == ADOPT and len(request) == 4:
            _, kind, job_id, portable = request
            if self.stopping:
                return (ERROR, STOPPING)
            if kind not in self.kinds or type(kind) is not Atom:
                return (ERROR, UNKNOWN_KIND)
            if not isinstance(portable, dict) or K_STATE not in portable:
                return (ERROR, Atom("bad_portable"))
            self._drop_local_replica(job_id)
            self._spawn_job(kind, job_id, lambda job, proc: job.run_adopt(proc, portable, from_),
                            state=portable.get(K_STATE))
            return _NOREPLY
        if tag == REPLICATE and len(request) == 7:
            return self._store_replica(*request[1:])
        if tag == CLIENT and len(request) == 3:
            if self.stopping:
                # Left unanswered: the caller's call ends with an exit when this node goes
                # (noconnection / nodedown) and it retries through another host node, with
                # nothing applied here.
                return _NOREPLY
            op, args = request[1], request[2]
            workers = self.client_workers

            async def body(proc: Process) -> None:
                try:
                    try:
                        value = await _client_op(proc, op, args if isinstance(args, list) else [args])
                    except Exception as e:
                        value = (ERROR, exception_reason(e))
                    gen_reply(proc, from_, value)
                finally:
                    workers.discard(proc)

            workers.add(self.node.spawn(body))
            return _NOREPLY
        return (ERROR, (Atom("unknown_call"), request))

    async def handle_cast(self, request: Any) -> None:
        if type(request) is tuple and len(request) == 3 and request[0] == DROP_REPLICA:
            kb = _id_bytes(request[1])
            rep = self.replicas.get(kb)
            if rep is not None and rep.owner == request[2]:
                self._forget_replica(kb)

    async def handle_info(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            return
        if msg[0] == _SHUTDOWN and len(msg) == 2 and isinstance(msg[1], asyncio.Future):
            # From shutdown() on this node (a local message: it carries a Python future)
            await self._begin_shutdown(msg[1])
            return
        if msg[0] == DOWN_TAG and len(msg) == 5:
            ref, reason = msg[1], msg[4]
            pid = self._job_refs.pop(ref, None)
            if pid is not None:
                self.jobs.pop(pid, None)
                self._leave(pid)
                return
            owner = self._owner_refs.pop(ref, None)
            if owner is not None:
                self._owner_mons.pop(owner, None)
                self._owner_down(owner, reason)
        elif msg[0] == NODEDOWN and len(msg) == 2:
            self._review_orphans()
            self._check_membership()
        elif msg[0] == NODEUP and len(msg) == 2:
            self._check_membership()
        elif msg[0] == _CHECK and len(msg) == 1:
            self._check_timer = None
            self._check_membership()
            if not self.stopping:
                self._overflow()
                await self._publish_load()

    def _check_membership(self) -> None:
        """Tell every job when the set of host nodes changed; look again in ``replica_check`` ms."""
        # the host nodes with the kinds each lists: a host that withdraws a kind is a change
        hosts = frozenset((p.node, _kinds_key(v)) for p, v in self.node.registry.lookup_values(HOST_KEY))
        if hosts != self._hosts_seen:
            self._hosts_seen = hosts
            for pid, e in self.jobs.items():
                if e.job.ready:
                    self.process.send(pid, (MEMBERSHIP,))
        if self._check_timer is None:
            loop = asyncio.get_running_loop()
            self._check_timer = loop.call_later(secs(cfg(self.node, "replica_check")), self.process.deliver, (_CHECK,))

    async def terminate(self, reason: Any) -> None:
        if self._check_timer is not None:
            self._check_timer.cancel()
            self._check_timer = None

    # -- load (protocol, "Load") ----------------------------------------------------------
    def load(self) -> tuple[int, int, Any]:
        """``{Running, Queued, MaxJobs}``: slots held, jobs queued, the limit."""
        return (len(self.slots), len(self.queue), self.max_jobs)

    def _free_slot(self) -> bool:
        return type(self.max_jobs) is not int or len(self.slots) < self.max_jobs

    def _admission(self, kind: Atom, state: Any, fresh: bool) -> bool | None:
        """True: the job takes a slot; False: it waits in the queue; None: it needs neither
        (not a run kind, or it has ended)."""
        try:
            if not issubclass(kind_class(kind), RunKind):
                return None
        except KeyError:
            return None
        if not fresh and (not isinstance(state, dict) or state.get(K_STATUS) in TERMINAL):
            return None
        return self._free_slot()

    def job_load(self, pid: Pid, status: Any) -> None:
        """A run-kind job's status changed: an ended job frees its slot or leaves the queue."""
        if status in TERMINAL:
            self._leave(pid)

    def _leave(self, pid: Pid) -> None:
        """``pid`` holds no slot and waits no more (ended, moved, dead): the oldest queued
        jobs take the freed slots."""
        self.slots.discard(pid)
        self.queue.pop(pid, None)
        self._moving.pop(pid, None)
        while self.queue and self._free_slot():
            nxt = next((p for p in self.queue if p not in self._moving), None)
            if nxt is None:
                return
            del self.queue[nxt]
            self.slots.add(nxt)
            self.process.send(nxt, (ADMIT,))

    async def _publish_load(self) -> None:
        """``{p, g, pynode_job_load}``, when it changed (at most once per look)."""
        value = self.load()
        if value == self._published:
            return
        self._published = value
        r = await self.node.registry.reg(self.process, LOAD_KEY, value)
        if r != OK:
            log.warning("%s: could not publish the job load: %r", self.node.name, r)

    def _host_loads(self, kind: Atom) -> "builtins.list[tuple[Atom, int, int, Any]]":
        """``[{Node, Running, Queued, MaxJobs}]`` of the other hosts that know ``kind``."""
        node = self.node
        loads = {pid.node: v for pid, v in node.registry.lookup_values(LOAD_KEY)}
        out: dict[Atom, tuple[Atom, int, int, Any]] = {}
        for pid, ks in node.registry.lookup_values(HOST_KEY):
            if pid.node != node.name and isinstance(ks, list) and kind in ks and pid.node not in out:
                r, q, m = load_of(loads.get(pid.node))
                out[pid.node] = (pid.node, r, q + self._placed.get(pid.node, 0), m)
        return builtins.list(out.values())

    def _overflow(self) -> None:
        """Queued jobs go to the other hosts with room by their published loads (protocol,
        "Load", overflow), at most their room each."""
        if not self.queue:
            self._placed.clear()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        retry_after = secs(cfg(self.node, "adopt_timeout"))
        self._placed.clear()  # the loads were published since the last look
        for pid in list(self.queue):
            sent = self._moving.get(pid)
            if sent is not None and now - sent < retry_after:
                continue
            e = self.jobs.get(pid)
            if e is None or not e.job.ready:
                continue
            room = [c for c in self._host_loads(e.job.kind) if has_room((c[1], c[2], c[3]))]
            target = place(room, self._rr)
            if type(target) is not Atom or target == Atom("none"):
                continue
            self._rr += 1
            self._placed[target] = self._placed.get(target, 0) + 1
            self._moving[pid] = now
            log.info("%s: job %s waits here; moving it to %s, which has room", self.node.name, format_term(e.job.id), target)
            self.process.send(pid, (HANDOFF, target))

    # -- jobs -----------------------------------------------------------------------------
    def _spawn_job(self, kind: Atom, job_id: Any, run: Callable[[_Job, Process], Awaitable[None]],
                   state: Any = None, fresh: bool = False) -> _Job:
        job = _Job(self, kind, job_id)
        job.admitted = self._admission(kind, state, fresh)

        async def body(proc: Process) -> None:
            await run(job, proc)

        # Jobs trap exits: a name_conflict signal merges the copy instead of killing it.
        proc = self.node.spawn(body, trap_exit=True)
        ref = self.process.monitor(proc.pid)
        self.jobs[proc.pid] = _Entry(job, proc.pid, ref)
        self._job_refs[ref] = proc.pid
        if job.admitted is True:
            self.slots.add(proc.pid)
        elif job.admitted is False:
            self.queue[proc.pid] = None
        return job

    # -- replicas -------------------------------------------------------------------------
    def _store_replica(self, job_id: Any, kind: Any, portable: Any, seq: Any, owner: Any, replicas: Any) -> Any:
        if type(owner) is not Pid or type(seq) is not int or not isinstance(replicas, list):
            return (ERROR, Atom("badarg"))
        kb = _id_bytes(job_id)
        cur = self.replicas.get(kb)
        # A higher Seq or a new OwnerPid replaces; an equal Seq from the same owner is the
        # same change sent again (re-replication), so refreshing it is harmless.
        if cur is None or cur.owner != owner or seq >= cur.seq:
            old_owner = cur.owner if cur is not None else None
            if old_owner is not None and old_owner != owner:
                self._unindex(old_owner, kb)
            self.replicas[kb] = _Replica(job_id, kind, portable, seq, owner, [Atom(n) for n in replicas],
                                         time.monotonic())
            self._by_owner.setdefault(owner, set()).add(kb)
            self.orphans.discard(kb)
            if owner not in self._owner_mons:
                ref = self.process.monitor(owner)
                self._owner_mons[owner] = ref
                self._owner_refs[ref] = owner
            if old_owner is not None and old_owner != owner:
                self._maybe_unmonitor(old_owner)
        return OK

    def _forget_replica(self, kb: bytes) -> None:
        rep = self.replicas.pop(kb, None)
        self.orphans.discard(kb)
        if rep is not None:
            self._unindex(rep.owner, kb)
            self._maybe_unmonitor(rep.owner)

    def _drop_local_replica(self, job_id: Any) -> None:
        self._forget_replica(_id_bytes(job_id))

    def _unindex(self, owner: Pid, kb: bytes) -> None:
        kbs = self._by_owner.get(owner)
        if kbs is not None:
            kbs.discard(kb)
            if not kbs:
                del self._by_owner[owner]

    def _maybe_unmonitor(self, owner: Pid) -> None:
        if self._by_owner.get(owner):
            return
        ref = self._owner_mons.pop(owner, None)
        if ref is not None:
            self._owner_refs.pop(ref, None)
            self.process.demonitor(ref, flush=True)

    def _owner_down(self, owner: Pid, reason: Any) -> None:
        for kb in list(self._by_owner.get(owner, ())):
            if reason == NOCONNECTION and type(reason) is Atom:
                self.orphans.add(kb)
            else:
                self._forget_replica(kb)
        self._review_orphans()

    def _review_orphans(self) -> None:
        """Adopt the orphaned replicas this node is first in line for (protocol, "Replication")."""
        if self.closed:
            return
        node = self.node
        alive = set(node.connected_nodes)
        for kb in list(self.orphans):
            rep = self.replicas[kb]
            if not adopts(node.name, rep.replicas, alive):
                continue
            holder = node.registry.where(job_key(rep.id))
            if type(holder) is Pid and holder != rep.owner and (holder.node == node.name or holder.node in alive):
                continue  # already running elsewhere; keep the replica until told otherwise
            self._forget_replica(kb)
            if rep.kind not in self.kinds or not isinstance(rep.portable, dict):
                log.error("%s: cannot adopt job %s of unknown kind %s", node.name, format_term(rep.id), rep.kind)
                continue
            log.info("%s: owner %s of job %s is gone; adopting it from the replica (seq %d)", node.name, rep.owner, format_term(rep.id), rep.seq)
            waited = int((time.monotonic() - rep.stored_at) * 1000)
            portable = dict(rep.portable)
            try:
                portable[K_STATE] = kind_class(rep.kind).elapse(portable.get(K_STATE), max(waited, 0))
            except Exception:
                log.exception("job %s: elapse(%d ms) failed; adopting the state as stored", format_term(rep.id), waited)
            owner, olds = rep.owner, rep.replicas
            self._spawn_job(rep.kind, rep.id, lambda job, proc: job.run_adopt(proc, portable, None, owner, olds),
                            state=portable.get(K_STATE))

    # -- graceful shutdown ----------------------------------------------------------------
    async def _begin_shutdown(self, done: "asyncio.Future[None]") -> None:
        if self.stopping:
            if not done.done():
                done.set_result(None)
            return
        self.stopping = True
        await self.node.registry.unreg(self.process, HOST_KEY)
        await self.node.registry.unreg(self.process, LOAD_KEY)
        self._placed.clear()
        host = self

        loop = asyncio.get_running_loop()
        deadline = loop.time() + secs(cfg(self.node, "handoff_timeout"))

        async def driver(proc: Process) -> None:
            try:
                tried: set[Pid] = set()
                await host._hand_off_all(proc, tried, deadline)
                await host._wait_client_workers(deadline)
                await host._hand_off_all(proc, tried, deadline)  # any job adopted from a replica meanwhile
            finally:
                host.handoff_driver = None
                host.closed = True
                if not done.done():
                    done.set_result(None)

        self.handoff_driver = self.node.spawn(driver).pid

    async def _wait_client_workers(self, deadline: float) -> None:
        """Let the client operations already running here finish (their callers get their
        answers) before the node goes, for at most the rest of the handoff time."""
        loop = asyncio.get_running_loop()
        while self.client_workers:
            left = deadline - loop.time()
            tasks = [p.task for p in self.client_workers if p.task is not None and not p.task.done()]
            if left <= 0 or not tasks:
                if self.client_workers and left <= 0:
                    log.warning("%s: %d client operation(s) still running at shutdown", self.node.name, len(self.client_workers))
                return
            await asyncio.wait(tasks, timeout=left)

    def _handoff_order(self, e: _Entry) -> tuple[Atom, ...]:
        """The targets for one job: first the one ``place`` picks among the other hosts that
        know its kind (their published loads plus what this handoff has sent them), then the
        others, sorted (empty when there is none)."""
        cands = self._host_loads(e.job.kind)
        first = place(cands, self._rr)
        if type(first) is not Atom or first == Atom("none"):
            return ()
        self._rr += 1
        self._placed[first] = self._placed.get(first, 0) + 1
        rest = sorted((c[0] for c in cands if c[0] != first), key=node_order)
        return (first, *rest)

    async def _settled(self, tried: set[Pid], timeout: float) -> None:
        """Wait until one of the jobs not handed off yet becomes ready (it can move now) or
        ends (nothing to move), for at most ``timeout`` seconds."""
        readies: list[asyncio.Future[Any]] = []
        ends: list[asyncio.Future[Any]] = []
        for pid, e in self.jobs.items():
            if pid in tried or e.job.ready:
                continue
            readies.append(asyncio.ensure_future(e.job.ready_event.wait()))
            p = self.node.process(pid)
            if p is not None and p.task is not None:
                ends.append(p.task)
        if not readies:
            return
        try:
            await asyncio.wait(readies + ends, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in readies:  # only our own waiters; the jobs' tasks are theirs
                w.cancel()

    async def _hand_off_all(self, proc: Process, tried: set[Pid], deadline: float) -> None:
        """Hand every ready job off, at most ``handoff_concurrency`` at a time (protocol,
        "Graceful shutdown"), until ``deadline``. ``proc`` (the driver) monitors the jobs in
        flight and receives their ``DOWN`` (moved) or ``handoff_failed`` (next target)."""
        node = self.node
        loop = asyncio.get_running_loop()
        limit = max(1, int(cfg(node, "handoff_concurrency")))
        #: monitor ref -> (job entry, the targets not tried yet)
        inflight: dict[Reference, tuple[_Entry, tuple[Atom, ...]]] = {}
        by_pid: dict[Pid, Reference] = {}
        queue: collections.deque[_Entry] = collections.deque()

        def give_up(ref: Reference) -> None:
            e, _ = inflight.pop(ref)
            del by_pid[e.pid]
            proc.demonitor(ref, flush=True)
            log.warning("%s: job %s could not be handed off; it dies with the node", node.name, format_term(e.job.id))

        def ours(m: Any) -> bool:
            if type(m) is not tuple:
                return False
            if len(m) == 5 and m[0] == DOWN_TAG:
                return m[1] in inflight
            return len(m) == 3 and m[0] == "handoff_failed" and m[1] in by_pid

        while True:
            while len(inflight) < limit and loop.time() < deadline:
                if not queue:
                    queue.extend(e for e in self.jobs.values() if e.pid not in tried and e.job.ready)
                    if not queue:
                        break
                e = queue.popleft()
                if e.pid in tried or e.pid not in self.jobs:
                    continue
                tried.add(e.pid)
                order = self._handoff_order(e)
                if not order:
                    log.warning("%s: no other host knows %s; job %s dies with the node", node.name, e.job.kind, format_term(e.job.id))
                    continue
                mref = proc.monitor(e.pid)
                inflight[mref] = (e, order[1:])
                by_pid[e.pid] = mref
                proc.send(e.pid, (HANDOFF, order[0]))
            left = deadline - loop.time()
            if not inflight:
                if left <= 0 or all(p in tried for p in self.jobs):
                    if left <= 0 and any(p not in tried for p in self.jobs):
                        log.warning("%s: handoff time is up; the remaining jobs die with the node", node.name)
                    return
                await self._settled(tried, left)  # jobs still starting or adopting
                continue
            try:
                m = await proc.receive(ours, timeout=max(left, 0))
            except ReceiveTimeout:
                for ref in list(inflight):
                    give_up(ref)
                continue
            if m[0] == DOWN_TAG:
                e, _ = inflight.pop(m[1])
                del by_pid[e.pid]
                continue
            ref = by_pid[m[1]]
            e, rest = inflight[ref]
            if rest:
                inflight[ref] = (e, rest[1:])
                proc.send(e.pid, (HANDOFF, rest[0]))
            else:
                give_up(ref)

    async def shutdown(self) -> None:
        """Graceful handoff (protocol, "Graceful shutdown"): stop taking jobs, move each job
        to another host, return when done. Run by ``Node.stop`` before anything is killed."""
        proc = self.process
        if not proc.alive or proc.task is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Straight to the host's mailbox (no helper process calling it): the host begins the
        # handoff in its own loop, and its driver resolves `done` when the handoff is over.
        proc.deliver((_SHUTDOWN, done))
        finished, _ = await asyncio.wait((done, proc.task), timeout=secs(cfg(self.node, "handoff_timeout")),
                                         return_when=asyncio.FIRST_COMPLETED)
        if done not in finished:
            reason = proc.exit_reason if proc.task in finished else Atom("timeout")
            log.error("%s: job handoff did not complete: %s", self.node.name, reason)
            done.cancel()




async def start_host(node: "Node") -> JobHost:
    """Start ``pynode_jobs`` on ``node`` (done by ``Node.start`` unless the node's config has
    ``host_jobs`` false, which keeps it as ``node.jobs``) and hook its handoff into ``Node.stop``."""
    host = await JobHost.start(node, name=HOST_NAME)
    assert isinstance(host, JobHost)
    node.on_stop(host.shutdown)
    return host
