"""EPMD, the Erlang port mapper (docs/WIRE.md §1): a sans-IO codec (:mod:`.proto`), an asyncio
client (:mod:`.client`) and an asyncio server (:mod:`.server`, ``python -m erl_interop.epmd``)."""

from __future__ import annotations

from .client import Registration, ensure_epmd, epmd_port_from_env, names, port_please, register
from .proto import (
    EPMD_PORT,
    NEED_DATA,
    NODE_TYPE_HIDDEN,
    NODE_TYPE_NORMAL,
    Alive2Request,
    Alive2Response,
    DumpRequest,
    EpmdParser,
    KillRequest,
    NamesRequest,
    NamesResponse,
    NodeInfo,
    Port2Response,
    PortPlease2Request,
    RequestParser,
    StopRequest,
)
from .server import EpmdServer

__all__ = [
    "EPMD_PORT",
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "NodeInfo",
    "Registration",
    "register",
    "port_please",
    "names",
    "ensure_epmd",
    "epmd_port_from_env",
    "EpmdServer",
    "NEED_DATA",
    "EpmdParser",
    "RequestParser",
    "Alive2Request",
    "PortPlease2Request",
    "NamesRequest",
    "DumpRequest",
    "KillRequest",
    "StopRequest",
    "Alive2Response",
    "Port2Response",
    "NamesResponse",
]
