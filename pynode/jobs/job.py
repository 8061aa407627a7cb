"""The job process (Elixir: ``Pynode.Jobs.JobServer``): one process per job, serving
``{pynode_job_op, OpId, Request}`` calls one at a time, replicating every change before it
acknowledges it, following the set of hosts, moving on a handoff and merging with its other
copy after a partition.

Owns: :class:`_Job` and :class:`JobOwner`, what a job needs of its host (a ``Protocol``:
the host is above this module; it creates and spawns jobs and sends them messages, and a
job sees it only through this). May import: :mod:`erl_interop`, :mod:`pynode.errors`, :mod:`pynode.otp.gen_server`,
:mod:`pynode.core.process`, and :mod:`pynode.jobs.protocol`, :mod:`~pynode.jobs.format`,
:mod:`~pynode.jobs.kinds`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from erl_interop.bounded import bounded_logger
from erl_interop import encode
from erl_interop.terms import Atom, Pid, Reference

from ..errors import CallError
from ..otp.gen_server import GEN_CALL, From, reply as gen_reply
from ..core.process import DOWN_TAG, EXIT_TAG, NORMAL, Exit, Process, exception_reason
from .format import format_short, format_term
from .kinds import JobContext, JobError, Reply, RunContext, RunKind, kind_class
from .protocol import (
    ADOPT,
    ALREADY_REGISTERED,
    BACKOFF_FIRST,
    BACKOFF_MAX,
    DROP_REPLICA,
    ERROR,
    GET_STATE,
    HANDOFF,
    HOST_KEY,
    HOST_NAME,
    JOB_ALREADY_STARTED,
    JOB_OP,
    K_ID,
    K_KIND,
    K_RECENT,
    K_SEQ,
    K_STATE,
    MEMBERSHIP,
    MERGE,
    K_STATUS,
    NAME_CONFLICT,
    NOT_THIS_JOB,
    OK,
    RECENT_MAX,
    REPLICATE,
    cfg,
    job_key,
    merge_recent,
    replica_targets,
    run_admit,
    run_queue,
    secs,
    wire,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["JobOwner"]

log = bounded_logger(logging.getLogger("pynode.jobs"))

#: the tag of a kind's timer message to its job, ``{TIMER, TimerId, Tag}``
_TIMER = Atom("$pynode_job_timer")
#: a run kind's ``run`` asks for a checkpoint: ``{CHECKPOINT, Gen, State, Future}`` (local only)
_CHECKPOINT = Atom("$pynode_job_checkpoint")
#: a run kind's ``run`` ended: ``{RUN_END, Gen, Ok, ResultOrError}`` (local only)
_RUN_END = Atom("$pynode_job_run_end")
#: the host gives a queued job a slot (protocol, "Load"): ``{ADMIT}``
ADMIT = Atom("$pynode_job_admit")


class JobOwner(Protocol):
    """What a job uses of the host that spawned it (:class:`pynode.jobs.host.JobHost`)."""

    @property
    def node(self) -> "Node": ...

    #: the host's handoff driver while a shutdown runs (it hears of a failed handoff)
    @property
    def handoff_driver(self) -> Pid | None: ...

    def job_load(self, pid: Pid, status: Any) -> None:
        """A run-kind job's status changed (protocol, "Load": an ended job frees its slot or
        leaves the queue)."""


async def _maybe_await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


# -- the job process --------------------------------------------------------------------------
class _Job:
    """One job: runs in its own process, serves ``{pynode_job_op, ...}`` calls one at a time,
    replicates every change before acknowledging it, and moves on ``{pynode_job_handoff, T}``."""

    def __init__(self, host: JobOwner, kind: Atom, job_id: Any) -> None:
        self.host = host
        self.kind = kind
        self.id = job_id
        self.key = job_key(job_id)
        self.impl = kind_class(kind)(JobContext(self))
        self.seq = 0
        self.recent: list[tuple[Any, Any]] = []
        self.proc: Process = None  # type: ignore[assignment]
        self.ready = False
        #: set when the job is ready (serving): a stopping host's handoff waits on it
        self.ready_event = asyncio.Event()
        self.replica_nodes: list[Atom] = []
        self._replica_mons: dict[Reference, Atom] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = itertools.count(1)
        #: a run kind's running ``run`` (an asyncio task beside the job's process) and its
        #: generation: messages of an older run (cancelled since) are ignored
        self._run_task: asyncio.Task[None] | None = None
        self._run_gen = 0
        #: the host's admission (protocol, "Load"): True (a slot), False (queued), None (no
        #: slot needed: not a run kind, or ended); set by the host before the job runs
        self.admitted: bool | None = None
        self._reported: Any = None

    # -- timers ---------------------------------------------------------------------------
    def start_timer(self, ms: float, tag: Any) -> None:
        tid = next(self._timer_ids)
        loop = asyncio.get_running_loop()
        self._timers[tid] = loop.call_later(max(0.0, ms / 1000.0), self.proc.deliver, (_TIMER, tid, tag))

    def cancel_timers(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()

    # -- run kinds: the task that runs ``run`` ---------------------------------------------
    def _sync_run(self) -> None:
        """Start ``run`` when the kind wants it running and it is not; cancel it when the
        kind no longer wants it (cancelled, ended, waiting for a retry)."""
        impl = self.impl
        if not isinstance(impl, RunKind):
            return
        # A run that ended (returned or raised) is live until its _RUN_END is handled: a
        # message handled in between must not start the same attempt again (it did: the
        # failure of the duplicate's twin was then dropped as stale, and a page fetched twice)
        t = self._run_task
        live = t is not None and (not t.done() or not t.cancelled())
        if impl.wants_run() and not live:
            self._run_gen += 1
            ctx = RunContext(impl, self, self._run_gen)
            self._run_task = asyncio.get_running_loop().create_task(self._run_body(self._run_gen, ctx))
        elif not impl.wants_run() and live:
            self.stop_run()

    def stop_run(self) -> None:
        """Cancel ``run`` at its next await (a move, the end of the job, a cancel)."""
        self._run_gen += 1
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()
        self._run_task = None

    async def _run_body(self, gen: int, ctx: RunContext) -> None:
        assert isinstance(self.impl, RunKind)
        try:
            value = await self.impl.run(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("job %s (%s): run failed on attempt %d: %s: %s", format_term(self.id), self.kind, ctx.attempt,
                        type(e).__name__, e, exc_info=True)
            self.proc.deliver((_RUN_END, gen, False, exception_reason(e)))
            return
        self.proc.deliver((_RUN_END, gen, True, value))

    async def checkpoint(self, gen: int, state: Any) -> None:
        """``ctx.checkpoint(state)`` of run number ``gen``: the job process stores it as the
        checkpoint, replicates, then this returns (protocol, "Run kinds")."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.proc.deliver((_CHECKPOINT, gen, state, fut))
        await fut

    async def _on_checkpoint(self, gen: int, state: Any, fut: "asyncio.Future[None]") -> None:
        if gen != self._run_gen or fut.done() or not isinstance(self.impl, RunKind):
            if not fut.done():
                fut.cancel()
            return
        self.impl.checkpointed(state)
        self.seq += 1
        await self.replicate()
        if not fut.done():
            fut.set_result(None)

    async def _on_run_end(self, gen: int, ok: bool, value: Any) -> None:
        if gen != self._run_gen or not isinstance(self.impl, RunKind):
            return
        self._run_task = None
        self.impl.run_ended(ok, value)
        self.seq += 1
        await self.replicate()

    # -- load (protocol, "Load") ----------------------------------------------------------
    def _report_load(self) -> None:
        """Tell the host when this run-kind job's status changed (an ended job frees its slot)."""
        if not isinstance(self.impl, RunKind):
            return
        st = self.impl.state.get(K_STATUS)
        if st != self._reported:
            self._reported = st
            self.host.job_load(self.proc.pid, st)

    async def _admit(self) -> None:
        """The host gave this queued job a slot: ``queued`` becomes ``running``, replicated;
        ``run`` then starts (the serve loop's ``_sync_run``)."""
        impl = self.impl
        if not isinstance(impl, RunKind):
            return
        admitted = run_admit(impl.portable())
        if admitted is impl.state or admitted.get(K_STATUS) == impl.state.get(K_STATUS):
            self._reported = None  # not queued any more: the host hears the status again
            return
        self.cancel_timers()
        impl.restore(admitted)
        self.seq += 1
        await self.replicate()

    # -- portable state -------------------------------------------------------------------
    def portable(self) -> dict[Atom, Any]:
        return {
            K_KIND: self.kind,
            K_ID: self.id,
            K_STATE: self.impl.portable(),
            K_RECENT: [(o, r) for o, r in self.recent],
            K_SEQ: self.seq,
        }

    # -- life -----------------------------------------------------------------------------
    async def run_start(self, proc: Process, args: list[Any], from_: From | None) -> None:
        self.proc = proc
        reg = await self.host.node.registry.reg(proc, self.key, self.kind)
        if reg != OK:
            if type(reg) is tuple and len(reg) == 2 and type(reg[1]) is tuple and reg[1][:1] == (ALREADY_REGISTERED,):
                self._answer(from_, (ERROR, JOB_ALREADY_STARTED))
            else:
                self._answer(from_, reg if type(reg) is tuple else (ERROR, reg))
            return
        try:
            await _maybe_await(self.impl.init(list(args) if isinstance(args, (list, tuple)) else [args]))
        except Exception as e:
            log.exception("job %s of kind %s failed to start", format_term(self.id), self.kind)
            await self.host.node.registry.unreg(proc, self.key)
            self._answer(from_, (ERROR, exception_reason(e)))
            return
        if self.admitted is False and isinstance(self.impl, RunKind):
            self.impl.state = run_queue(self.impl.state)
        self.seq = 1
        await self.replicate()
        self.ready = True
        self.ready_event.set()
        self._answer(from_, (OK, proc.pid))
        await self.serve()

    async def run_adopt(
        self,
        proc: Process,
        portable: dict[Any, Any],
        from_: From | None,
        old_owner: Pid | None = None,
        old_replicas: Iterable[Atom] = (),
    ) -> None:
        self.proc = proc
        # The caller of a handoff's adopt is the old job: its unreg may still be on its way.
        stale_holder = old_owner if old_owner is not None else (from_[0] if from_ is not None else None)
        reg = await self._reg_for_adoption(stale_holder)
        if reg != OK:
            log.info("%s: adoption of job %s gave up: %r", self.host.node.name, format_term(self.id), reg)
            self._answer(from_, reg)
            return
        try:
            state = portable.get(K_STATE)
            if isinstance(self.impl, RunKind) and isinstance(state, dict) and self.admitted is not None:
                state = run_admit(state) if self.admitted else run_queue(state)
            self.impl.restore(state)
        except Exception as e:
            log.exception("job %s of kind %s: bad portable state", format_term(self.id), self.kind)
            await self.host.node.registry.unreg(proc, self.key)
            self._answer(from_, (ERROR, exception_reason(e)))
            return
        recent = portable.get(K_RECENT)
        self.recent = [(x[0], x[1]) for x in recent if type(x) is tuple and len(x) == 2][:RECENT_MAX] if isinstance(recent, list) else []
        seq = portable.get(K_SEQ)
        self.seq = (seq if type(seq) is int else 0) + 1
        await self.replicate()
        if old_owner is not None:
            me = self.host.node.name
            for n in old_replicas:
                if n != me and n not in self.replica_nodes:
                    self.proc.cast((Atom(HOST_NAME), Atom(n)), (DROP_REPLICA, self.id, old_owner))
        self.ready = True
        self.ready_event.set()
        log.info("%s: adopted job %s (%s), seq %d", self.host.node.name, format_term(self.id), self.kind, self.seq)
        self._answer(from_, (OK, proc.pid))
        await self.serve()

    async def _reg_for_adoption(self, old_owner: Pid | None) -> Any:
        """Register the name; while the registry still lists a holder on a dead node (the dead
        owner before the nodedown purge), retry, for at most ``adopt_reg_timeout``."""
        node = self.host.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + secs(cfg(node, "adopt_reg_timeout"))
        delay = BACKOFF_FIRST
        while True:
            reg = await node.registry.reg(self.proc, self.key, self.kind)
            if reg == OK:
                return OK
            holder = reg[1][1] if type(reg) is tuple and len(reg) == 2 and type(reg[1]) is tuple and len(reg[1]) == 2 else None
            stale = type(holder) is Pid and (holder == old_owner or (holder.node != node.name and holder.node not in node.connected_nodes))
            if not stale or loop.time() >= deadline:
                return reg
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _answer(self, from_: From | None, value: Any) -> None:
        if from_ is not None:
            gen_reply(self.proc, from_, value)

    async def serve(self) -> None:
        try:
            await self._serve()
        finally:
            self.stop_run()

    async def _serve(self) -> None:
        proc = self.proc
        while True:
            self._sync_run()
            self._report_load()
            msg = await proc.receive()
            if type(msg) is not tuple or not msg:
                continue
            tag = msg[0]
            if tag == _CHECKPOINT and len(msg) == 4 and isinstance(msg[3], asyncio.Future):
                await self._on_checkpoint(msg[1], msg[2], msg[3])
            elif tag == _RUN_END and len(msg) == 4 and type(msg[1]) is int:
                await self._on_run_end(msg[1], msg[2], msg[3])
            elif tag == GEN_CALL and len(msg) == 3 and type(msg[1]) is tuple:
                await self._call(msg[2], msg[1])
            elif tag == _TIMER and len(msg) == 3:
                if self._timers.pop(msg[1], None) is None:
                    continue  # cancelled meanwhile
                try:
                    r = await _maybe_await(self.impl.handle_timer(msg[2]))
                except Exception:
                    log.exception("job %s: handle_timer(%r) failed", format_term(self.id), msg[2])
                    continue
                if isinstance(r, Reply) and r.stop:
                    await self._end()
                    return
                if isinstance(r, Reply) and r.changed:
                    self.seq += 1
                    await self.replicate()
            elif tag == HANDOFF and len(msg) == 2:
                if await self._handoff(msg[1]):
                    return
            elif tag == MEMBERSHIP and len(msg) == 1:
                await self._follow_membership()
            elif tag == ADMIT and len(msg) == 1:
                await self._admit()
            elif tag == EXIT_TAG and len(msg) == 3:
                await self.exit_signal(msg[1], msg[2])
            elif tag == DOWN_TAG and len(msg) == 5 and msg[1] in self._replica_mons:
                gone = self._replica_mons.pop(msg[1])
                log.info("job %s: replica host %s is gone (%s); replicating again", format_term(self.id), gone, msg[4])
                if gone in self.replica_nodes:
                    self.replica_nodes.remove(gone)
                await self.replicate()

    async def _call(self, request: Any, from_: From) -> None:
        if type(request) is tuple and len(request) == 2 and request[0] == MERGE and type(request[0]) is Atom:
            self._answer(from_, await self._merge_from(request[1], from_[0]))
            return
        if not (type(request) is tuple and len(request) == 3 and request[0] == JOB_OP):
            self._answer(from_, (ERROR, (Atom("unknown_call"), request)))
            return
        _, op_id, req = wire(request)
        for oid, rep in self.recent:
            if oid == op_id and type(oid) is type(op_id):
                self._answer(from_, rep)
                return
        if req == GET_STATE and type(req) is Atom:
            self._answer(from_, (OK, self.impl.portable()))
            return
        try:
            r = await _maybe_await(self.impl.handle(req))
        except JobError as e:
            self._answer(from_, (ERROR, e.reason))
            return
        except Exception as e:
            log.exception("job %s: handle(%r) failed", format_term(self.id), req)
            self._answer(from_, (ERROR, exception_reason(e)))
            return
        if not isinstance(r, Reply):
            r = Reply(r)
        answer = (OK, r.result)
        if r.changed or r.stop:
            self.recent.insert(0, (op_id, answer))
            del self.recent[RECENT_MAX:]
        if r.stop:
            await self._end()
            self._answer(from_, answer)
            raise Exit(NORMAL)
        if r.changed:
            self.seq += 1
            await self.replicate()
        self._answer(from_, answer)

    async def _end(self) -> None:
        """The job is done (finish, TTL): give up the name, tell the replicas, stop timers."""
        self.cancel_timers()
        self.stop_run()
        await self.host.node.registry.unreg(self.proc, self.key)
        for n in self.replica_nodes:
            self.proc.cast((Atom(HOST_NAME), n), (DROP_REPLICA, self.id, self.proc.pid))
        self.replica_nodes = []

    # -- replication ----------------------------------------------------------------------
    def _hosts(self) -> dict[Atom, Pid]:
        """The host nodes that know this job's kind (only they can take it over)."""
        out: dict[Atom, Pid] = {}
        for pid, ks in self.host.node.registry.lookup_values(HOST_KEY):
            if isinstance(ks, list) and self.kind in ks:
                out.setdefault(pid.node, pid)
        return out

    async def replicate(self) -> None:
        """Store the portable state on the replica hosts; return once each has acknowledged
        (or when no other host can take it)."""
        node = self.host.node
        me = node.name
        n = int(cfg(node, "replicas"))
        timeout = secs(cfg(node, "call_timeout"))
        failed: set[Atom] = set()
        portable = self.portable()
        targets: list[Atom] = []
        pids: dict[Atom, Pid] = {}
        while True:
            hosts = {h: p for h, p in self._hosts().items() if h not in failed}
            targets = replica_targets(hosts, me, n)
            pids = {t: hosts[t] for t in targets}
            ok = True
            for t in targets:
                req = (REPLICATE, self.id, self.kind, portable, self.seq, self.proc.pid, list(targets))
                try:
                    await self.proc.call(pids[t], req, timeout)
                except CallError as e:
                    log.info("job %s: replicate to %s failed (%s)", format_term(self.id), t, e.reason)
                    failed.add(t)
                    ok = False
                    break
            if ok:
                break
        for old in self.replica_nodes:
            if old not in targets:
                self.proc.cast((Atom(HOST_NAME), old), (DROP_REPLICA, self.id, self.proc.pid))
        self.replica_nodes = list(targets)
        for ref in list(self._replica_mons):
            self.proc.demonitor(ref, flush=True)
        self._replica_mons = {self.proc.monitor(pids[t]): t for t in targets}

    async def _follow_membership(self) -> None:
        """The set of hosts changed (protocol, "Replicas follow membership"): replicate the
        current state (same Seq) when the targets are not the hosts holding it."""
        node = self.host.node
        targets = replica_targets(self._hosts(), node.name, int(cfg(node, "replicas")))
        if targets != self.replica_nodes:
            await self.replicate()

    # -- partitions: two copies of one job --------------------------------------------------
    async def exit_signal(self, sender: Any, reason: Any) -> None:
        """A trapped exit signal. ``{name_conflict, Key, Winner}`` for this job's key merges
        this copy into the winner (protocol, "Partitions"); any other reason acts as it would
        on a process that does not trap exits."""
        if (type(reason) is tuple and len(reason) == 3 and reason[0] == NAME_CONFLICT
                and type(reason[0]) is Atom and encode(reason[1]) == encode(self.key) and type(reason[2]) is Pid):
            await self._merge_into(reason[2])
            return
        if reason == NORMAL and type(reason) is Atom:
            return
        self.cancel_timers()
        raise Exit(reason)

    async def _merge_into(self, winner: Pid) -> None:
        """Hand this copy's state to ``winner`` and end; take the name back if the winner is
        gone; give up after ``job_timeout``."""
        node = self.host.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + secs(cfg(node, "job_timeout"))
        timeout = secs(cfg(node, "call_timeout"))
        delay = BACKOFF_FIRST
        target: Pid = winner
        while True:
            portable = self.portable()
            try:
                r = await self.proc.call(target, (MERGE, portable), timeout)
            except CallError as e:
                r = (ERROR, e.reason)
            if r == OK and type(r) is Atom:
                log.info("%s: job %s merged into its copy %s; this copy ends", node.name, format_term(self.id), format_term(target))
                self.cancel_timers()
                for n in self.replica_nodes:
                    self.proc.cast((Atom(HOST_NAME), n), (DROP_REPLICA, self.id, self.proc.pid))
                self.replica_nodes = []
                raise Exit(NORMAL)
            log.info("%s: job %s could not merge into %s (%r); taking the name back", node.name, format_term(self.id), format_term(target), r)
            reg = await node.registry.reg(self.proc, self.key, self.kind)
            if reg == OK:
                log.warning("%s: job %s serves again (its other copy %s is gone)", node.name, format_term(self.id), format_term(target))
                return
            holder = reg[1][1] if type(reg) is tuple and len(reg) == 2 and type(reg[1]) is tuple and len(reg[1]) == 2 else None
            if type(holder) is Pid:
                target = holder
            if loop.time() >= deadline:
                log.error("%s: job %s could neither merge nor take its name back; it ends with state %s",
                          node.name, format_term(self.id), format_term(portable))
                self.cancel_timers()
                raise Exit(NORMAL)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _merge_from(self, theirs: Any, sender: Pid) -> Any:
        """This copy won: merge the loser's ``Portable`` in, replicate, answer ``ok``."""
        node = self.host.node
        theirs = wire(theirs)
        if (not isinstance(theirs, dict) or theirs.get(K_KIND) != self.kind
                or encode(theirs.get(K_ID)) != encode(wire(self.id))):
            return (ERROR, NOT_THIS_JOB)
        mine = self.portable()
        try:
            merged = type(self.impl).merge(mine, theirs)
        except Exception:
            log.exception("job %s: merge of the copy from %s failed; keeping this copy's state", format_term(self.id), sender.node)
            merged = NotImplemented
        recent, seq = merge_recent(mine, theirs)
        if merged is NotImplemented:
            log.warning("pynode jobs: job %s met its copy from %s after a partition; kind %s has no merge: kept this "
                        "copy's state %s, dropped %s", format_term(self.id), sender.node, self.kind,
                        format_short(mine.get(K_STATE)), format_short(theirs.get(K_STATE)))
        else:
            self.cancel_timers()
            self.impl.restore(merged)
            log.warning("pynode jobs: job %s merged the copy from %s after a partition: %s + %s -> %s",
                        format_term(self.id), sender.node, format_short(mine.get(K_STATE)),
                        format_short(theirs.get(K_STATE)), format_short(merged))
        self.recent = recent
        self.seq = seq
        await self.replicate()
        return OK

    # -- handoff --------------------------------------------------------------------------
    async def _handoff(self, target: Any) -> bool:
        """Move to ``target``; True when the job has moved (the caller then exits normal)."""
        self.stop_run()  # run is cancelled at its next await; it resumes from the checkpoint there
        portable = self.portable()  # remaining durations computed now
        self.cancel_timers()
        node = self.host.node
        await node.registry.unreg(self.proc, self.key)
        try:
            r = await self.proc.call((Atom(HOST_NAME), Atom(target)), (ADOPT, self.kind, self.id, portable), secs(cfg(node, "adopt_timeout")))
        except CallError as e:
            r = (ERROR, e.reason)
        if type(r) is tuple and len(r) == 2 and r[0] == OK:
            log.info("%s: job %s handed off to %s", node.name, format_term(self.id), target)
            return True
        log.warning("%s: handoff of job %s to %s failed: %r", node.name, format_term(self.id), target, r)
        again = await node.registry.reg(self.proc, self.key, self.kind)
        if again != OK:
            log.error("%s: job %s could not take its name back (%r); it ends", node.name, format_term(self.id), again)
            return True
        self.impl.restore(portable[K_STATE])
        driver = self.host.handoff_driver
        if driver is not None:
            self.proc.send(driver, (Atom("handoff_failed"), self.proc.pid, target))
        return False
