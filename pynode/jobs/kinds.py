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
    CHECK_RESULTS,
    FINISH,
    K_ID,
    K_RESULTS,
    K_STATE,
    K_TTL_LEFT,
    K_WORK_LEFT,
    OK,
    UPDATE,
    cfg,
    has_op,
    recent_of,
    results_binary,
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


class JobContext:
    """What a kind instance may use: its ``id``, the ``node``, the host's ``config`` and timers."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    @property
    def id(self) -> Any:
        return self._runner.id

    @property
    def node(self) -> "Node":
        return self._runner.host.node

    def config(self, key: str) -> Any:
        """A setting of the host (``sys.config``'s ``available_processes`` env, defaults above)."""
        return cfg(self._runner.host.node, key)

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
