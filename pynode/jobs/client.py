"""The client API (Elixir: ``Pynode.Jobs.Client``, behind ``Job.start/1`` and friends): runs
on any node, reads the registry locally when the node has one, else asks a connected host
node with ``{client, Op, Args}``, and retries with one OpId per operation (protocol, "Client").

Owns: :func:`start`, :func:`otp_start`, :func:`update`, :func:`finish`,
:func:`check_results`, :func:`get_state`, :func:`list_jobs`, and :func:`_client_op`, the
client operation a host runs for ``{client, Op, Args}``. May import: :mod:`erl_interop`,
:mod:`pynode.errors`, :mod:`pynode.core.process`, :mod:`pynode.registry` (``key_bytes``) and
:mod:`pynode.jobs.protocol`; nothing of the job process or the host (they are above it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom, Pid

from ..errors import CallError, NotStarted
from ..core.process import NOPROC, Process
from ..registry import key_bytes
from .protocol import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    CALL,
    CANCEL,
    CHECK_RESULTS,
    CLIENT,
    ERROR,
    FINISH,
    GET_STATE,
    HOST_KEY,
    HOST_NAME,
    JOB_ALREADY_STARTED,
    JOB_OP,
    KIND_JOB,
    LOAD_KEY,
    KIND_OTP,
    LIST,
    LIST_JOBS,
    NO_HOSTS,
    NO_SUCH_JOB,
    OK,
    OP,
    OTP_START,
    RESULTS,
    START,
    STATUS,
    STOPPING,
    TIMEOUT,
    UNKNOWN_CLIENT_OP,
    UNKNOWN_KIND,
    UPDATE,
    cfg,
    job_key,
    load_of,
    node_order,
    place,
    retryable,
    secs,
    wire,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["start", "otp_start", "update", "finish", "check_results", "get_state", "list_jobs", "status", "results",
           "cancel"]

log = bounded_logger(logging.getLogger("pynode.jobs"))

_rr_counters: "weakref.WeakKeyDictionary[Any, itertools.count[int]]" = weakref.WeakKeyDictionary()


def _next_rr(node: Any) -> int:
    c = _rr_counters.get(node)
    if c is None:
        c = _rr_counters[node] = itertools.count()
    return next(c)


def _has_registry(node: "Node") -> bool:
    try:
        node.registry
    except NotStarted:
        return False
    return True


async def _with_proc(target: Any, fn: Callable[[Process], Awaitable[Any]]) -> Any:
    """Run ``fn(proc)`` as ``target`` (a Process) or in a short-lived process of ``target`` (a Node)."""
    if isinstance(target, Process):
        return await fn(target)
    out: list[Any] = []

    async def body(proc: Process) -> None:
        try:
            out.append((True, await fn(proc)))
        except Exception as e:
            out.append((False, e))

    p = target.spawn(body)
    await asyncio.shield(p.task)
    if not out:
        raise CallError(p.exit_reason)
    ok, v = out[0]
    if not ok:
        raise v
    return v


def _limits(node: Any, timeout: float | None) -> tuple[float, float, float]:
    job_timeout = timeout if timeout is not None else secs(cfg(node, "job_timeout"))
    return job_timeout, secs(cfg(node, "missing_grace")), secs(cfg(node, "call_timeout"))


async def _local_start(proc: Process, kind: Atom, job_id: Any, args: list[Any], timeout: float | None = None) -> Any:
    node = proc.node
    job_timeout, grace, call_timeout = _limits(node, timeout)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + job_timeout
    delay = BACKOFF_FIRST
    refused: set[Atom] = set()
    retried = False
    while True:
        values = node.registry.lookup_values(HOST_KEY)
        hosts = sorted(
            {pid.node: pid for pid, ks in values if isinstance(ks, list) and kind in ks and pid.node not in refused}.items(),
            key=lambda kv: node_order(kv[0]),
        )
        now = loop.time()
        if not hosts:
            if now - t0 >= min(grace, job_timeout):
                return (ERROR, UNKNOWN_KIND if values else NO_HOSTS)
        else:
            loads = {pid.node: v for pid, v in node.registry.lookup_values(LOAD_KEY)}
            by_node = dict(hosts)
            host_node = place([(h, *load_of(loads.get(h))) for h in by_node], _next_rr(node))
            host_pid = by_node[host_node]
            try:
                r = await proc.call(host_pid, (START, kind, job_id, args), min(call_timeout, max(0.001, deadline - now)))
            except CallError as e:
                if not retryable(e.reason):
                    return (ERROR, e.reason)
                retried = True
                refused.add(host_node)  # it may be gone; the registry will tell
            else:
                if r == (ERROR, STOPPING) or r == (ERROR, UNKNOWN_KIND):
                    # stopping, or it withdrew the kind since our registry heard: another host
                    refused.add(host_node)
                elif r == (ERROR, JOB_ALREADY_STARTED) and retried:
                    # our own earlier attempt got through before its answer was lost
                    holder = node.registry.where(job_key(job_id))
                    return (OK, holder) if type(holder) is Pid else r
                else:
                    return r
        if loop.time() >= deadline:
            return (ERROR, TIMEOUT)
        if refused and len(refused) >= len({pid.node for pid, _ in values}):
            refused.clear()
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _local_op(proc: Process, job_id: Any, request: Any, op_id: Any = None, timeout: float | None = None) -> Any:
    """Run one operation on a job; ``{ok, Result}``, ``{error, no_such_job}`` or ``{error, R}``."""
    node = proc.node
    job_timeout, grace, call_timeout = _limits(node, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job_timeout
    if op_id is None:
        op_id = node.make_ref()
    key = job_key(job_id)
    missing_since: float | None = None
    delay = BACKOFF_FIRST
    while True:
        now = loop.time()
        pid = node.registry.where(key)
        if type(pid) is not Pid:
            if missing_since is None:
                missing_since = now
            elif now - missing_since >= grace:
                return (ERROR, NO_SUCH_JOB)
        else:
            missing_since = None
            try:
                return await proc.call(pid, (JOB_OP, op_id, request), min(call_timeout, max(0.001, deadline - now)))
            except CallError as e:
                if not retryable(e.reason):
                    return (ERROR, e.reason)
        if loop.time() >= deadline:
            return (ERROR, TIMEOUT)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _local_list(proc: Process, timeout: float | None = None) -> list[tuple[Any, Atom, Pid]]:
    node = proc.node
    call_timeout = secs(cfg(node, "call_timeout")) if timeout is None else timeout
    out: list[tuple[Any, Atom, Pid]] = []
    for pid in sorted(node.registry.lookup_pids(HOST_KEY), key=lambda p: node_order(p.node)):
        try:
            r = await proc.call(pid, LIST, call_timeout)
        except CallError as e:
            log.info("list on %s failed: %s", pid.node, e.reason)
            continue
        if isinstance(r, list):
            out.extend((x[0], x[1], x[2]) for x in r if type(x) is tuple and len(x) == 3)
    return out


def _unwrap(r: Any, missing: Any = (ERROR, NO_SUCH_JOB)) -> Any:
    """``{ok, Result}`` -> ``Result``; ``{error, no_such_job}`` -> ``missing``; errors as they are."""
    if type(r) is tuple and len(r) == 2 and r[0] == OK and type(r[0]) is Atom:
        return r[1]
    if r == (ERROR, NO_SUCH_JOB):
        return missing
    return r


async def _client_op(proc: Process, op: Any, args: list[Any], timeout: float | None = None) -> Any:
    """The client operation ``op`` on this node (what ``{client, Op, Args}`` answers)."""
    if type(op) is not Atom:
        return (ERROR, (UNKNOWN_CLIENT_OP, op))
    n = len(args)
    if op == START and n in (1, 2, 3):
        kind, job_id, sargs = (KIND_JOB, args[0], []) if n == 1 else (args[0], args[1], args[2] if n == 3 else [])
        return await _local_start(proc, Atom(kind), job_id, sargs if isinstance(sargs, list) else [sargs], timeout)
    if op == OTP_START and n == 1:
        return await _local_start(proc, KIND_OTP, args[0], [], timeout)
    if op == UPDATE and n == 2:
        return _unwrap(await _local_op(proc, args[0], (UPDATE, args[1]), timeout=timeout))
    if op == FINISH and n == 1:
        return _unwrap(await _local_op(proc, args[0], FINISH, timeout=timeout))
    if op == CHECK_RESULTS and n == 1:
        return _unwrap(await _local_op(proc, args[0], CHECK_RESULTS, timeout=timeout), missing=None)
    if op == GET_STATE and n == 1:
        return _unwrap(await _local_op(proc, args[0], GET_STATE, timeout=timeout))
    if op in (STATUS, RESULTS, CANCEL) and n == 1:
        # run kinds (protocol, "Run kinds"): the job's raw answer
        return await _local_op(proc, args[0], op, timeout=timeout)
    if op in (OP, CALL) and n == 2:
        return await _local_op(proc, args[0], args[1], timeout=timeout)
    if op in (OP, CALL) and n == 3:
        # the caller's own OpId: a retry of this operation through another host node is
        # answered from the job's Recent, not applied twice
        return await _local_op(proc, args[0], args[1], op_id=args[2], timeout=timeout)
    if op in (LIST_JOBS, LIST) and n == 0:
        return await _local_list(proc)
    return (ERROR, (UNKNOWN_CLIENT_OP, op, n))


def _remote_form(node: Any, op: Atom, args: list[Any]) -> tuple[list[Any], Callable[[Any], Any]] | None:
    """The ``op [Id, Request, OpId]`` form of a named operation on a job (``None`` for the
    others), with the unwrapping that gives the named operation's answer. The OpId is made
    once here, so every retry of the operation, through any host node, carries it."""
    if op == UPDATE and len(args) == 2:
        return [args[0], (UPDATE, args[1]), node.make_ref()], _unwrap
    if op in (FINISH, GET_STATE) and len(args) == 1:
        return [args[0], op, node.make_ref()], _unwrap
    if op == CHECK_RESULTS and len(args) == 1:
        return [args[0], CHECK_RESULTS, node.make_ref()], lambda r: _unwrap(r, missing=None)
    if op in (STATUS, RESULTS, CANCEL) and len(args) == 1:
        return [args[0], op, node.make_ref()], lambda r: r
    return None


def _base_reason(reason: Any) -> Any:
    """gen:call's ``{Reason, {gen_server, call, ...}}`` -> ``Reason``."""
    if type(reason) is tuple and len(reason) == 2 and type(reason[1]) is tuple and reason[1][:1] == (Atom("gen_server"),):
        return reason[0]
    return reason


def _start_id(op: Atom, args: list[Any]) -> Any:
    return args[0] if op == OTP_START or len(args) == 1 else args[1]


async def _remote_call(proc: Process, host: tuple[Atom, Atom], op: Atom, args: list[Any],
                       form: tuple[list[Any], Callable[[Any], Any]] | None, retried: bool, timeout: float) -> Any:
    if form is not None:
        op_args, unwrap = form
        r = await proc.call(host, (CLIENT, OP, op_args), timeout)
        if r != (ERROR, (UNKNOWN_CLIENT_OP, OP, 3)):
            return unwrap(r)
        # a host that predates the 3-argument op: the named operation (at-least-once
        # across host nodes)
        return await proc.call(host, (CLIENT, op, args), timeout)
    r = await proc.call(host, (CLIENT, op, args), timeout)
    if r == (ERROR, JOB_ALREADY_STARTED) and retried and op in (START, OTP_START):
        # an earlier attempt through a host node that then went away may have started the
        # job: then it is ours
        job_id = wire(_start_id(op, args))
        listed = await proc.call(host, (CLIENT, LIST_JOBS, []), timeout)
        if isinstance(listed, list):
            for x in listed:
                if type(x) is tuple and len(x) == 3 and key_bytes(x[0]) == key_bytes(job_id) and type(x[2]) is Pid:
                    return (OK, x[2])
    return r


async def _remote_client(proc: Process, op: Atom, args: list[Any], timeout: float | None) -> Any:
    """``{client, Op, Args}`` to ``pynode_jobs`` on a connected node that runs a host.

    Operations on a job go as ``op [Id, Request, OpId]`` with one OpId for all attempts, so
    that an attempt whose host node went away mid-operation (its answer lost) and is retried
    through another one is answered from the job's ``Recent``, not applied twice."""
    node = proc.node
    job_timeout = timeout if timeout is not None else secs(cfg(node, "job_timeout"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job_timeout
    delay = BACKOFF_FIRST
    form = _remote_form(node, op, args)
    retried = False
    while True:
        peers = sorted(node.connected_nodes, key=node_order)
        if peers:
            k = _next_rr(node)
            peers = peers[k % len(peers):] + peers[:k % len(peers)]
        for peer in peers:
            try:
                # the remote side retries for up to job_timeout itself; allow it that, and more
                return await _remote_call(proc, (Atom(HOST_NAME), peer), op, args, form, retried, job_timeout + 5.0)
            except CallError as e:
                if not retryable(e.reason):
                    return (ERROR, e.reason)
                # noproc: no host there; nodedown/timeout: the operation may have run there
                if _base_reason(e.reason) != NOPROC:
                    retried = True
        if loop.time() >= deadline:
            return (ERROR, NO_HOSTS)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _run(target: Any, op: Atom, args: list[Any], via: str | None, timeout: float | None) -> Any:
    node = target.node if isinstance(target, Process) else target
    mode = via or ("local" if _has_registry(node) else "client")
    if mode not in ("local", "client"):
        raise ValueError(f"via must be 'local' or 'client', got {via!r}")

    async def fn(proc: Process) -> Any:
        if mode == "local":
            return await _client_op(proc, op, args, timeout)
        return await _remote_client(proc, op, args, timeout)

    return await _with_proc(target, fn)


async def start(target: "Node | Process", job_id: Any, *, kind: str = "Job", args: list[Any] | None = None,
                via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.start(Id)``: start a job of ``kind`` (default ``'Job'``) on the least-loaded host
    that knows the kind (protocol, "Load": ``place``; round-robin between equal loads). Returns ``(ok, Pid)``, ``(error, job_already_started)``, ``(error, unknown_kind)``,
    ``(error, no_hosts)`` or ``(error, timeout)``.

    ``target`` is the node to run the client on (or a process of it). ``via="client"`` forces
    the path through a connected host node's ``{client, Op, Args}``; by default a node with a
    registry reads it locally. ``timeout`` (seconds) overrides ``job_timeout``."""
    return await _run(target, START, [Atom(kind), job_id, list(args or [])], via, timeout)


async def otp_start(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.Otp.start(Id)``: start a ``'Job.Otp'`` job."""
    return await _run(target, OTP_START, [job_id], via, timeout)


async def update(target: "Node | Process", job_id: Any, event: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.update(Id, Event)``: ``ok`` or ``(error, no_such_job)``."""
    return await _run(target, UPDATE, [job_id, event], via, timeout)


async def finish(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.finish(Id)``: the state ``[last_event, ..., Id]`` (the job ends), or ``(error, no_such_job)``."""
    return await _run(target, FINISH, [job_id], via, timeout)


async def check_results(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.Otp.check_results(Id)``: the results binary, or ``None`` (``nil``) until the work
    is done or when the job does not exist."""
    return await _run(target, CHECK_RESULTS, [job_id], via, timeout)


async def get_state(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """The job's portable state (any kind), or ``(error, no_such_job)``."""
    return await _run(target, GET_STATE, [job_id], via, timeout)


async def list_jobs(target: "Node | Process", *, via: str | None = None) -> list[tuple[Any, Atom, Pid]]:
    """Every job in the cluster, ``[(Id, Kind, Pid)]`` (each host's ``list``)."""
    rows: list[tuple[Any, Atom, Pid]] = list(await _run(target, LIST_JOBS, [], via, None))
    return rows


async def status(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """A run-kind job's status (protocol, "Run kinds"): ``(ok, {status, progress, attempts,
    node})`` with status ``running | queued | done | failed | cancelled``, or
    ``(error, no_such_job)`` (never started, or ended after its ``result_ttl``)."""
    return await _run(target, STATUS, [job_id], via, timeout)


async def results(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """A run-kind job's results: ``(ok, Result)``, ``(error, not_done)``,
    ``(error, (failed, Error))`` (Error: ``(python_error, Type, Message)``),
    ``(error, cancelled)`` or ``(error, no_such_job)``."""
    return await _run(target, RESULTS, [job_id], via, timeout)


async def cancel(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """Cancel a run-kind job from any node: ``(ok, cancelled)`` (or ``(ok, done | failed)``
    when it had already ended), or ``(error, no_such_job)``."""
    return await _run(target, CANCEL, [job_id], via, timeout)
