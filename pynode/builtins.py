"""Processes every pynode runs: ``net_kernel``, ``rex`` and the ``pynode`` GenServer."""

from __future__ import annotations

from typing import Any

from erl_interop.terms import Atom

from .genserver import GenServer
from .discovery import Discovery
from .registry import Registry, RegistryAPI
from .rpc import rex_server

__all__ = ["start", "NetKernel", "PynodeInfo", "node_info"]

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


async def start(node: Any) -> None:
    await NetKernel.start(node, name="net_kernel")
    node.spawn(rex_server, name="rex")
    await PynodeInfo.start(node, name="pynode")
    server = await Registry.start_for(node)
    node.registry = RegistryAPI(node, server)
    node.discovery = Discovery.start_for(node)
    if node.config.get("host_jobs", True):
        from .jobs import start_host

        await start_host(node)
    node.expose("pynode", "info", lambda: node_info(node))
