"""``net_kernel`` (``Node.ping`` answers ``pong``), the ``pynode`` info GenServer, which
every node runs (started by :meth:`pynode.node.Node.start`), and the node's halt: what
``init:stop/0,1`` and ``erlang:halt/0,1,2`` from a peer (``erl_call -q``) and a signal to
``python -m pynode`` do (:func:`halt`, :func:`halted`). Imports the core and
:mod:`pynode.otp.gen_server` only; what the node's higher services (registry, jobs) add to
the info map comes from the callable the composition root starts the server with."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any, Callable, Protocol

from erl_interop.terms import Atom, Pid

from ..core import Runtime
from .gen_server import GenServer

__all__ = ["NetKernel", "PynodeInfo", "node_info", "halt", "halted"]

log = logging.getLogger("pynode.node")


IS_AUTH = Atom("is_auth")
YES = Atom("yes")


class NetKernel(GenServer):
    """Answers ``net_adm:ping``/``Node.ping``: ``{is_auth, Node}`` -> ``yes``."""

    async def handle_call(self, request: Any, from_: Any) -> Any:
        if type(request) is tuple and request[:1] == (IS_AUTH,):
            return YES
        return (Atom("error"), Atom("not_supported"))

    async def handle_cast(self, request: Any) -> None:
        pass

    async def handle_info(self, msg: Any) -> None:
        pass


def node_info(node: Runtime, *, members: list[Atom] | None = None,
              jobs: list[tuple[Any, Atom, Pid]] | None = None) -> dict[Atom, Any]:
    """The map ``GenServer.call({:pynode, node}, :info)`` and ``pynode:info()`` answer;
    ``members`` (default: this node alone) and ``jobs`` come from the registry and the job host."""
    return {
        Atom("node"): node.name,
        Atom("connected_nodes"): list(node.connected_nodes),
        Atom("process_count"): len(node.processes),
        Atom("jobs"): list(jobs or []),
        Atom("members"): list(members) if members is not None else [node.name],
        Atom("registered"): sorted(node.registered),
        Atom("creation"): node.creation,
        Atom("runtime"): Atom("python"),
        Atom("uptime_ms"): int((time.time() - node.started_at) * 1000),
    }


class PynodeInfo(GenServer):
    """The registered ``pynode`` server. Start it with the callable that makes the info map
    (``PynodeInfo.start(node, info, name="pynode")``)."""

    info: Callable[[], dict[Atom, Any]]

    async def init(self, *args: Any) -> None:
        node = self.node
        self.info = args[0] if args else (lambda: node_info(node))

    async def handle_call(self, request: Any, from_: Any) -> Any:
        if request == Atom("info"):
            return self.info()
        if request == Atom("ping"):
            return Atom("pong")
        return (Atom("error"), (Atom("unknown_call"), request))

    async def handle_cast(self, request: Any) -> None:
        pass


# -- halting the node -------------------------------------------------------------------------


class Stoppable(Protocol):
    """A node that can be stopped (:class:`pynode.node.Node`)."""

    @property
    def name(self) -> str: ...

    async def stop(self) -> None: ...


#: per node: the future :func:`halted` returns, and the task of a halt in progress
_halted: "weakref.WeakKeyDictionary[Any, asyncio.Future[int]]" = weakref.WeakKeyDictionary()
_halting: "weakref.WeakKeyDictionary[Any, asyncio.Task[None]]" = weakref.WeakKeyDictionary()


def halted(node: Stoppable) -> "asyncio.Future[int]":
    """A future that resolves with the exit status once :func:`halt` has stopped ``node``
    (``python -m pynode`` waits on it, then exits with that status)."""
    fut = _halted.get(node)
    if fut is None:
        fut = _halted[node] = asyncio.get_running_loop().create_future()
    return fut


def halt(node: Stoppable, status: int = 0) -> None:
    """Stop ``node`` gracefully, as ``init:stop(Status)`` stops a BEAM node: ``Node.stop``
    (stop hooks, then the connections, then the processes), then :func:`halted` resolves
    with ``status``. Returns at once; a second halt while one runs does nothing.

    The stop runs in a task of its own, not one of the node's (``Node.stop`` cancels
    those), and not in the asking process (which the stop kills)."""
    if node in _halting:
        return
    done = halted(node)
    log.info("%s shutting down", node.name)

    async def stop() -> None:
        try:
            await node.stop()
        except Exception:
            log.exception("%s: stopping failed", node.name)
        finally:
            if not done.done():
                done.set_result(status)

    _halting[node] = asyncio.get_running_loop().create_task(stop(), name="pynode halt")
