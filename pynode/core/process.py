"""Processes: pids with mailboxes, selective receive, links, monitors and exit signals.

Theory of operation
-------------------
A :class:`Process` is an asyncio task plus a mailbox, owned by its :class:`~pynode.node.Node`.
Everything that crosses between processes is a *signal* handled by the node, in order,
on the event loop thread: messages, link/unlink, monitor/demonitor, exit signals. The
semantics are Erlang's:

- An exit signal with reason ``normal`` is ignored by a linked process that does not trap
  exits; any other reason kills it with that reason; ``kill`` (sent with ``exit/2``) kills
  even a trapping process, and the process then exits with ``killed``.
- With ``trap_exit`` set, exit signals (other than an untrappable ``kill``) become
  ``('EXIT', From, Reason)`` messages.
- When a process ends, every linked process gets an exit signal carrying its reason and
  every monitor fires ``('DOWN', Ref, 'process', Object, Reason)``.
- Killing is done by cancelling the task; a process ends itself with :class:`Exit`, a
  ``BaseException``, so ``except Exception`` in user code cannot swallow either.

Exit reasons are Erlang terms, never strings. A Python exception escaping a process body
becomes the reason ``{python_error, <<"Type">>, <<"message">>}`` and is logged with its
traceback as a crash report (like ``proc_lib``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import traceback
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom, Pid, Reference

from ..errors import ErlangError, NotStarted

if TYPE_CHECKING:  # annotations only: the processes user code sees belong to a full Node
    from ..node import Node

__all__ = [
    "set_call_impl",
    "Process",
    "ReceiveTimeout",
    "Exit",
    "NORMAL",
    "KILL",
    "KILLED",
    "exception_reason",
]

log = bounded_logger(logging.getLogger("pynode.process"))

NORMAL = Atom("normal")
KILL = Atom("kill")
KILLED = Atom("killed")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")
EXIT_TAG = Atom("EXIT")
DOWN_TAG = Atom("DOWN")
PROCESS = Atom("process")


#: ``gen_server:call`` for :meth:`Process.call`: set by :mod:`pynode.otp.gen_server`
CallImpl = Callable[["Process", Any, Any, "float | None"], Awaitable[Any]]
_call_impl: CallImpl | None = None


def set_call_impl(fn: CallImpl) -> None:
    """Plug in ``gen_server:call`` (the OTP layer does it when it is imported)."""
    global _call_impl
    _call_impl = fn


class Exit(BaseException):
    """Raise ``Exit(reason)`` inside a process to end it with ``reason`` (``exit/1``).

    A ``BaseException`` so that ``except Exception`` cannot swallow it."""

    def __init__(self, reason: Any = NORMAL) -> None:
        super().__init__(reason)
        self.reason = reason


class ReceiveTimeout(TimeoutError):
    """``receive(timeout=...)`` found no matching message in time (Erlang's ``after``)."""


#: what the timer of :meth:`Process.receive` wakes the waiting future with
_TIMED_OUT = object()


def _time_out(w: "asyncio.Future[Any]") -> None:
    if not w.done():
        w.set_result(_TIMED_OUT)


def exception_reason(exc: BaseException) -> Any:
    """The Erlang exit reason for a Python exception that ended a process."""
    if isinstance(exc, Exit):
        return exc.reason
    if isinstance(exc, ErlangError):
        return exc.reason
    # Binaries, not str: the same term locally as a peer decodes it off the wire.
    return (Atom("python_error"), type(exc).__name__.encode(), str(exc).encode())


class Process:
    """A process on a Python node. Create with :meth:`Node.spawn`, never directly."""

    def __init__(self, node: "Node", pid: Pid, *, trap_exit: bool = False) -> None:
        self.node = node
        self.pid = pid
        self.trap_exit = trap_exit
        self.task: asyncio.Task[Any] | None = None
        self.links: set[Pid] = set()
        #: monitors this process holds on others: ref -> target object
        self.monitors: dict[Reference, Any] = {}
        #: monitors others hold on this process: ref -> (watcher pid, object it named)
        self.monitored_by: dict[Reference, tuple[Pid, Any]] = {}
        #: unlink operations in flight (UNLINK_ID): peer pid -> id
        self.unlinking: dict[Pid, int] = {}
        self.aliases: set[Reference] = set()
        self.name: Atom | None = None
        self.exit_reason: Any = None
        self.dictionary: dict[Any, Any] = {}
        self._mailbox: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[Any] | None = None
        self._kill_reason: Any = None
        self._started = False
        #: set by the transport when this process sent on a busy link: its next
        #: :meth:`receive` first awaits it (OTP suspends such a sender; docs/WIRE.md §3.5)
        self.backpressure: Callable[[], Awaitable[None]] | None = None

    # -- identity -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Process {self.pid}{' ' + self.name if self.name else ''}>"

    @property
    def alive(self) -> bool:
        return self.exit_reason is None

    # -- mailbox --------------------------------------------------------------------------
    def deliver(self, msg: Any) -> None:
        """Put ``msg`` in the mailbox (called by the node)."""
        if self.exit_reason is not None:
            return
        self._mailbox.append(msg)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    @property
    def message_queue_len(self) -> int:
        return len(self._mailbox)

    async def receive(self, match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """Take the first message for which ``match`` is true (any message if ``None``).

        Messages that do not match stay in the mailbox, in order (selective receive).
        ``timeout`` is in seconds (``None`` waits forever, ``0`` only looks); when it
        runs out, :class:`ReceiveTimeout` is raised.

        The wait is one future, woken by :meth:`deliver` or by the timer, never
        ``asyncio.wait_for``: on Python 3.11 ``wait_for`` returns the inner result when a
        cancellation (an exit signal killing this process) lands in the same turn of the
        event loop as the message, and the kill is lost.
        """
        if self.backpressure is not None:
            wait, self.backpressure = self.backpressure, None
            await wait()
        box = self._mailbox
        scanned = 0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        timed_out = False
        while True:
            if self._kill_reason is not None:
                # An exit signal has ended this process; its cancellation was swallowed by
                # something the body awaited meanwhile. The kill wins over any message.
                raise asyncio.CancelledError()
            n = len(box)
            if match is None:
                if n:
                    return box.popleft()
            else:
                for i in range(scanned, n):
                    m = box[i]
                    if match(m):
                        del box[i]
                        return m
                scanned = n
            if timed_out or (deadline is not None and deadline <= loop.time()):
                raise ReceiveTimeout()
            w = self._waiter = loop.create_future()
            timer = None if deadline is None else loop.call_at(deadline, _time_out, w)
            try:
                timed_out = await w is _TIMED_OUT
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def flush(self) -> list[Any]:
        """Remove and return every message in the mailbox."""
        out = list(self._mailbox)
        self._mailbox.clear()
        return out

    # -- operations on others -------------------------------------------------------------
    def send(self, dest: Any, msg: Any) -> None:
        """``dest ! msg``: ``dest`` is a pid, a registered name, ``(name, node)`` or an alias."""
        self.node.send(dest, msg, sender=self.pid)

    def link(self, pid: Pid) -> None:
        self.node._link(self, pid)

    def unlink(self, pid: Pid) -> None:
        self.node._unlink(self, pid)

    def monitor(self, target: Any, *, alias: str | None = None) -> Reference:
        """Monitor ``target`` (a pid, a local name, or ``(name, node)``); returns the ref.

        ``alias="demonitor"`` also makes the ref an alias of this process that is
        deactivated together with the monitor, as ``monitor(process, T, [{alias, demonitor}])``.
        """
        return self.node._monitor(self, target, alias=alias)

    def demonitor(self, ref: Reference, *, flush: bool = False) -> None:
        self.node._demonitor(self, ref)
        if flush:
            self._drop(lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN_TAG and m[1] == ref)

    def alias(self) -> Reference:
        """A new alias (``alias/0``): messages sent to the ref reach this process until :meth:`unalias`."""
        return self.node._alias(self)

    def unalias(self, ref: Reference) -> None:
        self.node._unalias(self, ref)

    def exit(self, pid: Pid, reason: Any) -> None:
        """``exit(Pid, Reason)``: send an exit signal to ``pid``."""
        self.node.exit_signal(self.pid, pid, reason, link=False)

    def register(self, name: str) -> None:
        self.node.register(name, self)

    async def call(self, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """``gen_server:call(Dest, Request, Timeout)`` from this process (see
        :mod:`pynode.otp.gen_server`, which plugs itself in with :func:`set_call_impl`)."""
        if _call_impl is None:
            raise NotStarted("gen_server calls need pynode.otp (import pynode)")
        return await _call_impl(self, dest, request, timeout)

    def cast(self, dest: Any, request: Any) -> None:
        self.send(dest, (Atom("$gen_cast"), request))

    def _drop(self, pred: Callable[[Any], bool]) -> None:
        keep = [m for m in self._mailbox if not pred(m)]
        self._mailbox.clear()
        self._mailbox.extend(keep)

    # -- lifetime -------------------------------------------------------------------------
    def kill(self, reason: Any) -> None:
        """End this process with ``reason`` from outside (an exit signal arrived)."""
        if self.exit_reason is not None or self._kill_reason is not None:
            return
        self._kill_reason = reason
        # A task cancelled before its first step would never run _run's cleanup; such a
        # process sees _kill_reason when it starts and exits at once instead.
        if self._started and self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self, body: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        reason: Any = NORMAL
        self._started = True
        try:
            if self._kill_reason is None:
                await body(self, *args)
        except asyncio.CancelledError:
            reason = self._kill_reason if self._kill_reason is not None else KILLED
        except Exit as e:
            reason = e.reason
        except Exception as e:  # a crash: logged like a proc_lib crash report
            reason = exception_reason(e)
            log.error(
                "process %s%s crashed: %s\n%s",
                self.pid,
                f" ({self.name})" if self.name else "",
                reason,
                "".join(traceback.format_exception(e)),
            )
        finally:
            if self._kill_reason is not None:
                reason = self._kill_reason
            self.node._process_exited(self, reason)
