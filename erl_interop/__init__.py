"""erl_interop: the Erlang distribution wire, with no policy in it.

External Term Format codec and term types, EPMD client and server, the distribution
handshake, connected-phase framing and control messages. The protocol core is sans-IO;
asyncio drivers live in :mod:`erl_interop.aio` and :mod:`erl_interop.epmd`.

The three machines — the EPMD parsers, :class:`Handshake`, :class:`Connection` — share one
vocabulary (``receive_data(bytes)``, ``b""`` for end of input; ``next_event()`` returning an
event or the one :data:`NEED_DATA`) and one error taxonomy (:mod:`erl_interop.errors`:
:class:`ProtocolError`, the other end's fault; :class:`LocalProtocolError`, this side's).
The wire facts the code relies on are written down in ``docs/WIRE.md``, which comments cite
by section.

What it may import: the standard library, and nothing of :mod:`pynode` (the wire sits below
the runtime). Only the drivers — :mod:`erl_interop.aio`, :mod:`erl_interop.epmd.client` and
:mod:`erl_interop.epmd.server` — import :mod:`asyncio`; the rest is sans-IO.
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
    EpmdLocalError,
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
    "EpmdLocalError",
    "HandshakeError",
    "DistProtocolError",
]
