"""rpc into this node (erpc over SPAWN_REQUEST, legacy ``rex``) and rpc out of it.

Theory of operation
-------------------
OTP 25's ``rpc:call``/``erpc:call`` arrive as ``SPAWN_REQUEST`` for
``{erpc, execute_call, 4}`` with arguments ``[Res, M, F, A]`` and the option ``monitor``
(docs/WIRE.md §6.3). The node answers with ``SPAWN_REPLY`` carrying a new pid, runs the
exposed function in that process, and ends it with the reason ``erpc.erl`` uses
(``{Res, return, V}``, ``{Res, throw, T}``, ``{Res, exit, R}``, ``{Res, error, R, Stack}``);
the monitor the caller asked for (its ref is the request id) carries that reason back.
``erpc:cast`` is ``{erpc, execute_cast, 3}`` with no monitor. Any other ``{M, F, A}``
spawns ``M:F(Args...)`` if it is exposed.

Only functions exposed with :meth:`Node.expose` run. Anything else fails exactly as an
undefined function does on the BEAM: ``error:undef`` with ``[{M, F, Args, []}]`` as the
stack, which ``rpc:call`` reports as ``{badrpc, {'EXIT', {undef, [...]}}}``.

The legacy ``rex`` server answers ``{'$gen_call', From, {call, M, F, A, GL}}`` and
``{From, {call, M, F, A, GL}}`` (``erl_call``/``ei_rpc``) with the value or
``{badrpc, {'EXIT', Reason}}``.

Out of this node, :func:`erpc_call` is erpc.erl's client: a ``SPAWN_REQUEST`` through the
distribution's :meth:`~pynode.core.runtime.Transport.spawn_request`, then the
``SPAWN_REPLY`` and the ``DOWN`` of the monitor, in the calling process's own mailbox.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

from erl_interop.terms import Atom, Pid, Reference

from ..core import DOWN_TAG, NOCONNECTION, Exit, Process, Runtime, exception_reason
from ..dist.incoming import SPAWN_REPLY_TAG
from ..errors import ErlangError, RpcError, Throw
from .gen_server import reply

__all__ = ["apply_exposed", "erpc_call", "rpc_call", "handle_spawn_request"]

log = logging.getLogger("pynode.rpc")

ERPC = Atom("erpc")
EXECUTE_CALL = Atom("execute_call")
EXECUTE_CAST = Atom("execute_cast")
RETURN = Atom("return")
THROW = Atom("throw")
EXIT = Atom("exit")
ERROR = Atom("error")
UNDEF = Atom("undef")
BADRPC = Atom("badrpc")
EXIT_TAG = Atom("EXIT")
MONITOR = Atom("monitor")
KILL = Atom("kill")
TIMEOUT = Atom("timeout")


def _accepts(fn: Callable[..., Any], n: int) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(*([None] * n))
    except TypeError:
        return False
    return True


class _Undef(Exception):
    pass


async def apply_exposed(node: Any, m: Any, f: Any, args: Any) -> Any:
    """Run an exposed ``m:f(args)``. Raises ``ErlangError(undef)`` (with the BEAM's stack
    shape in ``.stack``) when it is not exposed or the arity does not fit."""
    fn = node.exposed(m, f) if isinstance(m, str) and isinstance(f, str) else None
    if type(args) is not list or fn is None or not _accepts(fn, len(args)):
        e = ErlangError(UNDEF)
        e.stack = [(m, f, args if type(args) is list else [], [])]  # type: ignore[attr-defined]
        raise e
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


def _outcome(res: Any, exc: BaseException | None, value: Any) -> Any:
    """erpc's exit reason for a finished call."""
    if exc is None:
        return (res, RETURN, value)
    if isinstance(exc, Throw):
        return (res, THROW, exc.value)
    if isinstance(exc, Exit):
        return (res, EXIT, exc.reason)
    stack = getattr(exc, "stack", [])
    return (res, ERROR, exception_reason(exc), stack)


def handle_spawn_request(node: Runtime, req: Any) -> None:
    """Serve an incoming SPAWN_REQUEST (``req`` is a ``control.SpawnRequest``)."""
    m, f, arity = req.mfa
    opts = req.opts
    link = Atom("link") in opts
    monitor = Atom("monitor") in opts
    args = req.args
    caller: Pid = req.from_pid
    dist = node._dist()
    if type(args) is not list or len(args) != arity:
        dist.spawn_reply(req.req_id, caller, 0, Atom("badarg"))
        return

    if m == ERPC and f == EXECUTE_CALL and arity == 4:
        res, m2, f2, a2 = args

        async def body(proc: Process) -> None:
            try:
                v = await apply_exposed(node, m2, f2, a2)
            except (Exception, Exit) as e:
                if not isinstance(e, (ErlangError, Throw, Exit)):
                    log.error("rpc %s:%s/%d from %s raised %r", m2, f2, len(a2) if type(a2) is list else 0, caller.node, e)
                raise Exit(_outcome(res, e, None)) from None
            raise Exit(_outcome(res, None, v))

    elif m == ERPC and f == EXECUTE_CAST and arity == 3:
        m2, f2, a2 = args

        async def body(proc: Process) -> None:
            try:
                await apply_exposed(node, m2, f2, a2)
            except (Exception, Exit) as e:
                log.error("rpc cast %s:%s from %s failed: %r", m2, f2, caller.node, e)

    else:

        async def body(proc: Process) -> None:
            try:
                await apply_exposed(node, m, f, args)
            except ErlangError as e:
                raise Exit((e.reason, getattr(e, "stack", []))) from None

    flags = (1 if link else 0) | (2 if monitor else 0)
    proc = node.spawn(
        body,
        remote_link=caller if link else None,
        remote_monitor=(req.req_id, caller) if monitor else None,
    )
    # The reply goes out before the new process takes its first step (spawn only schedules it).
    dist.spawn_reply(req.req_id, caller, flags, proc.pid)


def _badrpc_reason(exc: BaseException) -> Any:
    if isinstance(exc, Throw):
        return exc.value
    if isinstance(exc, Exit):
        return (EXIT_TAG, exc.reason)
    return (EXIT_TAG, (exception_reason(exc), getattr(exc, "stack", [])))


async def rex_server(proc: Process) -> None:
    """The legacy ``rex`` process."""
    node = proc.node
    while True:
        msg = await proc.receive()
        if type(msg) is not tuple or len(msg) < 2:
            continue
        if msg[0] == Atom("$gen_call") and len(msg) == 3 and type(msg[1]) is tuple:
            from_, req = msg[1], msg[2]
            if type(req) is tuple and len(req) >= 4 and req[0] == Atom("call"):
                node.create_task(_rex_call(proc, req[1], req[2], req[3], functools.partial(_gen_reply, proc, from_)))
            elif req == Atom("features_request") or (type(req) is tuple and req[:1] == (Atom("features_request"),)):
                _gen_reply(proc, from_, (Atom("features_reply"), node.name, [ERPC]))
        elif msg[0] == Atom("$gen_cast") and type(msg[1]) is tuple and msg[1][:1] == (Atom("cast"),) and len(msg[1]) >= 4:
            _, m, f, a = msg[1][:4]
            node.create_task(_rex_call(proc, m, f, a, lambda r: None))
        elif type(msg[0]) is Pid and type(msg[1]) is tuple and len(msg[1]) >= 4 and msg[1][0] == Atom("call"):
            caller = msg[0]
            _, m, f, a = msg[1][:4]
            node.create_task(_rex_call(proc, m, f, a, functools.partial(_rex_reply, proc, caller)))
        elif type(msg[0]) is Pid and msg[1] == Atom("features_request"):
            proc.send(msg[0], (Atom("features_reply"), node.name, [ERPC]))


def _rex_reply(proc: Process, caller: Pid, value: Any) -> None:
    proc.send(caller, (Atom("rex"), value))


def _gen_reply(proc: Process, from_: Any, value: Any) -> None:
    reply(proc, from_, value)


async def _rex_call(proc: Process, m: Any, f: Any, a: Any, answer: Callable[[Any], None]) -> None:
    try:
        v = await apply_exposed(proc.node, m, f, a)
    except (Exception, Exit) as e:
        v = (BADRPC, _badrpc_reason(e))
    answer(v)


# -- rpc out of this node -------------------------------------------------------------------


async def erpc_call(proc: Process, node: str, m: str, f: str, args: list[Any], timeout: float | None = 5.0) -> Any:
    """``erpc:call(Node, M, F, A, Timeout)`` from ``proc``: returns the value, or raises
    :class:`RpcError` with ``(Class, Reason)`` (``error``/``exit``/``throw``, or
    ``(erpc, noconnection | timeout | notsup)``)."""
    return await _erpc_call(proc, Atom(node), Atom(m), Atom(f), list(args), timeout)


def _is_spawn_outcome(req_id: Reference) -> Callable[[Any], bool]:
    """The messages that end the first wait of an erpc call: its SPAWN_REPLY, or the DOWN of
    its monitor (the connection went down before the reply)."""
    def match(x: Any) -> bool:
        return type(x) is tuple and len(x) >= 2 and x[1] == req_id and (x[0] == SPAWN_REPLY_TAG or x[0] == DOWN_TAG)
    return match


async def _erpc_call(proc: Process, node: Atom, m: Atom, f: Atom, args: list[Any], timeout: float | None) -> Any:
    """erpc.erl's call: ``spawn_request(Node, erpc, execute_call, [Res, M, F, A], [monitor])``,
    then the SPAWN_REPLY (the pid, or why not), then the DOWN whose reason carries the
    result: ``{Res, return, Value}`` or ``{Res, Class, Reason, Stack}``."""
    runtime = proc.node
    dist = runtime._dist()
    req_id = runtime.make_ref()
    res = runtime.make_ref()
    proc.monitors[req_id] = Pid(node, 0, 0, 0)  # placeholder until SPAWN_REPLY names the pid
    dist.spawn_request(proc, node, req_id, (ERPC, EXECUTE_CALL, 4), [MONITOR], [res, m, f, args])
    try:
        msg = await proc.receive(_is_spawn_outcome(req_id), timeout)
        if msg[0] == SPAWN_REPLY_TAG:
            result = msg[3]
            if type(result) is not Pid:
                proc.monitors.pop(req_id, None)
                raise RpcError((ERPC, result))
            proc.monitors[req_id] = result
            msg = await proc.receive(lambda x: type(x) is tuple and len(x) == 5 and x[0] == DOWN_TAG and x[1] == req_id, timeout)
    except TimeoutError:
        dist.forget_spawn(req_id)
        pid = proc.monitors.pop(req_id, None)
        if type(pid) is Pid and pid.id:
            dist.exit2(proc.pid, pid, KILL)
        raise RpcError((ERPC, TIMEOUT)) from None
    finally:
        dist.forget_spawn(req_id)
    reason = msg[4]
    if reason == NOCONNECTION:
        raise RpcError((ERPC, NOCONNECTION))
    if type(reason) is tuple and len(reason) >= 3 and reason[0] == res:
        if reason[1] == Atom("return"):
            return reason[2]
        raise RpcError(tuple(reason[1:]))
    raise RpcError((EXIT, (Atom("signal"), reason)))


async def rpc_call(proc: Process, node: str, m: str, f: str, args: list[Any], timeout: float | None = 5.0) -> Any:
    """``rpc:call/5`` from ``proc``: the value, or ``('badrpc', Reason)`` as a tuple, as OTP returns it."""
    try:
        return await erpc_call(proc, node, m, f, args, timeout)
    except RpcError as e:
        cls, reason = e.reason[0], e.reason[1]
        if cls == ERPC:
            # rpc.erl: {erpc, noconnection} is reported as nodedown
            return (BADRPC, Atom("nodedown") if reason == Atom("noconnection") else reason)
        if cls == THROW:
            return reason
        if cls == EXIT:
            if type(reason) is tuple and len(reason) == 2 and reason[0] == Atom("signal"):
                reason = reason[1]  # rpc.erl: exit({signal, R}) -> {'EXIT', R}
            return (BADRPC, (EXIT_TAG, reason))
        stack = e.reason[2] if len(e.reason) > 2 else []
        return (BADRPC, (EXIT_TAG, (reason, stack)))
