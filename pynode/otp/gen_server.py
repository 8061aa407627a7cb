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
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from erl_interop.terms import Atom, ImproperList, Pid, Reference

from ..core import process as _process
from ..core.process import DOWN_TAG, KILLED, NORMAL, NOCONNECTION, Exit, Process, ReceiveTimeout, exception_reason
from ..errors import CallError

__all__ = ["GenServer", "call", "cast", "reply", "NOREPLY", "Stop", "From"]

log = logging.getLogger("pynode.genserver")

GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
ALIAS = Atom("alias")
NODEDOWN = Atom("nodedown")
TIMEOUT = Atom("timeout")
NOPROC = Atom("noproc")

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
            msg = await proc.receive()
            try:
                if type(msg) is tuple and len(msg) == 3 and msg[0] == GEN_CALL and type(msg[1]) is tuple:
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


# Process.call / Process.cast of the core are gen_server's: plug them in (the core defines
# the slot and never imports this layer).
_process.set_call_impl(call)
