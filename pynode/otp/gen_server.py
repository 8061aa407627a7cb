"""GenServer: the ``gen_server`` behaviour for Python, and ``gen:call`` both ways.

Theory of operation
-------------------
A :class:`GenServer` runs in one :class:`~pynode.core.process.Process` and handles one message
at a time: ``{'$gen_call', {From, Tag}, Request}`` goes to :meth:`GenServer.handle_call`,
``{'$gen_cast', Request}`` to :meth:`handle_cast`, anything else to :meth:`handle_info`.
Replies follow ``gen:reply/2``: a tag ``[alias | Ref]`` (OTP 24+) is answered by sending
``{Tag, Reply}`` to the alias ``Ref``, any other tag by sending it to the caller's pid.

:func:`call` is ``gen.erl``'s ``do_call``: monitor the destination with an alias that dies
with the monitor, send ``{'$gen_call', {self(), [alias | Mref]}, Request}``, then wait for
the reply or the ``DOWN``. ``DOWN`` with ``noconnection`` means ``{nodedown, Node}``; another reason
is the callee's exit reason (``noproc`` at once when it does not exist); on timeout the
monitor and alias are dropped, so a late reply is discarded by the runtime.

The server answers ``sys.erl``'s system messages, ``{system, From, Request}``, between two
callbacks as ``gen_server`` does: ``get_state`` (the state), ``replace_state`` (the new one),
``get_status`` (the ``{status, Pid, {module, gen_server}, [PDict, SysState, Parent, Debug,
Formatted]}`` of ``gen_server:format_status``), ``suspend`` (afterwards only system messages
are taken; everything else waits in the mailbox) and ``resume``, ``terminate``, the
``debug`` queries, and ``{error, {unknown_system_msg, Request}}`` for the rest. The state
is what :meth:`GenServer.system_get_state` makes of the server (its public attributes, by
default). A ``replace_state`` fun is a BEAM closure that only a BEAM node can run: it is
applied on the caller's node by the fun applier :mod:`pynode.otp.rpc` plugs in (erpc),
and its errors come back as ``gen_server``'s ``callback_failed``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from erl_interop import EncodeError, encode
from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom, Export, ImproperList, Pid, Reference

from ..core import process as _process
from ..core.process import DOWN_TAG, KILLED, NORMAL, NOCONNECTION, Exit, Process, ReceiveTimeout, exception_reason
from ..errors import CallError, RpcError

__all__ = ["GenServer", "call", "cast", "reply", "NOREPLY", "Stop", "From", "set_fun_applier"]

log = bounded_logger(logging.getLogger("pynode.genserver"))

GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
ALIAS = Atom("alias")
NODEDOWN = Atom("nodedown")
TIMEOUT = Atom("timeout")
NOPROC = Atom("noproc")
SYSTEM = Atom("system")
OK = Atom("ok")
ERROR = Atom("error")
RUNNING = Atom("running")
SUSPENDED = Atom("suspended")
GEN_SERVER = Atom("gen_server")
CALLBACK_FAILED = Atom("callback_failed")

#: Applies a BEAM fun on a BEAM node: ``await applier(proc, node, fun, args)`` returns its
#: value or raises :class:`~pynode.errors.RpcError` with ``(Class, Reason, ...)``. A Python
#: node cannot run a closure, so ``:sys.replace_state``'s fun runs on the caller's node.
#: :mod:`pynode.otp.rpc` plugs erpc in (it imports this module; this one does not import it).
FunApplier = Callable[[Process, Atom, Any, list[Any]], Awaitable[Any]]
_fun_applier: FunApplier | None = None


#: (node, creation) -> the OTP release that node runs (for the sys reply shapes)
_releases: dict[tuple[Atom, int], int] = {}


def set_fun_applier(fn: FunApplier) -> None:
    """Plug in how a BEAM fun is applied (:mod:`pynode.otp.rpc` does it when imported)."""
    global _fun_applier
    _fun_applier = fn

#: ``From`` as handed to :meth:`GenServer.handle_call`: ``(caller_pid, tag)``.
From = tuple[Pid, Any]


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


#: Return this from :meth:`GenServer.handle_call` to reply later with :func:`reply`.
NOREPLY: Any = _NoReply()


class Stop(Exception):
    """Raise from a callback to stop the server with ``reason`` (``{stop, Reason, ...}``);
    from ``handle_call``, ``reply`` (if given) is sent to the caller first."""

    _unset = object()

    def __init__(self, reason: Any = NORMAL, reply: Any = _unset) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def reply(proc_or_node: Any, from_: From, value: Any) -> None:
    """``gen_server:reply(From, Reply)``."""
    pid, tag = from_
    if type(tag) is ImproperList and tag.elements == (ALIAS,) and type(tag.tail) is Reference:
        proc_or_node.send(tag.tail, (tag, value))
    else:
        proc_or_node.send(pid, (tag, value))


async def call(proc: Process, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """``gen_server:call(Dest, Request, Timeout)`` made by ``proc``. Raises :class:`CallError`."""
    node = proc.node
    if isinstance(dest, str) and not isinstance(dest, tuple):
        if node.whereis(dest) is None:
            raise CallError(NOPROC, Atom(dest), request, timeout)
        target: Any = Atom(dest)
    elif type(dest) is tuple:
        target = (Atom(dest[0]), Atom(dest[1]))
    else:
        target = dest
    mref = proc.monitor(target, alias="demonitor")
    tag = ImproperList((ALIAS,), mref)
    proc.send(target, (GEN_CALL, (proc.pid, tag), request))

    def match(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 2 and m[0] == tag) or (len(m) == 5 and m[0] == DOWN_TAG and m[1] == mref)
        )

    try:
        m = await proc.receive(match, timeout)
    except ReceiveTimeout:
        proc.demonitor(mref, flush=True)
        # gen.erl: a reply that arrived before the alias was dropped still counts; one
        # that arrives later is discarded by the runtime (the alias is gone).
        try:
            late = await proc.receive(lambda x: type(x) is tuple and len(x) == 2 and x[0] == tag, 0)
        except ReceiveTimeout:
            raise CallError(TIMEOUT, target, request, timeout) from None
        return late[1]
    if len(m) == 2:
        proc.demonitor(mref, flush=True)
        return m[1]
    reason = m[4]
    if reason == NOCONNECTION:
        # gen.erl: exit({nodedown, Node})
        if type(target) is Pid:
            where = target.node
        elif type(target) is tuple:
            where = target[1]
        else:
            where = node.name
        reason = (NODEDOWN, where)
    raise CallError(reason, target, request, timeout)


def cast(sender: Any, dest: Any, request: Any) -> None:
    """``gen_server:cast(Dest, Request)``: never fails."""
    try:
        sender.send(dest, (GEN_CAST, request))
    except ValueError:
        pass


class GenServer:
    """Subclass and override the callbacks; start with ``await MyServer.start(node, ...)``.

    ``handle_call`` returns the reply (or :data:`NOREPLY`, then :meth:`reply` later);
    callbacks raise :class:`Stop` to stop. An exception escaping a callback crashes the
    server: :meth:`terminate` runs, the crash is logged, and callers waiting on it get the
    exit reason (``{python_error, <<"Type">>, <<"message">>}``).
    """

    process: Process
    #: gen_server's Parent (the process it was started linked to, else itself), for get_status
    _parent: Pid
    #: sys:suspend'ed: only system messages are taken until sys:resume
    _suspended = False

    # -- callbacks ------------------------------------------------------------------------
    async def init(self, *args: Any) -> None:
        """Set up state on ``self``. Raise :class:`Stop` to refuse to start."""

    async def handle_call(self, request: Any, from_: From) -> Any:
        raise RuntimeError(f"{type(self).__name__} got a call it has no handle_call for: {request!r}")

    async def handle_cast(self, request: Any) -> None:
        raise RuntimeError(f"{type(self).__name__} got a cast it has no handle_cast for: {request!r}")

    async def handle_info(self, msg: Any) -> None:
        log.warning("%s %s received unexpected message in handle_info: %r", type(self).__name__, self.pid, msg)

    async def terminate(self, reason: Any) -> None:
        """Called when the server stops or crashes (not when it is killed)."""

    # -- sys callbacks (``:sys.get_state``, ``replace_state``, ``get_status``) -------------
    def system_get_state(self) -> Any:
        """The state ``:sys.get_state`` answers. By default a map of the server's public
        attributes (``%{count: 5}`` for ``self.count = 5``); values that are not Erlang terms
        (an ``asyncio.Event``, a callable) are left out."""
        state: dict[Atom, Any] = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key == "process" or not _is_term(value):
                continue
            state[Atom(key)] = value
        return state

    def system_replace_state(self, state: Any) -> None:
        """Take ``state``, the value of a ``:sys.replace_state`` fun. By default it must be a
        map with atom keys (what :meth:`system_get_state` gives); each key is set as an
        attribute. Raise to refuse it: the caller gets ``callback_failed``, as from OTP."""
        if not isinstance(state, dict) or not all(type(k) is Atom for k in state):
            raise ValueError(f"{type(self).__name__}'s state must be a map with atom keys, got {state!r:.200}")
        private = [k for k in state if k.startswith("_") or k == "process"]
        if private:
            raise ValueError(f"{private[0]} is not a public attribute of {type(self).__name__}")
        for key, value in state.items():
            setattr(self, str(key), value)

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """``format_status/1``: ``status`` has the keys ``"state"`` and ``"log"``; return it
        with whatever should not be shown by ``:sys.get_status`` replaced."""
        return status

    # -- API ------------------------------------------------------------------------------
    @property
    def pid(self) -> Pid:
        return self.process.pid

    @property
    def node(self) -> Any:
        return self.process.node

    def reply(self, from_: From, value: Any) -> None:
        reply(self.process, from_, value)

    def send(self, dest: Any, msg: Any) -> None:
        self.process.send(dest, msg)

    async def call(self, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
        return await call(self.process, dest, request, timeout)

    def cast(self, dest: Any, request: Any) -> None:
        cast(self.process, dest, request)

    @classmethod
    async def start(
        cls,
        node: Any,
        *args: Any,
        name: str | None = None,
        link: Process | None = None,
        trap_exit: bool = False,
        **kwargs: Any,
    ) -> "GenServer":
        """Start the server and wait for :meth:`init` (``gen_server:start/start_link``).

        Returns the server once ``init`` has returned. Raises on every other path: the
        exception ``init`` raised; :class:`~pynode.errors.CallError` with the reason when
        ``init`` raised :class:`Stop`, or when the process was killed during ``init`` or
        before it ever ran (an exit signal, ``Node.stop`` racing the start)."""
        server = cls(**kwargs) if kwargs else cls()
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def body(proc: Process) -> None:
            server.process = proc
            # gen_server's Parent: the process it was started linked to, else itself.
            server._parent = link.pid if link is not None else proc.pid
            try:
                await server.init(*args)
            except Stop as e:
                ready.set_exception(CallError(e.reason, name))
                raise Exit(e.reason) from None
            except asyncio.CancelledError:
                raise  # killed during init: the starter reads the exit reason below
            except BaseException as e:
                ready.set_exception(e)
                raise
            ready.set_result(None)
            await server._loop()

        proc = node.spawn(body, name=name, link=link, trap_exit=trap_exit)
        assert proc.task is not None
        await asyncio.wait((ready, proc.task), return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            # The process ended before init returned: killed during init, or before its
            # first step (then init never ran at all).
            ready.cancel()
            raise CallError(proc.exit_reason if proc.exit_reason is not None else KILLED, name)
        ready.result()  # raises what init raised
        return server

    async def _loop(self) -> None:
        proc = self.process
        while True:
            # Suspended (sys:suspend), only system messages (and the parent's exit) are
            # taken, the rest waits.
            msg = await proc.receive(self._takes_when_suspended if self._suspended else None)
            try:
                if _is_system(msg):
                    await self._system(msg[1], msg[2])
                elif (type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT_TAG and msg[1] == self._parent
                      and self._parent != proc.pid):
                    # gen_server: the parent's exit (seen when trapping exits) terminates
                    # the server with the parent's reason; handle_info never sees it
                    raise Stop(msg[2])
                elif type(msg) is tuple and len(msg) == 3 and msg[0] == GEN_CALL and type(msg[1]) is tuple:
                    from_ = msg[1]
                    try:
                        value = await self.handle_call(msg[2], from_)
                    except Stop as e:
                        if e.reply is not Stop._unset:
                            self.reply(from_, e.reply)
                        raise
                    if value is not NOREPLY:
                        self.reply(from_, value)
                elif type(msg) is tuple and len(msg) == 2 and msg[0] == GEN_CAST:
                    await self.handle_cast(msg[1])
                else:
                    await self.handle_info(msg)
            except Stop as e:
                await self.terminate(e.reason)
                raise Exit(e.reason) from None
            except Exception as e:
                try:
                    await self.terminate(exception_reason(e))
                finally:
                    raise

    def _takes_when_suspended(self, m: Any) -> bool:
        return _is_system(m) or (type(m) is tuple and len(m) == 3 and m[0] == EXIT_TAG and m[1] == self._parent
                                 and self._parent != self.process.pid)

    # -- system messages (sys.erl) ---------------------------------------------------------
    async def _system(self, from_: Any, request: Any) -> None:
        """Answer ``{system, From, Request}`` as ``sys:handle_system_msg`` does for a
        gen_server; the reply goes by ``gen:reply``."""
        t = type(request)
        if request == Atom("get_state"):
            answer: Any = self._sys_get_state()
            if await self._caller_wants_ok(from_):
                answer = (OK, answer)
        elif t is tuple and len(request) == 2 and request[0] == Atom("replace_state"):
            answer = await self._sys_replace_state(from_, request[1])
            if not (type(answer) is tuple and len(answer) == 2 and answer[0] == ERROR) and await self._caller_wants_ok(from_):
                answer = (OK, answer)
        elif request == Atom("get_status"):
            answer = self._sys_get_status()
        elif request == Atom("suspend"):
            self._suspended, answer = True, OK
        elif request == Atom("resume"):
            self._suspended, answer = False, OK
        elif t is tuple and len(request) == 2 and request[0] == Atom("terminate"):
            # gen_server answers ok, then terminates as if a callback had stopped it
            self.reply(from_, OK)
            raise Stop(request[1])
        elif t is tuple and len(request) == 2 and request[0] == Atom("debug"):
            answer = _debug_answer(request[1])
        elif t is tuple and len(request) == 4 and request[0] == Atom("change_code") and self._suspended:
            answer = OK  # no Erlang code runs here: nothing to change
        else:
            answer = (ERROR, (Atom("unknown_system_msg"), request))
        self.reply(from_, answer)

    def _sys_get_state(self) -> Any:
        try:
            state = self.system_get_state()
            encode(state)
        except Exception as e:
            return (ERROR, (CALLBACK_FAILED, (GEN_SERVER, Atom("system_get_state")), (ERROR, exception_reason(e))))
        return state

    async def _caller_wants_ok(self, from_: Any) -> bool:
        """``sys:get_state``/``replace_state`` of OTP 26 and later take ``{ok, State}``; OTP
        25's take the bare state (obs; docs/WIRE.md §6.8). The caller's release is asked of
        its node once (``erlang:system_info(otp_release)``) and remembered per incarnation."""
        caller = from_[0] if type(from_) is tuple and from_ and type(from_[0]) is Pid else None
        if caller is None or caller.node == self.process.node.name or _fun_applier is None:
            return False
        key = (caller.node, caller.creation)
        release = _releases.get(key)
        if release is None:
            try:
                r = await _fun_applier(self.process, caller.node, Export(Atom("erlang"), Atom("system_info"), 1),
                                       [Atom("otp_release")])
                release = int(bytes(r).decode() if type(r) is bytes else "".join(map(chr, r)))
            except Exception:
                release = 25  # not a BEAM node that answers: the older form
            _releases[key] = release
        return release >= 26

    async def _sys_replace_state(self, from_: Any, fun: Any) -> Any:
        failed = (GEN_SERVER, Atom("system_replace_state"))
        caller = from_[0] if type(from_[0]) is Pid else None
        if caller is None or caller.node == self.process.node.name or _fun_applier is None:
            # Only a BEAM node can run the fun; a local caller has none to offer.
            return (ERROR, (CALLBACK_FAILED, failed, (ERROR, Atom("undef"))))
        try:
            new = await _fun_applier(self.process, caller.node, fun, [self.system_get_state()])
        except RpcError as e:  # the fun raised, threw or exited: {Class, Reason}, as gen_server's catch
            return (ERROR, (CALLBACK_FAILED, failed, tuple(e.reason[:2])))
        except Exception as e:  # system_get_state failed, or its state is not a term
            return (ERROR, (CALLBACK_FAILED, failed, (ERROR, exception_reason(e))))
        try:
            self.system_replace_state(new)
        except Exception as e:
            return (ERROR, (CALLBACK_FAILED, failed, (ERROR, exception_reason(e))))
        return new

    def _sys_get_status(self) -> Any:
        proc = self.process
        sys_state = SUSPENDED if self._suspended else RUNNING
        try:
            status = self.format_status({"state": self.system_get_state(), "log": []})
            state = status.get("state")
            encode(state)
        except Exception as e:
            state = (Atom("EXIT"), exception_reason(e))
        cls = type(self)
        pdict: list[Any] = [
            (Atom("$initial_call"), (Atom(f"{cls.__module__}.{cls.__qualname__}"), Atom("init"), 1)),
            (Atom("$ancestors"), [] if self._parent == proc.pid else [self._parent]),
        ]
        pdict += [(k, v) for k, v in proc.dictionary.items() if _is_term((k, v))]
        name = str(proc.name) if proc.name is not None else f"<0.{proc.pid.id}.{proc.pid.serial}>"
        formatted = [
            (Atom("header"), _chars(f"Status for generic server {name}")),
            (Atom("data"), [(_chars("Status"), sys_state), (_chars("Parent"), self._parent),
                            (_chars("Logged events"), [])]),
            (Atom("data"), [(_chars("State"), state)]),
        ]
        return (Atom("status"), proc.pid, (Atom("module"), GEN_SERVER), [pdict, sys_state, self._parent, [], formatted])


EXIT_TAG = Atom("EXIT")


def _is_system(m: Any) -> bool:
    return type(m) is tuple and len(m) == 3 and m[0] == SYSTEM and type(m[1]) is tuple and len(m[1]) == 2


def _is_term(value: Any) -> bool:
    try:
        encode(value)
    except EncodeError:
        return False
    return True


def _chars(text: str) -> list[int]:
    """An Erlang string (a list of character codes), as sys:get_status writes its labels."""
    return [ord(c) for c in text]


def _debug_answer(what: Any) -> Any:
    """``sys:trace``/``log``/``statistics`` etc.: no debug options are kept here, so the
    queries answer empty and turning one off is done; turning one on is not supported."""
    if type(what) is tuple and len(what) == 2 and what[1] == Atom("get"):
        if what[0] == Atom("log"):
            return (OK, [])
        if what[0] == Atom("statistics"):
            return (OK, Atom("no_statistics"))
    if what == Atom("no_debug") or (type(what) is tuple and len(what) == 2 and what[1] is False):
        return OK
    return Atom("unknown_debug")


# Process.call / Process.cast of the core are gen_server's: plug them in (the core defines
# the slot and never imports this layer).
_process.set_call_impl(call)
