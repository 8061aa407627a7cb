"""``net_kernel`` (``Node.ping`` answers ``pong``) and the ``pynode`` info GenServer, which
every node runs (started by :meth:`pynode.node.Node.start`). Imports the core and
:mod:`pynode.otp.gen_server` only; what the node's higher services (registry, jobs) add to
the info map comes from the callable the composition root starts the server with."""

from __future__ import annotations

import time
from typing import Any, Callable

from erl_interop.terms import Atom, Pid

from ..core import Runtime
from .gen_server import GenServer

__all__ = ["NetKernel", "PynodeInfo", "node_info"]

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
