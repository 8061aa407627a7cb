"""``net_kernel`` (``Node.ping`` answers ``pong``) and the ``pynode`` info GenServer, which
every node runs (started by :meth:`pynode.node.Node.start`). Imports the core and
:mod:`pynode.otp.gen_server` only; the node's services (registry, jobs) are read off the
node object it is given."""

from __future__ import annotations

from typing import Any

from erl_interop.terms import Atom

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


def node_info(node: Any) -> dict[Atom, Any]:
    """The map ``GenServer.call({:pynode, node}, :info)`` and ``pynode:info()`` answer."""
    jobs = getattr(node, "jobs", None)
    return {
        Atom("node"): node.name,
        Atom("connected_nodes"): list(node.connected_nodes),
        Atom("process_count"): len(node.processes),
        Atom("jobs"): list(jobs.list()) if jobs is not None else [],
        Atom("members"): node.registry.members() if node.registry is not None else [node.name],
        Atom("registered"): sorted(node.registered),
        Atom("creation"): node.creation,
        Atom("runtime"): Atom("python"),
        Atom("uptime_ms"): int((__import__("time").time() - node.started_at) * 1000),
    }


class PynodeInfo(GenServer):
    """The registered ``pynode`` server."""

    async def handle_call(self, request: Any, from_: Any) -> Any:
        if request == Atom("info"):
            return node_info(self.node)
        if request == Atom("ping"):
            return Atom("pong")
        return (Atom("error"), (Atom("unknown_call"), request))

    async def handle_cast(self, request: Any) -> None:
        pass
