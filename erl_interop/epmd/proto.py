"""The EPMD wire format, sans-IO (docs/WIRE.md §1).

Theory of operation
-------------------
EPMD serves one request per TCP connection. A request is a packet: a 2-byte big-endian length,
then a body whose first byte names the request. Replies carry no length prefix; each reply kind
is delimited by its own layout (ALIVE2, PORT2) or by the server closing the connection (NAMES,
DUMP). After ALIVE2 the connection stays open for as long as the registration lives.

The parsers are machines with the vocabulary of the handshake and the connection
(:mod:`erl_interop._events`): ``receive_data(data)`` with the bytes read,
``receive_data(b"")`` when the other end closed, and ``next_event()``, which returns the one
message of the connection once it is complete (and the same message on every later call), or
:data:`NEED_DATA` until then. Each is an :class:`EpmdParser` of the message it yields.

Client side: ``encode_*_req`` build request packets; a response parser
(:class:`Alive2ResponseParser`, :class:`Port2ResponseParser`, :class:`NamesResponseParser`)
is given the reply bytes as they arrive. A NAMES reply is complete only at the end of input.

Server side: a :class:`RequestParser` is given the bytes of one connection and
``next_event()`` returns the one request once its packet is complete; ``encode_*_resp``
build the replies.

Every malformed input, and the end of input before a complete message, raises
:class:`~erl_interop.errors.EpmdError` (the other end's fault); a caller asking to encode
something EPMD cannot carry, or giving a parser bytes after the end of input, gets
:class:`~erl_interop.errors.EpmdLocalError`, a
:class:`~erl_interop.errors.LocalProtocolError`. Every size a peer claims is checked against
the bytes present and against the limits below (docs/WIRE.md §1.4) before it is used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from erl_interop._events import NEED_DATA, NeedData
from erl_interop.errors import EpmdError, EpmdLocalError

__all__ = [
    "EPMD_PORT",
    "ALIVE2_REQ",
    "ALIVE2_X_RESP",
    "ALIVE2_RESP",
    "PORT_PLEASE2_REQ",
    "PORT2_RESP",
    "NAMES_REQ",
    "DUMP_REQ",
    "KILL_REQ",
    "STOP_REQ",
    "NODE_TYPE_NORMAL",
    "NODE_TYPE_HIDDEN",
    "PROTOCOL_TCP_IPV4",
    "MAX_REQUEST_SIZE",
    "MAX_NAME_BYTES",
    "MAX_NAME_CHARS",
    "MAX_EXTRA_BYTES",
    "NodeInfo",
    "Alive2Request",
    "PortPlease2Request",
    "NamesRequest",
    "DumpRequest",
    "KillRequest",
    "StopRequest",
    "Request",
    "Alive2Response",
    "Port2Response",
    "NamesResponse",
    "NEED_DATA",
    "NeedData",
    "EpmdParser",
    "RequestParser",
    "Alive2ResponseParser",
    "Port2ResponseParser",
    "NamesResponseParser",
    "encode_alive2_req",
    "encode_port_please2_req",
    "encode_names_req",
    "encode_dump_req",
    "encode_kill_req",
    "encode_stop_req",
    "encode_alive2_resp",
    "encode_port2_resp",
    "encode_names_resp",
    "encode_dump_resp",
    "parse_names_text",
]

# -- constants (docs/WIRE.md §1.2) --------------------------------------------------------------

EPMD_PORT = 4369
"""Default EPMD port (docs/WIRE.md §1.1); ``ERL_EPMD_PORT`` overrides it."""

ALIVE2_REQ = 120
ALIVE2_X_RESP = 118  # creation u32; OTP 25 sends it when HighestVer >= 6 [V]
ALIVE2_RESP = 121  # creation u16; sent when HighestVer < 6 [V]
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119
NAMES_REQ = 110
DUMP_REQ = 100
KILL_REQ = 107
STOP_REQ = 115

NODE_TYPE_NORMAL = 77  # 'M'
NODE_TYPE_HIDDEN = 72  # 'H'
PROTOCOL_TCP_IPV4 = 0

# Limits, each the one OTP 25's epmd applies (erts/epmd/src/epmd_int.h, epmd_srv.c), checked
# against a live epmd 25.2: a body of 3057 bytes is read, 3058 is "invalid packet size"
# (docs/WIRE.md §1.4).
MAX_REQUEST_SIZE = 3057
"""Largest request body epmd reads (its INBUF_SIZE is 3060, the 2-byte header included)."""
MAX_NAME_BYTES = 1020
"""MAXSYMLEN: 255 UTF-8 characters of at most 4 bytes each."""
MAX_NAME_CHARS = 255
"""An alive name is at most 255 characters (epmd's verify_utf8 check)."""
MAX_EXTRA_BYTES = 1020
"""epmd refuses an ALIVE2 whose Extra field is longer than MAXSYMLEN."""
MAX_NAMES_REPLY = 4 * 1024 * 1024
"""Bound on a buffered NAMES/DUMP reply: room for thousands of nodes, never unbounded memory."""

_ALIVE2_HEAD = struct.Struct(">BHBBHHH")  # tag, port, type, proto, high, low, nlen
_PORT2_HEAD = struct.Struct(">BBHBBHHH")  # tag, result, port, type, proto, high, low, nlen


# -- values and events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node registers with EPMD, and what PORT_PLEASE2 answers about it.

    ``name`` is the alive part only (``"py"``, never ``"py@host"``).
    """

    name: str
    port: int
    node_type: int = NODE_TYPE_NORMAL
    protocol: int = PROTOCOL_TCP_IPV4
    high: int = 6
    low: int = 5
    extra: bytes = b""


@dataclass(frozen=True, slots=True)
class Alive2Request:
    """ALIVE2_REQ. When ``refusal`` is set the packet was well formed but epmd answers it with
    result 1 (name too long or not UTF-8, Extra too long); ``node.name`` is then a best-effort
    decoding for logs."""

    node: NodeInfo
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class PortPlease2Request:
    name: str


@dataclass(frozen=True, slots=True)
class NamesRequest:
    pass


@dataclass(frozen=True, slots=True)
class DumpRequest:
    pass


@dataclass(frozen=True, slots=True)
class KillRequest:
    pass


@dataclass(frozen=True, slots=True)
class StopRequest:
    name: str


Request = Alive2Request | PortPlease2Request | NamesRequest | DumpRequest | KillRequest | StopRequest


@dataclass(frozen=True, slots=True)
class Alive2Response:
    """ALIVE2_X_RESP (``extended``, 32-bit creation) or ALIVE2_RESP (16-bit creation).
    ``result`` 0 is success; anything else is a refusal (a duplicate name gives 1)."""

    result: int
    creation: int
    extended: bool = True

    @property
    def ok(self) -> bool:
        return self.result == 0


@dataclass(frozen=True, slots=True)
class Port2Response:
    """PORT2_RESP: ``node`` is ``None`` when ``result`` is non-zero (name not registered)."""

    result: int
    node: NodeInfo | None


@dataclass(frozen=True, slots=True)
class NamesResponse:
    """NAMES reply: the port epmd listens on and ``(name, port)`` for each registered node."""

    epmd_port: int
    nodes: tuple[tuple[str, int], ...] = field(default_factory=tuple)


# -- encoders (client side) ---------------------------------------------------------------------


def _packet(body: bytes) -> bytes:
    if len(body) > MAX_REQUEST_SIZE:
        raise EpmdLocalError(f"EPMD request of {len(body)} bytes exceeds epmd's limit of {MAX_REQUEST_SIZE}")
    return struct.pack(">H", len(body)) + body


def _check_name(name: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise EpmdLocalError(f"node alive name must be a non-empty str, got {name!r}")
    if "@" in name or "\x00" in name:
        raise EpmdLocalError(f"give EPMD the alive part only, without '@' or NUL: {name!r}")
    raw = name.encode("utf-8")
    if len(name) > MAX_NAME_CHARS or len(raw) > MAX_NAME_BYTES:
        raise EpmdLocalError(f"node alive name longer than {MAX_NAME_CHARS} characters: {name[:40]!r}...")
    return raw


def _check_u16(what: str, value: int) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise EpmdLocalError(f"{what} must be an integer in 0..65535, got {value!r}")
    return value


def _check_u8(what: str, value: int) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise EpmdLocalError(f"{what} must be an integer in 0..255, got {value!r}")
    return value


def encode_alive2_req(node: NodeInfo) -> bytes:
    """ALIVE2_REQ packet (length prefix included) registering ``node``."""
    raw = _check_name(node.name)
    extra = bytes(node.extra)
    if len(extra) > MAX_EXTRA_BYTES:
        raise EpmdLocalError(f"Extra of {len(extra)} bytes exceeds epmd's limit of {MAX_EXTRA_BYTES}")
    head = _ALIVE2_HEAD.pack(
        ALIVE2_REQ,
        _check_u16("port", node.port),
        _check_u8("node_type", node.node_type),
        _check_u8("protocol", node.protocol),
        _check_u16("high", node.high),
        _check_u16("low", node.low),
        len(raw),
    )
    return _packet(head + raw + struct.pack(">H", len(extra)) + extra)


def encode_port_please2_req(name: str) -> bytes:
    """PORT_PLEASE2_REQ packet asking for the node whose alive name is ``name``."""
    return _packet(bytes([PORT_PLEASE2_REQ]) + _check_name(name))


def encode_names_req() -> bytes:
    return _packet(bytes([NAMES_REQ]))


def encode_dump_req() -> bytes:
    return _packet(bytes([DUMP_REQ]))


def encode_kill_req() -> bytes:
    return _packet(bytes([KILL_REQ]))


def encode_stop_req(name: str) -> bytes:
    return _packet(bytes([STOP_REQ]) + _check_name(name))


# -- encoders (server side) ---------------------------------------------------------------------


def encode_alive2_resp(result: int, creation: int, *, extended: bool) -> bytes:
    """ALIVE2_X_RESP (``extended``: u32 creation) or ALIVE2_RESP (u16 creation)."""
    if extended:
        return struct.pack(">BBI", ALIVE2_X_RESP, result, creation & 0xFFFFFFFF)
    return struct.pack(">BBH", ALIVE2_RESP, result, creation & 0xFFFF)


def encode_port2_resp(node: NodeInfo | None) -> bytes:
    """PORT2_RESP: the node's registration, or ``119, 1`` when it is not registered."""
    if node is None:
        return bytes([PORT2_RESP, 1])
    raw = node.name.encode("utf-8")
    head = _PORT2_HEAD.pack(PORT2_RESP, 0, node.port, node.node_type, node.protocol, node.high, node.low, len(raw))
    return head + raw + struct.pack(">H", len(node.extra)) + node.extra


def encode_names_resp(epmd_port: int, nodes: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> bytes:
    """NAMES reply: u32 epmd port, then ``name <alive> at port <n>\\n`` per node."""
    lines = "".join(f"name {name} at port {port}\n" for name, port in nodes)
    return struct.pack(">I", epmd_port) + lines.encode("utf-8")


def encode_dump_resp(
    epmd_port: int,
    active: list[tuple[str, int, int]],
    unused: list[tuple[str, int, int]],
) -> bytes:
    """DUMP reply as epmd writes it: u32 port, then NUL-terminated lines for the registered
    (``active``) and remembered-but-unregistered (``unused``) names, each ``(name, port, fd)``."""
    out = [struct.pack(">I", epmd_port)]
    for name, port, fd in active:
        out.append(f"active name     <{name}> at port {port}, fd = {fd}\n\x00".encode("utf-8"))
    for name, port, fd in unused:
        out.append(f"old/unused name <{name}>, port = {port}, fd = {fd} \n\x00".encode("utf-8"))
    return b"".join(out)


# -- the parsers' common machine ---------------------------------------------------------------


E = TypeVar("E")


class EpmdParser(Generic[E]):
    """One EPMD connection's single message (a request, or a reply), parsed as it arrives.

    ``receive_data(data)`` with the bytes read, ``receive_data(b"")`` when the other end
    closed; ``next_event()`` returns the message once it is complete, the same message on
    every later call, and :data:`NEED_DATA` until then. It raises
    :class:`~erl_interop.errors.EpmdError` on malformed input and when the input ended
    before the message did; ``receive_data`` after the end of input raises
    :class:`~erl_interop.errors.EpmdLocalError`.

    Subclasses implement ``_parse(buf, eof) -> (message, bytes used) | None``.
    """

    __slots__ = ("_buf", "_eof", "_event", "_used")
    _what: ClassVar[str] = "EPMD message"

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._event: E | None = None
        self._used = 0

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the other end; ``b""`` means it closed (end of input)."""
        if self._eof:
            raise EpmdLocalError("receive_data after the end of input")
        if not data:
            self._eof = True
            return
        self._accept(data)

    def _accept(self, data: bytes) -> None:
        self._buf += data
        if self._event is None and len(self._buf) > MAX_NAMES_REPLY:
            raise EpmdError(f"{self._what} larger than {MAX_NAMES_REPLY} bytes")

    @property
    def unused_data(self) -> bytes:
        """Bytes received past the end of the complete message."""
        return bytes(self._buf[self._used :]) if self._event is not None else b""

    def next_event(self) -> E | NeedData:
        """The message, or :data:`NEED_DATA`. Raises :class:`EpmdError` (see the class)."""
        if self._event is not None:
            return self._event
        parsed = self._parse(bytes(self._buf), self._eof)
        if parsed is None:
            if self._eof:
                raise EpmdError(f"connection closed after {len(self._buf)} bytes of an incomplete {self._what}")
            return NEED_DATA
        self._event, self._used = parsed
        return parsed[0]

    def _parse(self, buf: bytes, eof: bool) -> tuple[E, int] | None:  # pragma: no cover
        raise NotImplementedError


# -- request parsing (server side) --------------------------------------------------------------


def _decode_name(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EpmdError(f"{what}: node name is not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _parse_alive2(body: bytes) -> Alive2Request:
    # epmd_srv.c: "bsize <= 13" is too small (at least one byte past the fixed fields).
    if len(body) <= 13:
        raise EpmdError(f"ALIVE2_REQ too short: {len(body)} bytes, need more than 13")
    _tag, port, node_type, protocol, high, low, nlen = _ALIVE2_HEAD.unpack_from(body, 0)
    if 13 + nlen > len(body):
        raise EpmdError(f"ALIVE2_REQ name length {nlen} overruns the {len(body)}-byte packet")
    raw_name = body[11 : 11 + nlen]
    (elen,) = struct.unpack_from(">H", body, 11 + nlen)
    if 13 + nlen + elen > len(body):
        raise EpmdError(f"ALIVE2_REQ extra length {elen} overruns the {len(body)}-byte packet")
    if b"\x00" in raw_name:
        raise EpmdError("ALIVE2_REQ node name contains a NUL byte")
    extra = body[13 + nlen : 13 + nlen + elen]
    refusal: str | None = None
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        name = raw_name.decode("utf-8", "replace")
        refusal = "node name is not valid UTF-8"
    if refusal is None:
        if not name:
            refusal = "empty node name"
        elif nlen > MAX_NAME_BYTES or len(name) > MAX_NAME_CHARS:
            refusal = f"node name longer than {MAX_NAME_CHARS} characters"
        elif elen > MAX_EXTRA_BYTES:
            refusal = f"extra data too long ({elen} bytes, limit {MAX_EXTRA_BYTES})"
    return Alive2Request(NodeInfo(name, port, node_type, protocol, high, low, bytes(extra)), refusal)


def _parse_port_please2(body: bytes) -> PortPlease2Request:
    raw = body[1:]
    if raw.endswith(b"\x00"):  # epmd tolerates one C-string terminator
        raw = raw[:-1]
    if not raw:
        raise EpmdError("PORT_PLEASE2_REQ without a node name")
    if b"\x00" in raw:
        raise EpmdError("PORT_PLEASE2_REQ node name contains a NUL byte")
    name = _decode_name(raw, "PORT_PLEASE2_REQ")
    if len(name) > MAX_NAME_CHARS:
        raise EpmdError(f"PORT_PLEASE2_REQ node name longer than {MAX_NAME_CHARS} characters")
    return PortPlease2Request(name)


def _parse_request_body(body: bytes) -> Request:
    tag = body[0]
    if tag == ALIVE2_REQ:
        return _parse_alive2(body)
    if tag == PORT_PLEASE2_REQ:
        return _parse_port_please2(body)
    if tag == NAMES_REQ:
        return NamesRequest()
    if tag == DUMP_REQ:
        return DumpRequest()
    if tag == KILL_REQ:
        return KillRequest()
    if tag == STOP_REQ:
        # epmd reads the name as a C string: up to the first NUL.
        return StopRequest(body[1:].split(b"\x00", 1)[0].decode("utf-8", "replace"))
    raise EpmdError(f"unknown EPMD request type {tag} ({bytes([tag])!r})")


class RequestParser(EpmdParser[Request]):
    """Parses the single request a client sends on one EPMD connection.

    ``next_event() -> Request | NEED_DATA``. As OTP's epmd does, bytes beyond the announced
    packet are an error, whether they come with it or after it.
    """

    __slots__ = ()
    _what = "EPMD request"

    def _accept(self, data: bytes) -> None:
        if self._event is not None:
            raise EpmdError(f"{len(data)} bytes after the complete request")
        self._buf += data
        if len(self._buf) > 2 + MAX_REQUEST_SIZE:
            # The length is checked in _parse; this only stops a peer from growing the buffer.
            del self._buf[3 + MAX_REQUEST_SIZE :]

    def _parse(self, buf: bytes, eof: bool) -> tuple[Request, int] | None:
        if len(buf) < 2:
            return None
        (size,) = struct.unpack_from(">H", buf, 0)
        if size < 1 or size > MAX_REQUEST_SIZE:
            raise EpmdError(f"invalid EPMD packet size {size} (must be 1..{MAX_REQUEST_SIZE})")
        if len(buf) > 2 + size:
            raise EpmdError(f"got {len(buf) - 2} bytes in a packet announced as {size}")
        if len(buf) < 2 + size:
            return None
        return _parse_request_body(buf[2:]), len(buf)


# -- response parsing (client side) -------------------------------------------------------------


class Alive2ResponseParser(EpmdParser[Alive2Response]):
    """Parses ALIVE2_X_RESP / ALIVE2_RESP. ``next_event() -> Alive2Response | NEED_DATA``."""

    __slots__ = ()
    _what = "ALIVE2 response"

    def _parse(self, buf: bytes, eof: bool) -> tuple[Alive2Response, int] | None:
        if not buf:
            return None
        if buf[0] == ALIVE2_X_RESP:
            if len(buf) < 6:
                return None
            _, result, creation = struct.unpack_from(">BBI", buf, 0)
            return Alive2Response(result, creation, True), 6
        if buf[0] == ALIVE2_RESP:
            if len(buf) < 4:
                return None
            _, result, creation = struct.unpack_from(">BBH", buf, 0)
            return Alive2Response(result, creation, False), 4
        raise EpmdError(f"expected ALIVE2_X_RESP (118) or ALIVE2_RESP (121), got tag {buf[0]}")


class Port2ResponseParser(EpmdParser[Port2Response]):
    """Parses PORT2_RESP. ``next_event() -> Port2Response | NEED_DATA``."""

    __slots__ = ()
    _what = "PORT2 response"

    def _parse(self, buf: bytes, eof: bool) -> tuple[Port2Response, int] | None:
        if not buf:
            return None
        if buf[0] != PORT2_RESP:
            raise EpmdError(f"expected PORT2_RESP (119), got tag {buf[0]}")
        if len(buf) < 2:
            return None
        if buf[1] != 0:
            return Port2Response(buf[1], None), 2
        if len(buf) < _PORT2_HEAD.size:
            return None
        _, _, port, node_type, protocol, high, low, nlen = _PORT2_HEAD.unpack_from(buf, 0)
        end_name = _PORT2_HEAD.size + nlen
        if len(buf) < end_name + 2:
            return None
        (elen,) = struct.unpack_from(">H", buf, end_name)
        end = end_name + 2 + elen
        if len(buf) < end:
            return None
        name = _decode_name(buf[_PORT2_HEAD.size : end_name], "PORT2_RESP")
        extra = buf[end_name + 2 : end]
        return Port2Response(0, NodeInfo(name, port, node_type, protocol, high, low, extra)), end


def parse_names_text(text: bytes) -> tuple[tuple[str, int], ...]:
    """Parse the text part of a NAMES reply: ``name <alive> at port <n>\\n`` lines."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EpmdError(f"NAMES reply is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if decoded and not decoded.endswith("\n"):
        raise EpmdError(f"NAMES reply ends in a truncated line: {decoded.rsplit(chr(10), 1)[-1][:60]!r}")
    nodes = []
    for line in decoded.splitlines():
        head, sep, port_text = line.rpartition(" at port ")
        if not sep or not head.startswith("name ") or not port_text.isdigit() or len(port_text) > 5:
            raise EpmdError(f"malformed NAMES line: {line[:80]!r}")
        port = int(port_text)
        if port > 0xFFFF:
            raise EpmdError(f"port out of range in NAMES line: {line[:80]!r}")
        nodes.append((head[5:], port))
    return tuple(nodes)


class NamesResponseParser(EpmdParser[NamesResponse]):
    """Parses the NAMES reply, complete only once the server has closed
    (``receive_data(b"")``). ``next_event() -> NamesResponse | NEED_DATA``."""

    __slots__ = ()
    _what = "NAMES response"

    def _parse(self, buf: bytes, eof: bool) -> tuple[NamesResponse, int] | None:
        if not eof or len(buf) < 4:
            return None
        (epmd_port,) = struct.unpack_from(">I", buf, 0)
        return NamesResponse(epmd_port, parse_names_text(buf[4:])), len(buf)
