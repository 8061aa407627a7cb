"""pynode: a Python node in an Erlang/Elixir cluster.

The package re-exports the public API of its rooms (it may import all of them); each room's
opening docstring says what it owns and what it may import, and tests/test_layers.py checks
that dependencies point one way: ``erl_interop`` <- ``errors``/``config`` <- ``core`` <-
``dist`` <- ``otp`` <- ``registry`` <- ``discovery``/``jobs`` <- ``node`` <- ``cli``.

Start one with ``python -m pynode --sname n1@localhost --cookie test``, or from code::

    async with Node("py@localhost", cookie="test") as node:
        await MyServer.start(node, name="my_server")
"""

from erl_interop.terms import Atom, BitBinary, Export, Fun, ImproperList, Map, Pid, Port, Reference

from .errors import BadArg, CallError, ErlangError, NotStarted, PynodeError, RpcError, Throw
from .otp.gen_server import NOREPLY, GenServer, Stop, call, cast, reply
from .node import Node
from .core import Exit, Process, ReceiveTimeout
from .otp.rpc import erpc_call, rpc_call

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
