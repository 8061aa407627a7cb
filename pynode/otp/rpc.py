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
(``spawn(Node, M, F, A)``; ``Node.spawn(node, fun)`` is ``{erlang, apply, [Fun, []]}``)
spawns ``M:F(Args...)``; an error ends that process with ``{Reason, Stack}`` and is logged
on one bounded line (pid, call, reason), as the BEAM logs a crashed process.

Only functions exposed with :meth:`Node.expose` run, and the built-ins of :data:`BUILTINS`:
``erlang:halt/0,1,2`` and ``init:stop/0,1`` stop the node gracefully (``erl_call -q``);
``erlang:apply/2`` applies an exported fun (a closure is BEAM code: ``undef``);
``code:ensure_loaded('Elixir.IEx')`` (``iex --remsh``) says that the node has no shell.
Anything else fails exactly as an undefined function does on the BEAM: ``error:undef``
with ``[{M, F, Args, []}]`` as the stack, which ``rpc:call`` reports as
``{badrpc, {'EXIT', {undef, [...]}}}``.

The legacy ``rex`` server answers ``{'$gen_call', From, {call, M, F, A, GL}}`` and
``{From, {call, M, F, A, GL}}`` (``erl_call``/``ei_rpc``) with the value or
``{badrpc, {'EXIT', Reason}}``, ``{'$gen_call', From, {block_call, M, F, A, GL}}``
(``rpc:block_call``) the same way but in ``rex`` itself, one at a time, and
``{From, {sbcast, Name, Msg}}`` (``rpc:sbcast``) and ``{From, {send, Name, Msg}}`` as
``rpc.erl`` does.

Out of this node, :func:`erpc_call` is erpc.erl's client: a ``SPAWN_REQUEST`` through the
distribution's :meth:`~pynode.core.runtime.Transport.spawn_request`, then the
``SPAWN_REPLY`` and the ``DOWN`` of the monitor, in the calling process's own mailbox.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from typing import Any, Awaitable, Callable

from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom, Export, Fun, ImproperList, Pid, Reference

from ..core import DOWN_TAG, NOCONNECTION, Exit, Process, Runtime, exception_reason
from ..dist.incoming import SPAWN_REPLY_TAG
from ..errors import ErlangError, RpcError, Throw
from . import net_kernel
from .gen_server import reply, set_fun_applier

__all__ = ["apply_exposed", "erpc_call", "rpc_call", "handle_spawn_request", "format_term", "BUILTINS"]

log = bounded_logger(logging.getLogger("pynode.rpc"))

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
REX = Atom("rex")
SBCAST = Atom("sbcast")
SEND = Atom("send")


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


def _error(reason: Any, stack: list[Any]) -> ErlangError:
    """``erlang:error(Reason)`` with the stack the BEAM would report (``.stack``)."""
    e = ErlangError(reason)
    e.stack = stack  # type: ignore[attr-defined]
    return e


async def apply_exposed(node: Any, m: Any, f: Any, args: Any) -> Any:
    """Run an exposed ``m:f(args)``, or else one of the node's built-ins (:data:`BUILTINS`).
    Raises ``ErlangError(undef)`` (with the BEAM's stack shape in ``.stack``) when neither
    exists or the arity does not fit."""
    fn = node.exposed(m, f) if isinstance(m, str) and isinstance(f, str) else None
    if fn is None and type(args) is list:
        builtin = BUILTINS.get((m, f, len(args)))
        if builtin is not None:
            return await builtin(node, *args)
    if type(args) is not list or fn is None or not _accepts(fn, len(args)):
        raise _error(UNDEF, [(m, f, args if type(args) is list else [], [])])
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


# -- built-ins: what every Python node serves besides the exposed functions -----------------


def _exit_status(status: Any) -> int:
    """``erlang:halt(Status)``'s exit status: an integer as given (0..255), else 1 (a
    slogan or ``abort``, which on the BEAM crash the node)."""
    return status & 0xFF if type(status) is int else 1


async def _halt(node: Any, status: Any = 0, options: Any = None) -> Any:
    """``erlang:halt/0,1,2``: the node stops, and the caller gets no reply (as from a BEAM
    node, ``{badrpc, nodedown}``): this waits until the stop kills it."""
    net_kernel.halt(node, _exit_status(status))
    await asyncio.get_running_loop().create_future()


async def _init_stop(node: Any, status: Any = 0) -> Any:
    """``init:stop/0,1``: ``ok`` at once, then the node stops (gracefully, as ``init`` does)."""
    net_kernel.halt(node, _exit_status(status))
    return Atom("ok")


async def _ensure_loaded(node: Any, module: Any) -> Any:
    """``code:ensure_loaded/1``. ``iex --remsh`` on Elixir 1.14 / OTP 25 asks it for ``IEx``
    before it starts a shell there: the answer says why there is none. Any other module is
    not loaded here either: ``{error, nofile}``, as a BEAM node without that module answers
    (OTP 26+ asks for ``iex`` itself before a remote shell, and then prints that it could not
    load it and exits)."""
    if module == Atom("Elixir.IEx"):
        raise Exit(f"{node.name} is a Python node (pynode): it has no Erlang shell, so no remote shell; "
                   "call it with :rpc.call/4, :erpc.call/4 or GenServer.call/2 instead".encode())
    return (ERROR, Atom("nofile"))


async def _apply(node: Any, fun: Any, args: Any) -> Any:
    """``erlang:apply(Fun, Args)`` (``Node.spawn(node, fn -> ... end)``): an exported fun runs
    the exposed function it names; a closure is BEAM code, undefined here, and fails as on a
    BEAM node that lacks its module: ``{undef, [{Fun, Args, []}]}``."""
    if type(args) is not list:
        raise _error(Atom("badarg"), [(Atom("erlang"), Atom("apply"), [fun, args], [])])
    if type(fun) is Export:
        if fun.arity != len(args):
            raise _error((Atom("badarity"), (fun, args)), [])
        return await apply_exposed(node, fun.module, fun.function, args)
    if type(fun) is Fun:
        raise _error(UNDEF, [(fun, args, [])])
    raise _error((Atom("badfun"), fun), [])


#: ``(Module, Function, Arity)`` -> the coroutine serving it; an exposed function of the
#: same name takes precedence.
BUILTINS: dict[tuple[Atom, Atom, int], Callable[..., Awaitable[Any]]] = {
    (Atom("erlang"), Atom("halt"), 0): _halt,
    (Atom("erlang"), Atom("halt"), 1): _halt,
    (Atom("erlang"), Atom("halt"), 2): _halt,
    (Atom("init"), Atom("stop"), 0): _init_stop,
    (Atom("init"), Atom("stop"), 1): _init_stop,
    (Atom("code"), Atom("ensure_loaded"), 1): _ensure_loaded,
    (Atom("erlang"), Atom("apply"), 2): _apply,
}


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
        # spawn(Node, M, F, A) and Node.spawn(node, fun) (erlang:apply/2): an error ends the
        # process with {Reason, Stack} and is logged, as the BEAM's emulator logs the error
        # of a process that is not a proc_lib one; exit/1 ends it quietly.

        async def body(proc: Process) -> None:
            try:
                await apply_exposed(node, m, f, args)
            except (ErlangError, Throw) as e:
                if isinstance(e, Throw):
                    reason: Any = ((Atom("nocatch"), e.value), [])
                else:
                    reason = (e.reason, getattr(e, "stack", []))
                log.error("Error in process %s on node %s with exit value: %s (spawned by %s as %s)",
                          proc.pid, node.name, format_term(reason, 500), caller, _format_call(m, f, args))
                raise Exit(reason) from None

    flags = (1 if link else 0) | (2 if monitor else 0)
    proc = node.spawn(
        body,
        remote_link=caller if link else None,
        remote_monitor=(req.req_id, caller) if monitor else None,
    )
    # The reply goes out before the new process takes its first step (spawn only schedules it).
    dist.spawn_reply(req.req_id, caller, flags, proc.pid)


_BARE_ATOM = re.compile(r"[a-z][A-Za-z0-9_@]*")
#: nesting levels :func:`format_term` writes out (deeper ones are ``...``)
_FORMAT_DEPTH = 50


def format_term(t: Any, limit: int = 200) -> str:
    """``t`` in Erlang syntax on one line, as ``~0p`` prints it, cut after about ``limit``
    characters (``...``): for log lines, whatever a peer sends."""
    out: list[str] = []
    size = 0

    def put(text: str) -> bool:
        nonlocal size
        out.append(text)
        size += len(text)
        return size <= limit

    def seq(items: Any, open_: str, close: str, depth: int, tail: Any = None, kv: bool = False) -> bool:
        if not put(open_):
            return False
        if depth > _FORMAT_DEPTH:
            put("...")
            return False
        for i, x in enumerate(items):
            if i and not put(","):
                return False
            if kv:
                if not (go(x[0], depth) and put(" => ") and go(x[1], depth)):
                    return False
            elif not go(x, depth):
                return False
        if tail is not None and not (put("|") and go(tail, depth)):
            return False
        return put(close)

    def go(x: Any, depth: int) -> bool:
        depth += 1
        t = type(x)
        if x is None or t is bool:
            return put({None: "nil", True: "true", False: "false"}[x])
        if t is Atom:
            return put(x if _BARE_ATOM.fullmatch(x) else "'" + x.replace("\\", "\\\\").replace("'", "\\'") + "'")
        if t is int and x.bit_length() > 4000:  # Python will not write it out
            return put(f"<an integer of {x.bit_length()} bits>")
        if t is int or t is float:
            return put(repr(x))
        if t is str:
            x = x.encode()
            t = bytes
        if t is bytes or t is bytearray:
            text = bytes(x[: limit + 1])
            if all(32 <= b < 127 for b in text):
                more = "..." if len(x) > len(text) else ""
                return put('<<"' + text.decode().replace("\\", "\\\\").replace('"', '\\"') + more + '">>')
            return seq(list(text), "<<", ">>" if len(x) == len(text) else ",...>>", depth)
        if t is tuple:
            return seq(x, "{", "}", depth)
        if t is list:
            if x and all(type(c) is int and 32 <= c < 127 for c in x[: limit + 1]):
                return put('"' + "".join(map(chr, x[: limit + 1])).replace("\\", "\\\\").replace('"', '\\"') + '"')
            return seq(x, "[", "]", depth)
        if t is ImproperList:
            return seq(x.elements, "[", "]", depth, tail=x.tail)
        if isinstance(x, dict):
            return seq(list(x.items()), "#{", "}", depth, kv=True)
        if t is Pid or t is Reference:
            return put(str(x))
        if t is Fun:
            return put(f"#Fun<{x.module}.{x.old_index}.{x.old_uniq}>")
        if t is Export:
            return put(f"fun {x.module}:{x.function}/{x.arity}")
        return put(repr(x)[: limit + 1])

    if go(t, 0):
        return "".join(out)
    return "".join(out)[:limit] + "..."


def _format_call(m: Any, f: Any, args: Any) -> str:
    """``M:F(Args...)`` for a log line, bounded."""
    inner = format_term(args, 200)
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return f"{format_term(m, 100)}:{format_term(f, 100)}({inner})"


def _badrpc_reason(exc: BaseException) -> Any:
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
            elif type(req) is tuple and len(req) >= 4 and req[0] == Atom("block_call"):
                # rpc:block_call: rex runs it itself, so the requests behind it wait (rpc.erl)
                await _rex_call(proc, req[1], req[2], req[3], functools.partial(_gen_reply, proc, from_))
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
        elif type(msg[0]) is Pid and type(msg[1]) is tuple and len(msg[1]) == 3 and msg[1][0] in (SBCAST, SEND):
            # rpc:sbcast ({sbcast, Name, Msg}: Msg to Name, then say whether it was there) and
            # {send, Name, Msg} ({From, Msg} to Name; only a missing name is answered)
            kind, name, payload = msg[1]
            if type(name) is not Atom or node.whereis(name) is None:
                proc.send(msg[0], (REX, node.name, (Atom("nonexisting_name"), name)))
            elif kind == SBCAST:
                proc.send(name, payload)
                proc.send(msg[0], (REX, node.name, node.name))
            else:
                proc.send(name, (msg[0], payload))


def _rex_reply(proc: Process, caller: Pid, value: Any) -> None:
    proc.send(caller, (Atom("rex"), value))


def _gen_reply(proc: Process, from_: Any, value: Any) -> None:
    reply(proc, from_, value)


async def _rex_call(proc: Process, m: Any, f: Any, a: Any, answer: Callable[[Any], None]) -> None:
    try:
        v = await apply_exposed(proc.node, m, f, a)
    except Throw as e:
        v = e.value  # rex runs the call in a catch: a thrown value is the answer
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


async def _apply_remote_fun(proc: Process, node: Atom, fun: Any, args: list[Any]) -> Any:
    """``erlang:apply(Fun, Args)`` on ``node`` by erpc, with no time limit: a BEAM fun (a
    ``:sys.replace_state`` fun) can only run on a BEAM node."""
    return await _erpc_call(proc, node, Atom("erlang"), Atom("apply"), [fun, list(args)], None)


# gen_server's replace_state runs its fun through erpc: plug it in (gen_server is imported
# by this module, not the other way round).
set_fun_applier(_apply_remote_fun)
