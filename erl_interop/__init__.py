"""erl_interop: the Erlang distribution wire, with no policy in it.

External Term Format codec and term types, EPMD client and server, the distribution
handshake, connected-phase framing and control messages. The protocol core is sans-IO;
asyncio drivers live in :mod:`erl_interop.aio` and :mod:`erl_interop.epmd`.
"""

from . import control
from .codec import decode, decode_term, encode, encode_term
from .connection import NEED_DATA, TICK, BadMessage, Connection, ConnectionClosed, TickTimer
from .handshake import DefaultPolicy, Handshake, HandshakeComplete, HandshakePolicy
from .errors import (
    DecodeError,
    DistProtocolError,
    EncodeError,
    EpmdError,
    ErlInteropError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
)
from .flags import DEFAULT_FLAGS, MANDATORY_25, DistFlags
from .terms import Atom, BitBinary, Export, Fun, ImproperList, Map, Pid, Port, Reference, exact_equal

__all__ = [
    "control",
    "Connection",
    "TickTimer",
    "TICK",
    "NEED_DATA",
    "BadMessage",
    "ConnectionClosed",
    "Handshake",
    "HandshakeComplete",
    "HandshakePolicy",
    "DefaultPolicy",
    "encode",
    "decode",
    "encode_term",
    "decode_term",
    "Atom",
    "BitBinary",
    "Export",
    "Fun",
    "ImproperList",
    "Map",
    "Pid",
    "Port",
    "Reference",
    "exact_equal",
    "DistFlags",
    "DEFAULT_FLAGS",
    "MANDATORY_25",
    "ErlInteropError",
    "DecodeError",
    "EncodeError",
    "ProtocolError",
    "LocalProtocolError",
    "EpmdError",
    "HandshakeError",
    "DistProtocolError",
]
