"""The kind API and the built-in kinds: what a job *is*, independent of the process that
runs it (Elixir: ``Pynode.Jobs.Kind``, ``Job``, ``Job.Otp``).

Owns: :class:`JobKind` (the behaviour a kind implements), :class:`Reply`, :class:`JobError`,
:class:`JobContext` (what a kind may use of its job), the kind registry (:func:`job_kind`,
:func:`kinds`, :func:`kind_class`) and the kinds ``'Job'`` (:class:`SimpleJob`) and
``'Job.Otp'`` (:class:`OtpJob`). May import: :mod:`erl_interop`,
:mod:`pynode.jobs.protocol` (and the type of :class:`pynode.node.Node`). It reaches the job
process only through :class:`JobRunner`, a ``Protocol`` it defines.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

from erl_interop.terms import Atom

from .protocol import (
    CANCEL,
    CHECK_RESULTS,
    ERROR,
    FINISH,
    K_ARGS,
    K_ATTEMPTS,
    K_CHECKPOINT,
    K_PROGRESS,
    K_RETRY_LEFT,
    K_STATUS,
    K_ID,
    K_RESULTS,
    K_STATE,
    K_TTL_LEFT,
    K_WORK_LEFT,
    OK,
    RESULTS,
    RUN_STATUSES,
    RUNNING,
    STATUS,
    TERMINAL,
    UPDATE,
    cfg,
    has_op,
    recent_of,
    results_binary,
    run_cancel,
    run_done,
    run_elapse,
    run_error,
    run_initial,
    run_merge,
    run_results,
    run_retry,
    run_status,
    wire,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = [
    "Reply",
    "JobError",
    "JobContext",
    "JobRunner",
    "JobKind",
    "job_kind",
    "kinds",
    "kind_class",
    "SimpleJob",
    "OtpJob",
    "RunKind",
    "RunContext",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """What a kind's :meth:`JobKind.handle` / :meth:`JobKind.handle_timer` returns.

    ``result`` is answered as ``{ok, Result}``; ``changed`` says the portable state changed
    (the job replicates before answering); ``stop`` ends the job after answering (as
    ``finish`` does). A bare value returned instead of a ``Reply`` is a read:
    ``Reply(value)``."""

    result: Any = OK
    changed: bool = False
    stop: bool = False


class JobError(Exception):
    """Raise from :meth:`JobKind.handle` to answer ``{error, Reason}`` instead of
    ``{ok, Result}`` (the job keeps running, nothing changes)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class _HasNode(Protocol):
    @property
    def node(self) -> "Node": ...


class JobRunner(Protocol):
    """What a :class:`JobContext` uses of the process that runs the job
    (:class:`pynode.jobs.job._Job`): its id, its host's node, and its timers."""

    @property
    def id(self) -> Any: ...

    @property
    def host(self) -> _HasNode: ...

    def start_timer(self, ms: float, tag: Any) -> None: ...

    async def checkpoint(self, gen: int, state: Any) -> None: ...


class _RunnerContext:
    """The job's ``id``, the ``node`` and the host's ``config``, which both contexts give."""

    _runner: JobRunner

    @property
    def id(self) -> Any:
        return self._runner.id

    @property
    def node(self) -> "Node":
        return self._runner.host.node

    def config(self, key: str) -> Any:
        """A setting of the host (``sys.config``'s ``pynode`` env, defaults above)."""
        return cfg(self._runner.host.node, key)


class JobContext(_RunnerContext):
    """What a kind instance may use: its ``id``, the ``node``, the host's ``config`` and timers."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    def start_timer(self, ms: float, tag: Any) -> None:
        """Call :meth:`JobKind.handle_timer` with ``tag`` after ``ms`` milliseconds."""
        self._runner.start_timer(ms, tag)

    def now(self) -> float:
        """A monotonic clock, in seconds (never sent anywhere: durations travel as remaining ms)."""
        return asyncio.get_running_loop().time()


class JobKind:
    """A job kind. Subclass, set the state in :meth:`init`, answer requests in :meth:`handle`,
    and decorate with ``@job_kind("name")``. The portable state (:meth:`portable`) must be a
    term; :meth:`restore` rebuilds the live state from it on the node that adopts the job.

    Example::

        @job_kind("counter")
        class Counter(JobKind):
            def init(self, args):
                self.state = 0

            def handle(self, request):
                if request == Atom("incr"):
                    self.state += 1
                    return Reply(self.state, changed=True)
                raise JobError(Atom("unknown_request"))
    """

    #: the kind's atom, set by :func:`job_kind`
    name: ClassVar[Atom]

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.state: Any = None

    def init(self, args: list[Any]) -> Any:
        """Set the initial state from the ``Args`` of ``{start, Kind, Id, Args}``."""
        self.state = None

    def handle(self, request: Any) -> Any:
        """Answer a kind-specific request; return a :class:`Reply` or a bare result, or raise
        :class:`JobError`."""
        raise JobError((Atom("unknown_request"), request))

    def handle_timer(self, tag: Any) -> Reply | None:
        """A timer set with :meth:`JobContext.start_timer` fired."""
        return None

    def portable(self) -> Any:
        """The portable state, with durations as remaining milliseconds computed now."""
        return self.state

    def restore(self, state: Any) -> None:
        """Rebuild the live state from a portable one (adoption, or a failed handoff)."""
        self.state = state

    @classmethod
    def elapse(cls, state: Any, ms: int) -> Any:
        """A portable ``state`` with ``ms`` milliseconds taken off its remaining durations
        (protocol, "Waited time"). Kinds without durations keep the default."""
        return state

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        """The state after two copies of one job met (protocol, "Partitions"): ``mine`` is
        the surviving copy's whole ``Portable`` map, ``theirs`` the other's. Return the
        merged portable state, or ``NotImplemented`` to keep ``mine``'s (the default)."""
        return NotImplemented


_KINDS: dict[Atom, type[JobKind]] = {}


def job_kind(name: str) -> Callable[[type[JobKind]], type[JobKind]]:
    """Class decorator: make ``cls`` the job kind ``name`` on every host started afterwards."""

    def deco(cls: type[JobKind]) -> type[JobKind]:
        if not (isinstance(cls, type) and issubclass(cls, JobKind)):
            raise TypeError("@job_kind decorates a JobKind subclass")
        cls.name = Atom(name)
        _KINDS[cls.name] = cls
        return cls

    return deco


def kinds() -> dict[Atom, type[JobKind]]:
    """Every kind this Python program knows."""
    return dict(_KINDS)


def kind_class(name: Atom) -> type[JobKind]:
    """The class of kind ``name``; raises ``KeyError`` for a kind this program does not know."""
    return _KINDS[name]


@job_kind("Job")
class SimpleJob(JobKind):
    """``'Job'``: a list of events, newest first, ending with the id."""

    def init(self, args: list[Any]) -> None:
        self.state = [self.ctx.id]

    def handle(self, request: Any) -> Any:
        if type(request) is tuple and len(request) == 2 and request[0] == UPDATE and type(request[0]) is Atom:
            self.state = [request[1], *self.state]
            return Reply(OK, changed=True)
        if request == FINISH and type(request) is Atom:
            return Reply(list(self.state), stop=True)
        return super().handle(request)

    def restore(self, state: Any) -> None:
        if type(state) is not list:
            raise ValueError(f"'Job' state must be a list, got {state!r}")
        self.state = list(state)

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        """The loser's events that the winner lacks (by the OpId at the same position of its
        ``Recent``), in the loser's order, then the winner's state (protocol, "Partitions")."""
        sw, sl = mine.get(K_STATE), theirs.get(K_STATE)
        if type(sw) is not list or type(sl) is not list:
            raise ValueError("'Job' states must be lists")
        rl = recent_of(theirs)
        known = [o for o, _ in recent_of(mine)]
        n = min(len(rl), len(sl) - 1)
        new = [sl[i] for i in range(n) if not has_op(known, rl[i][0])]
        return new + list(sw)


@job_kind("Job.Otp")
class OtpJob(JobKind):
    """``'Job.Otp'``: simulated work of ``work_ms``, then results kept for ``result_ttl``."""

    results: bytes | None
    work_deadline: float | None
    ttl_deadline: float | None

    def init(self, args: list[Any]) -> None:
        self.results = None
        self.ttl_deadline = None
        self._work(float(self.ctx.config("work_ms")))

    def _work(self, ms: float) -> None:
        self.work_deadline = self.ctx.now() + ms / 1000.0
        self.ctx.start_timer(ms, Atom("work_done"))

    def _keep(self, ms: float) -> None:
        self.ttl_deadline = self.ctx.now() + ms / 1000.0
        self.ctx.start_timer(ms, Atom("ttl"))

    def _left(self, deadline: float | None) -> int | None:
        if deadline is None:
            return None
        return max(0, int(round((deadline - self.ctx.now()) * 1000)))

    def portable(self) -> dict[Atom, Any]:
        return {
            K_ID: self.ctx.id,
            K_RESULTS: self.results,
            K_WORK_LEFT: self._left(self.work_deadline) if self.results is None else None,
            K_TTL_LEFT: self._left(self.ttl_deadline) if self.results is not None else None,
        }

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"'Job.Otp' state must be a map, got {state!r}")
        self.results = state.get(K_RESULTS)
        self.work_deadline = self.ttl_deadline = None
        if self.results is None:
            left = state.get(K_WORK_LEFT)
            self._work(float(left) if isinstance(left, int) else 0.0)
        else:
            left = state.get(K_TTL_LEFT)
            self._keep(float(left) if isinstance(left, int) else float(self.ctx.config("result_ttl")))

    def handle(self, request: Any) -> Any:
        if request == CHECK_RESULTS and type(request) is Atom:
            return Reply(self.results)
        return super().handle(request)

    @classmethod
    def elapse(cls, state: Any, ms: int) -> Any:
        if not isinstance(state, dict):
            return state
        out = dict(state)
        key = K_WORK_LEFT if state.get(K_RESULTS) is None else K_TTL_LEFT
        left = state.get(key)
        if type(left) is int:
            out[key] = max(left - int(ms), 0)
        return out

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        """The results of either copy (the winner's first); with none, the copy further along."""
        sw, sl = mine.get(K_STATE), theirs.get(K_STATE)
        if not isinstance(sw, dict) or not isinstance(sl, dict):
            raise ValueError("'Job.Otp' states must be maps")
        if sw.get(K_RESULTS) is not None:
            return sw
        if sl.get(K_RESULTS) is not None:
            return sl
        lw, ll = sw.get(K_WORK_LEFT), sl.get(K_WORK_LEFT)
        if type(lw) is int and type(ll) is int and ll < lw:
            return {**sw, K_WORK_LEFT: ll}
        return sw

    def handle_timer(self, tag: Any) -> Reply | None:
        if tag == "work_done" and self.results is None:
            self.results = results_binary(self.ctx.id)
            self.work_deadline = None
            self._keep(float(self.ctx.config("result_ttl")))
            return Reply(changed=True)
        if tag == "ttl" and self.results is not None:
            return Reply(stop=True)
        return None


# -- run kinds ----------------------------------------------------------------------------------
class RunContext(_RunnerContext):
    """What :meth:`RunKind.run` is given: the start ``args``, the last acknowledged
    checkpoint ``state`` (``None`` on a fresh start), ``attempt`` (1 on the first run, one
    more after each failed run), :meth:`checkpoint` and :meth:`progress`."""

    def __init__(self, kind: "RunKind", runner: JobRunner, gen: int) -> None:
        self._kind = kind
        self._runner = runner
        self._gen = gen
        self.args: Any = kind.state.get(K_ARGS)
        self.state: Any = kind.state.get(K_CHECKPOINT)
        self.attempt: int = int(kind.state.get(K_ATTEMPTS) or 1)

    async def checkpoint(self, state: Any) -> None:
        """Make ``state`` the job's checkpoint. Returns once it is stored on the job's
        replicas (protocol, "Run kinds"): a move or a crash after this resumes from it."""
        await self._runner.checkpoint(self._gen, state)
        self.state = wire(state)

    def progress(self, value: Any = None, **fields: Any) -> None:
        """Report progress (``status`` shows it at once, it travels with the next
        replication): a map, or keyword fields merged into the current one
        (``ctx.progress(done=3, total=10)``)."""
        cur = self._kind.state.get(K_PROGRESS)
        merged: dict[Any, Any] = dict(cur) if isinstance(cur, dict) else {}
        if isinstance(value, dict):
            merged.update(wire(value))
        elif value is not None:
            merged[Atom("value")] = wire(value)
        merged.update({Atom(k): wire(v) for k, v in fields.items()})
        self._kind.state = {**self._kind.state, K_PROGRESS: merged}


class RunKind(JobKind):
    """A kind that does its work in a coroutine (protocol, "Run kinds")::

        @job_kind("crawl")
        class Crawl(RunKind):
            async def run(self, ctx):
                done = ctx.state or []
                for url in ctx.args[len(done):]:
                    done = done + [await fetch(url)]
                    await ctx.checkpoint(done)          # returns once replicated
                    ctx.progress(done=len(done), total=len(ctx.args))
                return done                           # the results, kept for result_ttl

    The job answers ``status``, ``results`` and ``cancel`` while ``run`` runs. ``run`` raising
    is retried from the last checkpoint after a backoff (``retry_backoff`` doubling up to
    ``retry_backoff_max``) until ``max_attempts``; then the job fails with
    ``{python_error, Type, Message}`` as its result. A move (graceful stop of the node) cancels
    ``run`` at its next await and runs it again on the new host from the last checkpoint; so
    does an adoption after the node died. ``ctx.args`` is the ``Args`` list of
    ``{start, Kind, Id, Args}`` (``Pynode.Jobs.start(:crawl, id, [url1, url2])``).
    """

    state: dict[Atom, Any]

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(ctx)
        self.state = run_initial([])
        #: when the pending retry or TTL runs out, on the loop's clock (seconds)
        self._deadline: float | None = None

    async def run(self, ctx: RunContext) -> Any:
        """The work. Return the results; raise to fail this attempt."""
        raise NotImplementedError

    # -- the job's state ------------------------------------------------------------------
    def init(self, args: list[Any]) -> None:
        self.state = run_initial(wire(list(args)))
        self._deadline = None

    def portable(self) -> dict[Atom, Any]:
        s = dict(self.state)
        if self._deadline is not None:
            left = max(0, int(round((self._deadline - self.ctx.now()) * 1000)))
            s[K_RETRY_LEFT if s.get(K_STATUS) not in TERMINAL else K_TTL_LEFT] = left
        return s

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get(K_STATUS) not in RUN_STATUSES:
            raise ValueError(f"a run-kind state must be a map with a status, got {state!r}")
        self.state = {**run_initial(None), **state}
        self._deadline = None
        self._arm()

    def _arm(self) -> None:
        st = self.state.get(K_STATUS)
        if st in TERMINAL:
            left = self.state.get(K_TTL_LEFT)
            self._timer(left if type(left) is int else int(self.ctx.config("result_ttl")), Atom("ttl"))
        elif st == RUNNING and type(self.state.get(K_RETRY_LEFT)) is int:
            self._timer(self.state[K_RETRY_LEFT], Atom("retry"))

    def _timer(self, ms: int, tag: Atom) -> None:
        self._deadline = self.ctx.now() + ms / 1000.0
        self.ctx.start_timer(ms, tag)

    def wants_run(self) -> bool:
        """Whether ``run`` should be running now (running, not waiting for a retry)."""
        return self.state.get(K_STATUS) == RUNNING and self.state.get(K_RETRY_LEFT) is None

    # -- what the job process tells the kind ---------------------------------------------
    def checkpointed(self, state: Any) -> None:
        self.state = {**self.state, K_CHECKPOINT: wire(state)}

    def run_ended(self, ok: bool, value: Any) -> None:
        """``run`` returned ``value`` (``ok``) or raised (``value``: the error term)."""
        ttl = int(self.ctx.config("result_ttl"))
        if ok:
            self.state = run_done(self.state, wire(value), ttl)
        else:
            self.state = run_error(self.state, value, int(self.ctx.config("max_attempts")),
                                   int(self.ctx.config("retry_backoff")), int(self.ctx.config("retry_backoff_max")), ttl)
        self._deadline = None
        self._arm()

    def handle(self, request: Any) -> Any:
        if type(request) is Atom and request == STATUS:
            return Reply(run_status(self.portable(), self.ctx.node.name))
        if type(request) is Atom and request == RESULTS:
            r = run_results(self.state)
            if r[0] == ERROR:
                raise JobError(r[1])
            return Reply(r[1])
        if type(request) is Atom and request == CANCEL:
            if self.state.get(K_STATUS) in TERMINAL:
                return Reply(self.state.get(K_STATUS))
            self.state = run_cancel(self.state, int(self.ctx.config("result_ttl")))
            self._deadline = None
            self._arm()
            return Reply(self.state.get(K_STATUS), changed=True)
        return super().handle(request)

    def handle_timer(self, tag: Any) -> Reply | None:
        if tag == "retry" and self.state.get(K_STATUS) == RUNNING and self.state.get(K_RETRY_LEFT) is not None:
            self.state = run_retry(self.state)
            self._deadline = None
            return Reply(changed=True)
        if tag == "ttl" and self.state.get(K_STATUS) in TERMINAL:
            return Reply(stop=True)
        return None

    @classmethod
    def elapse(cls, state: Any, ms: int) -> Any:
        return run_elapse(state, ms)

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        return run_merge(mine, theirs)
