"""The connected phase of a distribution link, sans-IO (docs/WIRE.md §3).

Theory of operation
-------------------
A :class:`Connection` takes over from the handshake (``HandshakeComplete.flags`` and
``.trailing``) and turns bytes into events and control messages into bytes; it never touches
a socket or a clock. The driver feeds what it reads to :meth:`Connection.receive_data` and
calls :meth:`Connection.next_event` until it returns :data:`NEED_DATA`. Events are:

- a :class:`~erl_interop.control.ControlMessage` (``SendSender``, ``RegSend``, ...), with
  its payload decoded, for every complete message;
- :data:`TICK` for a zero-length packet (the peer is alive; nothing to answer);
- :class:`BadMessage` when one message cannot be understood (an undecodable term, a
  malformed control tuple, a tag OTP 25 does not use). The frame boundary is intact and
  no shared state was touched, so the link goes on; the node should log it;
- :class:`ConnectionClosed` once the driver reported EOF (``receive_data(b"")``) at a frame
  boundary.

A fault that corrupts the link's *state* is fatal: a frame larger than the limits, an
unknown body type, a malformed distribution header (the atom cache may now be wrong), a
reference to an empty cache slot, a fragment out of order. ``next_event`` raises
:class:`~erl_interop.errors.DistProtocolError`, and raises it again on every later call:
the driver must drop the connection.

Receiving. Packets are ``u32 length`` + body; length 0 is a tick. Bodies:

- ``112`` + control ETF (with 131) + [payload ETF (with 131)]: pass-through;
- ``131, 68`` + atom-cache section + control + [payload] (terms without 131): the normal
  header. New cache entries are stored in this direction's 2048-slot cache (segment × 256
  + internal index) and every ref of the header, new or old, resolves ``ATOM_CACHE_REF i``;
- ``131, 69`` SequenceId FragmentId + atom-cache section + first chunk, then ``131, 70``
  SequenceId FragmentId + chunk: a fragmented message, reassembled per SequenceId (several
  may interleave); FragmentId counts down and 1 is the last. The atom-cache section of the
  first fragment is applied when that fragment arrives, as the sender updated its cache
  when it encoded it; later messages may refer to those slots before the fragmented
  message completes.

All body formats are accepted whatever was negotiated. Terms are decoded in place, from
offsets into the received buffer; a payload's binaries are the only copies.

Sending. Without DIST_HDR_ATOM_CACHE and FRAGMENTS we send pass-through packets; with
either of them, OTP 25 accepts only the header format (docs/WIRE.md §3.2), so we send
``131, 68, 0`` (no cache refs) + terms without 131. We never fragment: the FRAGMENTS flag
lets a sender fragment, it does not oblige it to.

Ticks. :class:`TickTimer` is the accounting a driver needs, with time passed in: send
something after ``T/4`` of write silence, drop the link after ``T`` of read silence
(``net_ticktime``, docs/WIRE.md §3.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final, Iterable, Literal, NoReturn

from ._events import NEED_DATA, NeedData
from .bounded import bounded_repr
from .codec import _decode, _enc, decode_term  # _decode/_enc: see _message and _encode
from .control import _DECODERS, MISSING, ControlMessage, UnknownControl, from_terms
from .errors import DecodeError, DistProtocolError, EncodeError, LocalProtocolError
from .flags import DistFlags

__all__ = [
    "Connection",
    "TickTimer",
    "Tick",
    "TICK",
    "NeedData",
    "NEED_DATA",
    "BadMessage",
    "ConnectionClosed",
    "Event",
    "MAX_MESSAGE_SIZE",
    "MAX_FRAGMENTED_MESSAGES",
    "MAX_PENDING_FRAGMENT_BYTES",
    "ATOM_CACHE_SIZE",
]

# --- limits and constants -------------------------------------------------------------

#: Largest packet body, and largest reassembled fragmented message, we accept. OTP has no
#: such limit (it sends a message of any size: one frame of up to 4 GiB - 1 bytes, or
#: fragments without bound), but a peer could otherwise make us buffer without bound. 1 GiB
#: is above what a cluster sends in one message in practice (an 80 MiB binary between two
#: BEAM nodes is delivered; so it is here). A larger message drops that link, with a log
#: line naming the limit. Configurable (``Node(max_message_size=...)``; docs/WIRE.md §3.5).
MAX_MESSAGE_SIZE: Final = 1024 * 1024 * 1024

#: Fragmented messages that may be in flight at once. OTP fragments one message per sending
#: process at a time, so this is "processes of the peer sending large messages to us at the
#: same moment"; 4096 is generous and stops a peer from opening sequences without end.
MAX_FRAGMENTED_MESSAGES: Final = 4096

#: Bytes held in incomplete fragmented messages, all sequences together: two maximal
#: messages in flight. Each sequence is also capped by ``max_message_size``.
MAX_PENDING_FRAGMENT_BYTES: Final = 2 * MAX_MESSAGE_SIZE

#: Atom cache slots per connection per direction: 8 segments × 256 (docs/WIRE.md §3.3).
ATOM_CACHE_SIZE: Final = 2048

_PASS_THROUGH = 112  # 'p'
_VERSION = 131
_HEADER = 68  # normal distribution header
_FRAG_HEADER = 69  # first fragment
_FRAG_CONT = 70  # later fragments

_u32 = struct.Struct(">I")
_unpack_u32 = _u32.unpack_from
_pack_u32_into = _u32.pack_into
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_seq = struct.Struct(">QQ").unpack_from

_HDR_MODE = DistFlags.DIST_HDR_ATOM_CACHE | DistFlags.FRAGMENTS
_MAX_FRAME = (1 << 32) - 1


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """A zero-length packet: the peer is alive."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection at a frame boundary (EOF was reported)."""


@dataclass(frozen=True, slots=True)
class BadMessage:
    """One message could not be understood; the link itself is intact.

    ``error`` says why; ``data`` is the packet body (the reassembled message for fragments);
    ``control`` is the :class:`UnknownControl` when the tag was unknown.
    """

    error: DistProtocolError
    data: bytes
    control: UnknownControl | None = None


#: The only instances ever returned; compare with ``is``. (:data:`NEED_DATA` is the one
#: sentinel of all three machines, from :mod:`erl_interop._events`.)
TICK: Final = Tick()
_CLOSED: Final = ConnectionClosed()

Event = ControlMessage | Tick | NeedData | BadMessage | ConnectionClosed


class _Empty:
    __slots__ = ()


_EMPTY_SLOT: Final = _Empty()  # the cache may hold True/False/None (atoms true/false/nil)


class _Reassembly:
    """A fragmented message in progress."""

    __slots__ = ("refs", "next_id", "chunks", "size")

    def __init__(self, refs: list[Any] | None, next_id: int, chunk: bytes) -> None:
        self.refs = refs
        self.next_id = next_id
        self.chunks = [chunk]
        self.size = len(chunk)


# --- the connection -------------------------------------------------------------------


class Connection:
    """One distribution link after the handshake. See the module docstring.

    ``flags`` are the negotiated flags (``HandshakeComplete.flags``); ``initial`` the bytes
    the handshake read past its end (``HandshakeComplete.trailing``).

    Counters (plain ints, for statistics and tick accounting in the driver):
    ``bytes_received``, ``bytes_sent``, ``messages_received``, ``ticks_received``,
    ``packets_sent``.
    """

    __slots__ = (
        "flags",
        "header_mode",
        "max_message_size",
        "max_fragmented_messages",
        "max_pending_fragment_bytes",
        "bytes_received",
        "bytes_sent",
        "messages_received",
        "ticks_received",
        "packets_sent",
        "_buf",
        "_pos",
        "_chunks",
        "_chunks_len",
        "_eof",
        "_error",
        "_cache",
        "_frags",
        "_frag_bytes",
        "_utf8",
        "_frame_prefix",
    )

    def __init__(
        self,
        flags: DistFlags | int,
        *,
        initial: bytes = b"",
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_fragmented_messages: int = MAX_FRAGMENTED_MESSAGES,
        max_pending_fragment_bytes: int = MAX_PENDING_FRAGMENT_BYTES,
    ) -> None:
        self.flags = DistFlags(flags)
        #: True when we send ``131, 68, 0`` headers rather than pass-through packets.
        self.header_mode = bool(self.flags & _HDR_MODE)
        self.max_message_size = max_message_size
        self.max_fragmented_messages = max_fragmented_messages
        self.max_pending_fragment_bytes = max_pending_fragment_bytes
        self.bytes_received = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.ticks_received = 0
        self.packets_sent = 0
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunks_len = 0
        self._eof = False
        self._error: DistProtocolError | None = None
        self._cache: list[Any] = [_EMPTY_SLOT] * ATOM_CACHE_SIZE
        self._frags: dict[int, _Reassembly] = {}
        self._frag_bytes = 0
        self._utf8 = bool(self.flags & DistFlags.UTF8_ATOMS)
        # length placeholder + body start (docs/WIRE.md §3.2)
        self._frame_prefix = b"\0\0\0\0\x83D\x00" if self.header_mode else b"\0\0\0\0p\x83"
        if initial:
            self.receive_data(initial)

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed (EOF)."""
        if self._eof:
            raise LocalProtocolError("receive_data after EOF")
        if not data:
            self._eof = True
            return
        if type(data) is not bytes:
            data = bytes(data)
        self.bytes_received += len(data)
        if self._pos >= len(self._buf) and not self._chunks:
            self._buf = data
            self._pos = 0
        else:
            self._chunks.append(data)
            self._chunks_len += len(data)

    def _more(self, need: int) -> bool:
        """Make ``need`` bytes available from ``_pos`` in ``_buf`` if they have arrived.

        Chunks are joined only once the whole frame is there, so a large frame arriving in
        many reads is copied once, not once per read."""
        avail = len(self._buf) - self._pos
        if avail + self._chunks_len < need:
            if self._pos and avail < 65536:  # let go of consumed bytes while we wait
                self._buf = self._buf[self._pos :]
                self._pos = 0
            return False
        self._buf = b"".join((memoryview(self._buf)[self._pos :], *self._chunks))
        self._pos = 0
        self._chunks = []
        self._chunks_len = 0
        return True

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA`. Raises :class:`DistProtocolError` on a fatal
        fault (and on every call after it)."""
        if self._error is not None:
            raise self._error
        while True:
            buf = self._buf
            pos = self._pos
            if len(buf) - pos < 4 and not self._more(4):
                return self._starved()
            buf = self._buf
            pos = self._pos
            (n,) = _unpack_u32(buf, pos)
            if n == 0:
                self._pos = pos + 4
                self.ticks_received += 1
                return TICK
            if n > self.max_message_size:
                return self._fatal(f"packet of {n} bytes exceeds max_message_size ({self.max_message_size})")
            start = pos + 4
            end = start + n
            if end > len(buf):
                if not self._more(4 + n):
                    return self._starved()
                buf = self._buf
                start = 4
                end = start + n
            self._pos = end
            first = buf[start]
            if first == _PASS_THROUGH:
                return self._message(buf, start + 1, end, None, True, start)
            if first != _VERSION:
                return self._fatal(f"unknown packet body type {first} (expected 112 'p' or 131)")
            if n < 3:
                return self._fatal(f"packet of {n} bytes is too short for a distribution header")
            kind = buf[start + 1]
            if kind == _HEADER:
                refs, q = self._atom_cache(buf, start + 2, end)
                return self._message(buf, q, end, refs, False, start)
            if kind == _FRAG_HEADER or kind == _FRAG_CONT:
                ev = self._fragment(buf, start, end, kind)
                if ev is not None:
                    return ev
                continue
            return self._fatal(f"unknown distribution header type 131,{kind}")

    def _starved(self) -> Event:
        if not self._eof:
            return NEED_DATA
        left = len(self._buf) - self._pos + self._chunks_len
        if left:
            return self._fatal(f"connection closed in the middle of a packet ({left} bytes left over)")
        if self._frags:
            return self._fatal(f"connection closed with {len(self._frags)} fragmented message(s) incomplete")
        return _CLOSED

    def _fatal(self, text: str, cause: BaseException | None = None) -> NoReturn:
        err = DistProtocolError(text)
        err.__cause__ = cause
        self._error = err
        raise err

    def _message(self, data: bytes, q: int, end: int, refs: list[Any] | None, prefixed: bool, start: int) -> Event:
        """Decode control [+ payload] from ``data[q:end]``; never fatal."""
        # The codec's recursive core is called directly (decode_term is a thin wrapper over
        # it): these are the two calls per message on the hot path. The exceptions below are
        # the ones decode_term translates.
        try:
            if q >= end:
                raise DecodeError(q, "packet holds no control term")
            if prefixed:
                if data[q] != _VERSION:
                    raise DecodeError(q, "pass-through control term lacks the 131 version byte")
                q += 1
            control, q = _decode(data, q, 0, refs)
            if q < end:
                if prefixed:
                    if data[q] != _VERSION:
                        raise DecodeError(q, "pass-through payload term lacks the 131 version byte")
                    q += 1
                payload, q = _decode(data, q, 0, refs)
            else:
                payload = MISSING
            if q != end:
                raise DecodeError(q, "terms overrun the packet" if q > end else f"{end - q} bytes after the payload term")
            # from_terms, inlined
            dec = _DECODERS.get(control[0]) if type(control) is tuple and control and type(control[0]) is int else None
            msg = dec(control, payload) if dec is not None else from_terms(control, payload)
        except DecodeError as e:
            return self._bad(f"undecodable message: {e.message} (at packet offset {e.offset - start})", data, start, end, e)
        except (IndexError, struct.error) as e:
            return self._bad("undecodable message: a term runs past the end of the data", data, start, end, e)
        except RecursionError as e:
            return self._bad("undecodable message: terms nested too deeply", data, start, end, e)
        except DistProtocolError as e:
            return BadMessage(e, bytes(data[start:end]))
        if type(msg) is UnknownControl:
            err = DistProtocolError(f"unknown control message tag {bounded_repr(msg.tag, 40)} (not used by OTP 25): "
                                    f"{bounded_repr(control, 200)}")
            return BadMessage(err, bytes(data[start:end]), msg)
        self.messages_received += 1
        return msg

    @staticmethod
    def _bad(text: str, data: bytes, start: int, end: int, cause: BaseException) -> BadMessage:
        err = DistProtocolError(text)
        err.__cause__ = cause
        return BadMessage(err, bytes(data[start:end]))

    def _atom_cache(self, data: bytes, q: int, end: int) -> tuple[list[Any] | None, int]:
        """Read the atom-cache section at ``q``; update the cache; return (refs, end of section)."""
        if q >= end:
            return self._fatal("distribution header ends before NumberOfAtomCacheRefs")
        n = data[q]
        q += 1
        if n == 0:
            return None, q
        flags_end = q + (n >> 1) + 1
        if flags_end > end:
            return self._fatal(f"distribution header ends inside the flags of {n} atom cache refs")
        flags = data[q:flags_end]
        q = flags_end
        long_atoms = (flags[n >> 1] >> ((n & 1) << 2)) & 1
        cache = self._cache
        refs = []
        for i in range(n):
            nib = flags[i >> 1] >> ((i & 1) << 2)
            if q >= end:
                return self._fatal(f"distribution header ends inside atom cache ref {i}")
            idx = ((nib & 7) << 8) | data[q]
            q += 1
            if nib & 8:
                if long_atoms:
                    if q + 2 > end:
                        return self._fatal(f"distribution header ends inside atom cache ref {i}")
                    (ln,) = _unpack_u16(data, q)
                    q += 2
                else:
                    if q >= end:
                        return self._fatal(f"distribution header ends inside atom cache ref {i}")
                    ln = data[q]
                    q += 1
                if q + ln > end:
                    return self._fatal(f"atom cache ref {i} claims {ln} bytes past the end of the packet")
                atom = self._make_atom(data[q : q + ln])
                q += ln
                cache[idx] = atom
            else:
                atom = cache[idx]
                if atom is _EMPTY_SLOT:
                    return self._fatal(f"atom cache ref {i} points at empty cache slot {idx}")
            refs.append(atom)
        return refs, q

    def _make_atom(self, raw: bytes) -> Any:
        # Through the codec, so that true/false/nil map as everywhere else and atoms intern.
        n = len(raw)
        tag = 118 if self._utf8 else 100  # ATOM_UTF8_EXT / ATOM_EXT
        try:
            atom, _ = decode_term(bytes((tag, n >> 8, n & 255)) + raw)
        except DecodeError as e:
            return self._fatal(f"bad atom in the atom cache: {e.message}", e)
        return atom

    def _fragment(self, data: bytes, start: int, end: int, kind: int) -> Event | None:
        if end - start < 18:
            return self._fatal("fragment header shorter than SequenceId and FragmentId")
        seq, fid = _unpack_seq(data, start + 2)
        frags = self._frags
        r: _Reassembly | None
        if kind == _FRAG_HEADER:
            if fid == 0:
                return self._fatal(f"fragmented message {seq} starts with FragmentId 0")
            if seq in frags:
                return self._fatal(f"fragmented message {seq} started twice")
            refs, q = self._atom_cache(data, start + 18, end)
            if fid == 1:  # a message in a single fragment
                return self._message(data, q, end, refs, False, start)
            if len(frags) >= self.max_fragmented_messages:
                return self._fatal(f"more than {self.max_fragmented_messages} fragmented messages in flight")
            r = frags[seq] = _Reassembly(refs, fid - 1, data[q:end])
            self._frag_bytes += r.size
        else:
            r = frags.get(seq)
            if r is None:
                return self._fatal(f"fragment {fid} of unknown fragmented message {seq}")
            if fid != r.next_id:
                return self._fatal(f"fragment {fid} of message {seq} arrived, expected {r.next_id}")
            chunk = data[start + 18 : end]
            r.chunks.append(chunk)
            r.size += len(chunk)
            self._frag_bytes += len(chunk)
            if fid == 1:
                del frags[seq]
                self._frag_bytes -= r.size
                whole = b"".join(r.chunks)
                return self._message(whole, 0, len(whole), r.refs, False, 0)
            r.next_id = fid - 1
        if r.size > self.max_message_size:
            return self._fatal(f"fragmented message {seq} exceeds max_message_size ({self.max_message_size})")
        if self._frag_bytes > self.max_pending_fragment_bytes:
            return self._fatal(f"incomplete fragmented messages exceed {self.max_pending_fragment_bytes} bytes")
        return None

    @property
    def pending_fragments(self) -> int:
        """Fragmented messages started but not complete."""
        return len(self._frags)

    # -- sending ---------------------------------------------------------------------------

    def send(self, msg: ControlMessage) -> bytes:
        """One framed packet carrying ``msg``."""
        out = bytearray()
        self._encode(msg.to_terms(), out)
        self.bytes_sent += len(out)
        self.packets_sent += 1
        return bytes(out)

    def send_terms(self, control: tuple[Any, ...], payload: Any = MISSING) -> bytes:
        """One framed packet from a raw control tuple and payload (:data:`MISSING` for none).
        The caller vouches for the tuple's shape."""
        out = bytearray()
        self._encode((control, payload), out)
        self.bytes_sent += len(out)
        self.packets_sent += 1
        return bytes(out)

    def send_many(self, msgs: Iterable[ControlMessage]) -> bytes:
        """Several packets in one buffer, for one write (coalescing: one ``write`` per batch
        instead of one per frame is ~10x the frames per second from Python; bench/dist_bench.py
        measures it).
        If one message cannot be encoded, the whole batch raises and nothing is counted."""
        out = bytearray()
        encode = self._encode
        n = 0
        for m in msgs:
            encode(m.to_terms(), out)
            n += 1
        self.bytes_sent += len(out)
        self.packets_sent += n
        return bytes(out)

    def _encode(self, terms: tuple[tuple[Any, ...], Any], out: bytearray) -> None:
        """Append one framed packet to ``out``. Terms are encoded straight into ``out`` by the
        codec's core (``encode_term`` would make a bytes object per term), and the length is
        patched in afterwards."""
        control, payload = terms
        at = len(out)
        out += self._frame_prefix
        try:
            _enc(control, out)
            if payload is not MISSING:
                if not self.header_mode:
                    out.append(_VERSION)
                _enc(payload, out)
        except RecursionError:
            del out[at:]
            raise EncodeError("term nested too deeply to encode") from None
        except BaseException:
            del out[at:]
            raise
        n = len(out) - at - 4
        if n > _MAX_FRAME:
            del out[at:]
            raise LocalProtocolError(f"message of {n} bytes does not fit one packet (we do not send fragments)")
        _pack_u32_into(out, at, n)

    def tick(self) -> bytes:
        """A zero-length packet (a tick)."""
        self.bytes_sent += 4
        self.packets_sent += 1
        return b"\x00\x00\x00\x00"


# --- ticks ----------------------------------------------------------------------------


class TickTimer:
    """Tick accounting with an injected clock (``net_ticktime`` semantics, docs/WIRE.md §3.1).

    The driver reports traffic with :meth:`on_data_received` / :meth:`on_data_sent` and asks
    :meth:`poll` what to do at time ``now`` (any monotonic clock, in seconds):

    - ``"timeout"``: nothing was read for ``tick_time`` seconds; drop the link (OTP drops
      between T - T/4 and T of silence; we wait the full T);
    - ``"send_tick"``: nothing was written for ``tick_time / 4``; send
      :meth:`Connection.tick` and report it with :meth:`on_data_sent`;
    - ``None``: nothing to do before :meth:`next_deadline`.
    """

    __slots__ = ("tick_time", "send_interval", "last_received", "last_sent")

    def __init__(self, tick_time: float = 60.0, *, now: float = 0.0) -> None:
        if tick_time <= 0:
            raise ValueError("tick_time must be positive")
        self.tick_time = tick_time
        #: Write silence after which we send a tick: ``net_tickintensity`` 4 (docs/WIRE.md §3.1).
        self.send_interval = tick_time / 4
        self.last_received = now
        self.last_sent = now

    def on_data_received(self, now: float) -> None:
        self.last_received = now

    def on_data_sent(self, now: float) -> None:
        self.last_sent = now

    def poll(self, now: float) -> Literal["send_tick", "timeout"] | None:
        if now - self.last_received >= self.tick_time:
            return "timeout"
        if now - self.last_sent >= self.send_interval:
            return "send_tick"
        return None

    def next_deadline(self) -> float:
        """The earliest time at which :meth:`poll` may return something other than ``None``."""
        return min(self.last_received + self.tick_time, self.last_sent + self.send_interval)
