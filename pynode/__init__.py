"""pynode: a Python node in an Erlang/Elixir cluster.

Start one with ``python -m pynode --sname n1@localhost --cookie test``, or from code::

    async with Node("py@localhost", cookie="test") as node:
        await MyServer.start(node, name="my_server")
"""

from erl_interop.terms import Atom, BitBinary, Export, Fun, ImproperList, Map, Pid, Port, Reference

from .errors import BadArg, CallError, ErlangError, NotStarted, PynodeError, RpcError, Throw
from .genserver import NOREPLY, GenServer, Stop, call, cast, reply
from .node import Node
from .process import Exit, Process, ReceiveTimeout
from .rpc import erpc_call, rpc_call

__all__ = [
    "Node",
    "Process",
    "GenServer",
    "NOREPLY",
    "Stop",
    "call",
    "cast",
    "reply",
    "erpc_call",
    "rpc_call",
    "Exit",
    "ReceiveTimeout",
    "CallError",
    "ErlangError",
    "Throw",
    "RpcError",
    "BadArg",
    "NotStarted",
    "PynodeError",
    "Atom",
    "Pid",
    "Reference",
    "Port",
    "Export",
    "Fun",
    "BitBinary",
    "ImproperList",
    "Map",
]
