"""Connected phase (docs/WIRE.md §3): framing, pass-through and header bodies, the atom cache,
fragments, errors that keep the link versus errors that end it, tick accounting; and a live
OTP 25 peer with DIST_HDR_ATOM_CACHE|FRAGMENTS and with pass-through packets."""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erl_interop import aio, codec
from erl_interop import control as C
from erl_interop.connection import (
    ATOM_CACHE_SIZE,
    NEED_DATA,
    TICK,
    BadMessage,
    Connection,
    ConnectionClosed,
    TickTimer,
)
from erl_interop.control import MISSING, UnknownControl
from erl_interop.errors import DistProtocolError, EncodeError, LocalProtocolError
from erl_interop.flags import DEFAULT_FLAGS, DistFlags
from erl_interop.terms import Atom, Pid
from pynode.testing import await_until

from test_control import SAMPLES  # tests/ is on sys.path (pytest rootdir-relative import)

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

PASS = DEFAULT_FLAGS & ~(DistFlags.DIST_HDR_ATOM_CACHE | DistFlags.FRAGMENTS)
HDR = DEFAULT_FLAGS | DistFlags.DIST_HDR_ATOM_CACHE | DistFlags.FRAGMENTS
FRAG_ONLY = PASS | DistFlags.FRAGMENTS
HDR_FLAGS = DistFlags.DIST_HDR_ATOM_CACHE | DistFlags.FRAGMENTS

A = Pid(Atom("erl@localhost"), 85, 0, 1700000001)
B = Pid(Atom("py@localhost"), 1, 0, 7)


# --- helpers ----------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def cache_section(entries: list[tuple[int, str | None]], long_atoms: bool = False) -> bytes:
    """NumberOfAtomCacheRefs, Flags, refs. ``entries``: (slot, text) for a new entry,
    (slot, None) for a reference to an existing one."""
    n = len(entries)
    if n == 0:
        return b"\x00"
    nibbles = [(8 if text is not None else 0) | (slot >> 8) for slot, text in entries]
    nibbles.append(1 if long_atoms else 0)
    if len(nibbles) % 2:
        nibbles.append(0)
    flags = bytes(nibbles[i] | (nibbles[i + 1] << 4) for i in range(0, len(nibbles), 2))
    assert len(flags) == n // 2 + 1
    out = bytearray([n]) + flags
    for slot, text in entries:
        out.append(slot & 0xFF)
        if text is not None:
            raw = text.encode()
            out += struct.pack(">H", len(raw)) if long_atoms else bytes([len(raw)])
            out += raw
    return bytes(out)


def ref(i: int) -> bytes:
    return bytes([82, i])  # ATOM_CACHE_REF


def drain(conn: Connection) -> list[Any]:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if type(ev) is ConnectionClosed:
            return out


def feed(conn: Connection, data: bytes, how: str) -> list[Any]:
    events: list[Any] = []
    if how == "whole":
        conn.receive_data(data)
        events += drain(conn)
    elif how == "bytes":
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
            events += drain(conn)
    else:
        rnd = random.Random(len(data))
        i = 0
        while i < len(data):
            n = rnd.randint(1, 700)
            conn.receive_data(data[i : i + n])
            i += n
            events += drain(conn)
    return events


HOW = ["whole", "bytes", "chunks"]


# --- framing and body formats -----------------------------------------------------------


@pytest.mark.parametrize("flags", [PASS, HDR, FRAG_ONLY], ids=["pass", "hdr", "frag-only"])
@pytest.mark.parametrize("how", HOW)
def test_paired_all_messages(flags: DistFlags, how: str) -> None:
    tx, rx = Connection(flags), Connection(flags)
    msgs = [C.from_terms(c, p) for c, p in SAMPLES.values()]
    data = tx.send_many(msgs) + tx.tick()
    assert tx.packets_sent == len(msgs) + 1 and tx.bytes_sent == len(data)
    events = feed(rx, data, how)
    assert events == msgs + [TICK]
    assert rx.messages_received == len(msgs) and rx.ticks_received == 1
    assert rx.bytes_received == len(data)


def test_body_formats_on_the_wire() -> None:
    ctrl, payload = (22, A, B), Atom("hi")
    p = Connection(PASS).send(C.from_terms(ctrl, payload))
    body = b"p" + codec.encode(ctrl) + codec.encode(payload)
    assert p == frame(body)
    for flags in (HDR, FRAG_ONLY, PASS | DistFlags.DIST_HDR_ATOM_CACHE):
        h = Connection(flags).send(C.from_terms(ctrl, payload))
        assert h == frame(b"\x83D\x00" + codec.encode_term(ctrl) + codec.encode_term(payload))
    assert Connection(HDR).send(C.Link(A, B)) == frame(b"\x83D\x00" + codec.encode_term((1, A, B)))
    assert Connection(PASS).tick() == b"\0\0\0\0"


def test_both_formats_accepted_whatever_was_negotiated() -> None:
    for flags in (PASS, HDR):
        rx = Connection(flags)
        rx.receive_data(Connection(PASS).send(C.Link(A, B)) + Connection(HDR).send(C.Link(B, A)))
        assert drain(rx) == [C.Link(A, B), C.Link(B, A)]


def test_initial_bytes_from_the_handshake() -> None:
    data = Connection(PASS).send(C.SendSender(A, B, 1))
    rx = Connection(PASS, initial=data[:7])
    assert rx.next_event() is NEED_DATA
    rx.receive_data(data[7:])
    assert rx.next_event() == C.SendSender(A, B, 1)


def test_trailing_junk_waits_then_fails_at_eof() -> None:
    rx = Connection(PASS)
    rx.receive_data(Connection(PASS).send(C.Link(A, B)) + b"\x00\x00\x01")
    assert drain(rx) == [C.Link(A, B)]
    rx.receive_data(b"")
    with pytest.raises(DistProtocolError, match="closed in the middle of a packet"):
        rx.next_event()
    with pytest.raises(DistProtocolError):  # and stays failed
        rx.next_event()


def test_eof_at_a_frame_boundary() -> None:
    rx = Connection(PASS)
    rx.receive_data(b"\0\0\0\0")
    rx.receive_data(b"")
    assert drain(rx) == [TICK, ConnectionClosed()]
    with pytest.raises(LocalProtocolError):
        rx.receive_data(b"x")


def test_unencodable_message_raises_and_counts_nothing() -> None:
    tx = Connection(PASS)
    with pytest.raises(EncodeError):
        tx.send_many([C.Link(A, B), C.SendSender(A, B, object())])
    with pytest.raises(EncodeError):
        tx.send(C.SendSender(A, B, float("inf")))
    assert tx.packets_sent == 0 and tx.bytes_sent == 0


def test_accepts_bytearray_and_memoryview() -> None:
    data = Connection(PASS).send(C.Link(A, B))
    rx = Connection(PASS)
    rx.receive_data(bytearray(data[:5]))
    rx.receive_data(memoryview(data)[5:])
    assert rx.next_event() == C.Link(A, B)


# --- the atom cache ---------------------------------------------------------------------


def header_packet(entries: list[tuple[int, str | None]], terms: bytes, long_atoms: bool = False) -> bytes:
    return frame(b"\x83D" + cache_section(entries, long_atoms) + terms)


def reg_send_with_refs() -> bytes:
    # {6, From, '', ToName} + {Name, true}: node name, '' and name from the cache
    pid = bytes([88]) + ref(0) + struct.pack(">III", 85, 0, 1700000001)
    ctrl = bytes([104, 4, 97, 6]) + pid + ref(1) + ref(2)
    payload = bytes([104, 2]) + ref(2) + ref(3)
    return ctrl + payload


@pytest.mark.parametrize("how", HOW)
def test_header_new_entries_then_refs(how: str) -> None:
    terms = reg_send_with_refs()
    first = header_packet([(5, "erl@localhost"), (256 + 7, ""), (2047, "my_name"), (3, "true")], terms)
    # the same slots, now only referenced
    second = header_packet([(5, None), (256 + 7, None), (2047, None), (3, None)], terms)
    # a slot can be overwritten
    third = header_packet([(5, "other@host"), (256 + 7, None), (2047, "renamed"), (3, None)], terms)
    rx = Connection(HDR)
    events = feed(rx, first + second + third, how)
    expect = C.RegSend(A, Atom("my_name"), (Atom("my_name"), True))
    assert events[:2] == [expect, expect]
    other = Pid(Atom("other@host"), 85, 0, 1700000001)
    assert events[2] == C.RegSend(other, Atom("renamed"), (Atom("renamed"), True))
    assert events[2].to_name == "renamed" and events[0].message[1] is True


@pytest.mark.parametrize("count", [1, 2, 3, 255])
def test_header_ref_counts_and_long_atoms(count: int) -> None:
    names = [f"atom_{i}_" + "x" * (i % 40) for i in range(count)]
    entries = [(i * 8 % ATOM_CACHE_SIZE, n) for i, n in enumerate(names)]
    # a list of all the atoms, as the payload of a SEND_SENDER
    ctrl = bytes([104, 3, 97, 22]) + codec.encode_term(A) + codec.encode_term(B)
    payload = bytes([108]) + struct.pack(">I", count) + b"".join(ref(i) for i in range(count)) + b"\x6a"
    for long_atoms in (False, True):
        rx = Connection(HDR)
        rx.receive_data(header_packet(entries, ctrl + payload, long_atoms))
        assert drain(rx) == [C.SendSender(A, B, [Atom(n) for n in names])]


def test_long_atom_texts() -> None:
    long_name = "ä" * 255  # 510 bytes of UTF-8: needs LongAtoms
    ctrl = bytes([104, 3, 97, 22]) + codec.encode_term(A) + codec.encode_term(B)
    rx = Connection(HDR)
    rx.receive_data(header_packet([(9, long_name)], ctrl + ref(0), long_atoms=True))
    assert rx.next_event() == C.SendSender(A, B, Atom(long_name))


def test_ref_to_empty_slot_is_fatal() -> None:
    rx = Connection(HDR)
    rx.receive_data(header_packet([(4, None)], bytes([104, 1]) + ref(0)))
    with pytest.raises(DistProtocolError, match="empty cache slot 4"):
        rx.next_event()


def test_atom_cache_ref_outside_the_header_is_a_bad_message() -> None:
    rx = Connection(HDR)
    bad = header_packet([(4, "a")], bytes([104, 3, 97, 1]) + ref(0) + ref(1))
    good = Connection(HDR).send(C.Link(A, B))
    rx.receive_data(bad + good)
    ev = rx.next_event()
    assert type(ev) is BadMessage and "ATOM_CACHE_REF 1" in str(ev.error)
    assert rx.next_event() == C.Link(A, B)


@pytest.mark.parametrize(
    "body, match",
    [
        (b"\x83D", "too short"),
        (b"\x83D\x02\x88", "inside the flags of 2"),
        (b"\x83D\x02\x88\x00", "inside atom cache ref 0"),
        (b"\x83D\x01\x08\x05", "inside atom cache ref 0"),
        (b"\x83D\x01\x08\x05\x09ab", "past the end"),
        (b"\x83D\x01\x08\x05\x02\xff\xfe", "bad atom"),
        (b"\x83Q\x00\x00", "unknown distribution header type 131,81"),
        (b"\x99abc", "unknown packet body type 153"),
    ],
)
def test_malformed_header_is_fatal(body: bytes, match: str) -> None:
    rx = Connection(HDR)
    rx.receive_data(frame(body) + Connection(HDR).send(C.Link(A, B)))
    with pytest.raises(DistProtocolError, match=match):
        rx.next_event()
    with pytest.raises(DistProtocolError, match=match):
        rx.next_event()


# --- fragments --------------------------------------------------------------------------


def fragments(seq: int, body: bytes, n: int, entries: list[tuple[int, str | None]] | None = None) -> list[bytes]:
    """Split header-mode terms into n fragments (ids n..1)."""
    size = -(-len(body) // n)
    parts = [body[i * size : (i + 1) * size] for i in range(n)]
    out = [frame(b"\x83E" + struct.pack(">QQ", seq, n) + cache_section(entries or []) + parts[0])]
    for k in range(1, n):
        out.append(frame(b"\x83F" + struct.pack(">QQ", seq, n - k) + parts[k]))
    return out


@pytest.mark.parametrize("how", HOW)
def test_fragments_interleaved(how: str) -> None:
    big1 = bytes(range(256)) * 400
    big2 = b"z" * 70000
    ctrl1 = bytes([104, 3, 97, 22]) + codec.encode_term(A) + codec.encode_term(B)
    body1 = ctrl1 + bytes([104, 2]) + ref(0) + codec.encode_term(big1)
    body2 = codec.encode_term((6, A, Atom(""), Atom("reg"))) + codec.encode_term(big2)
    f1 = fragments(2**64 - 1, body1, 4, [(77, "first_atom")])
    f2 = fragments(12, body2, 3)
    # a whole message between fragments uses the cache slot the first fragment set up
    pid_via_cache = bytes([88]) + ref(0) + struct.pack(">III", 1, 2, 3)
    middle = header_packet([(77, None)], bytes([104, 3, 97, 1]) + pid_via_cache + codec.encode_term(B))
    wire = b"".join([f1[0], f2[0], middle, f1[1], f2[1], f2[2], f1[2], f1[3]])
    rx = Connection(HDR)
    events = feed(rx, wire, how)
    assert events == [
        C.Link(Pid(Atom("first_atom"), 1, 2, 3), B),
        C.RegSend(A, Atom("reg"), big2),
        C.SendSender(A, B, (Atom("first_atom"), big1)),
    ]
    assert rx.pending_fragments == 0


def test_single_fragment_message() -> None:
    body = codec.encode_term((1, A, B))
    rx = Connection(HDR)
    rx.receive_data(b"".join(fragments(3, body, 1)))
    assert drain(rx) == [C.Link(A, B)]


@pytest.mark.parametrize(
    "packets, match",
    [
        (lambda f: [f[1]], "unknown fragmented message 5"),
        (lambda f: [f[0], f[2]], "fragment 1 of message 5 arrived, expected 2"),
        (lambda f: [f[0], f[0]], "started twice"),
        (lambda f: [frame(b"\x83E" + struct.pack(">QQ", 1, 0) + b"\x00")], "FragmentId 0"),
        (lambda f: [frame(b"\x83E\x00\x00")], "shorter than SequenceId"),
    ],
)
def test_fragment_errors_are_fatal(packets: Any, match: str) -> None:
    f = fragments(5, codec.encode_term((1, A, B)) + b"\x6a" * 30, 3)
    rx = Connection(HDR)
    rx.receive_data(b"".join(packets(f)))
    with pytest.raises(DistProtocolError, match=match):
        drain(rx)


def test_eof_with_incomplete_fragments_is_fatal() -> None:
    f = fragments(5, codec.encode_term((1, A, B)) + b"\x6a" * 30, 3)
    rx = Connection(HDR)
    rx.receive_data(f[0])
    rx.receive_data(b"")
    with pytest.raises(DistProtocolError, match="1 fragmented message"):
        rx.next_event()


def test_limits() -> None:
    rx = Connection(HDR, max_message_size=1000)
    rx.receive_data(struct.pack(">I", 1001))  # refused before the body arrives
    with pytest.raises(DistProtocolError, match="exceeds max_message_size"):
        rx.next_event()
    body = codec.encode_term((22, A, B)) + codec.encode_term(b"x" * 2000)
    rx = Connection(HDR, max_message_size=1000)
    rx.receive_data(b"".join(fragments(1, body, 4)))
    with pytest.raises(DistProtocolError, match="fragmented message 1 exceeds max_message_size"):
        drain(rx)
    rx = Connection(HDR, max_fragmented_messages=2)
    rx.receive_data(b"".join(fragments(s, body, 4)[0] for s in range(3)))
    with pytest.raises(DistProtocolError, match="more than 2 fragmented"):
        drain(rx)
    rx = Connection(HDR, max_pending_fragment_bytes=1500)
    rx.receive_data(b"".join(fragments(s, body, 4)[0] for s in range(3)))
    with pytest.raises(DistProtocolError, match="exceed 1500 bytes"):
        drain(rx)


def test_large_frame_in_small_reads_is_copied_once() -> None:
    msg = C.SendSender(A, B, b"q" * 3_000_000)
    data = Connection(PASS).send(msg)
    rx = Connection(PASS)
    for i in range(0, len(data), 4096):
        rx.receive_data(data[i : i + 4096])
        if i + 4096 < len(data):
            assert rx.next_event() is NEED_DATA
    assert rx.next_event() == msg


# --- bad messages keep the link ---------------------------------------------------------


@pytest.mark.parametrize("flags", [PASS, HDR], ids=["pass", "hdr"])
def test_bad_messages_keep_the_link(flags: DistFlags) -> None:
    good = Connection(flags).send(C.Link(A, B))
    hdr = Connection(flags).header_mode
    pre = b"\x83D\x00" if hdr else b"p\x83"
    mid = b"" if hdr else b"\x83"
    bad = [
        frame(pre + b"\xff"),  # unknown term tag
        frame(pre + codec.encode_term((1, A))),  # malformed LINK
        frame(pre + codec.encode_term((9, A, B))),  # obsolete tag
        frame(pre + codec.encode_term((22, A, B)) + mid + codec.encode_term(1) + b"\x00"),  # trailing byte
        frame(pre + codec.encode_term((22, A, B)) + mid + b"\x6d\x00\x00\x01\x00"),  # binary overruns
        frame(pre[:-1] if not hdr else pre),  # no control term at all
        frame(pre + codec.encode_term([1, 2])),  # a list is not a control tuple
    ]
    if not hdr:
        bad.append(frame(b"p" + codec.encode_term((1, A, B))))  # missing 131
        bad.append(frame(b"p\x83" + codec.encode_term((22, A, B)) + codec.encode_term(1)))  # payload without 131
    rx = Connection(flags)
    rx.receive_data(b"".join(b + good for b in bad))
    events = drain(rx)
    assert len(events) == 2 * len(bad)
    for i, b in enumerate(bad):
        ev = events[2 * i]
        assert type(ev) is BadMessage, (i, ev)
        assert isinstance(ev.error, DistProtocolError)
        assert ev.data == b[4:]
        assert events[2 * i + 1] == C.Link(A, B)
    unknown = events[4]
    assert "unknown control message tag 9" in str(unknown.error)
    assert unknown.control == UnknownControl(9, (9, A, B), MISSING)
    assert "LINK (1)" in str(events[2].error)
    assert rx.messages_received == len(bad)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8), st.sampled_from([PASS, HDR]))
def test_fuzz_only_our_errors_escape(chunks: list[bytes], flags: DistFlags) -> None:
    rx = Connection(flags)
    good = Connection(flags).send(C.SendSender(A, B, [1, Atom("x")]))
    try:
        for c in chunks:
            rx.receive_data(c)
            drain(rx)
        rx.receive_data(good)
        drain(rx)
    except DistProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.sampled_from([b"p\x83", b"\x83D\x00", b"\x83D\x01\x08\x00\x01a", b"\x83E" + bytes(15) + b"\x01\x00"]))
def test_fuzz_bodies(body: bytes, prefix: bytes) -> None:
    rx = Connection(HDR)
    rx.receive_data(frame(prefix + body))
    try:
        ev = rx.next_event()
    except DistProtocolError:
        return
    assert ev is NEED_DATA or isinstance(ev, (BadMessage, C.ControlMessage))


_payloads = st.recursive(
    st.one_of(
        st.integers(-(2**70), 2**70),
        st.binary(max_size=20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.text(max_size=5).filter(lambda t: t not in ("true", "false", "nil")).map(Atom),  # those decode to bool/None
        st.sampled_from([A, B]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([22, 6, 33, 24]), _payloads), min_size=1, max_size=6),
    st.sampled_from([PASS, HDR]),
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
def test_property_paired_round_trip(items: list[tuple[int, Any]], flags: DistFlags, cuts: list[int]) -> None:
    msgs = [C.from_terms(SAMPLES[tag][0], payload) for tag, payload in items]
    data = Connection(flags).send_many(msgs)
    rx = Connection(flags)
    events: list[Any] = []
    i = 0
    for k in cuts * (len(data) // sum(cuts) + 1):
        if i >= len(data):
            break
        rx.receive_data(data[i : i + k])
        i += k
        events += drain(rx)
    assert events == msgs


# --- ticks ------------------------------------------------------------------------------


def test_tick_timer_with_a_fake_clock() -> None:
    t = TickTimer(4.0, now=100.0)
    assert t.poll(100.0) is None
    assert t.next_deadline() == 101.0
    assert t.poll(100.99) is None
    assert t.poll(101.0) == "send_tick"
    t.on_data_sent(101.0)
    assert t.poll(101.5) is None
    t.on_data_received(101.5)
    assert t.next_deadline() == 102.0
    # keep writing, never read: timeout after T of read silence
    now = 101.5
    while True:
        now += 0.5
        what = t.poll(now)
        if what == "send_tick":
            t.on_data_sent(now)
        if what == "timeout":
            break
    assert now == 105.5
    t.on_data_received(now)
    assert t.poll(now) is None
    with pytest.raises(ValueError):
        TickTimer(0)
    assert TickTimer().send_interval == 15.0


# --- live OTP 25 peer ---------------------------------------------------------------------

COOKIE = "conn_cookie"

# A process on erl that stores everything it receives; read back with eval.
STORE_SRC = (
    "Parent = self(), "
    "P = spawn(fun() -> L = fun Loop(Acc) -> receive {get, From} -> From ! {got, lists:reverse(Acc)}, Loop([]);"
    " M -> Loop([M | Acc]) end end, L([]) end), "
    "register(store, P), ok."
)


def store_contents(erl: Any) -> list[Any]:
    return erl.eval("store ! {get, self()}, receive {got, L} -> L after 5000 -> timeout end.")


class _EveryControlMessage(dict):  # type: ignore[type-arg]
    """A handler table for ``aio.Link.run`` that hands every control message to ``put``."""

    def __init__(self, put: Any) -> None:
        super().__init__()
        self.put = put

    def get(self, key: Any, default: Any = None) -> Any:
        return self.put if isinstance(key, type) and issubclass(key, C.ControlMessage) else default


class Link:
    """The node's own connected-phase driver (``erl_interop.aio.Link``), with its events in
    a queue the test reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection, tick_time: float) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.link = aio.Link(reader, writer, conn, tick_time, peer="erl")
        handlers = _EveryControlMessage(lambda _target, ev: self.events.put_nowait(ev))
        self.task = asyncio.get_running_loop().create_task(self.link.run(handlers, None))

    def write(self, data: bytes) -> None:
        self.link.write(data)

    async def next(self, timeout: float = 20.0) -> Any:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def close(self) -> None:
        self.link.close()
        await asyncio.gather(self.task, return_exceptions=True)


class CountingConnection(Connection):
    """Counts fragment packets and new atom-cache entries, to show which paths OTP exercised."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        self.fragment_packets = 0
        self.cache_entries = 0
        super().__init__(*a, **kw)

    def _fragment(self, *a: Any) -> Any:
        self.fragment_packets += 1
        return super()._fragment(*a)

    def _make_atom(self, raw: bytes) -> Any:
        self.cache_entries += 1
        return super()._make_atom(raw)


async def wait_async(cond: Any, timeout: float, what: str) -> None:
    await await_until(cond, timeout=timeout, interval=0.05, what=what)


async def _live(erl: Any, py_name: str, flags: DistFlags) -> None:
    from erl_interop import aio

    reader, writer, complete = await aio.connect(py_name, erl.name, COOKIE, 42, flags=flags)
    assert complete.flags & HDR_FLAGS == flags & HDR_FLAGS
    conn = CountingConnection(complete.flags, initial=complete.trailing)
    link = Link(reader, writer, conn, tick_time=4.0)
    loop = asyncio.get_running_loop()
    try:
        py = Atom(py_name)
        # erl -> py: a 200 KB term and many atoms, to a name on the Python node (REG_SEND)
        big_src = (
            "Atoms = [list_to_atom(\"atom_\" ++ integer_to_list(I)) || I <- lists:seq(1, 300)], "
            "Big = {big, binary:copy(<<\"0123456789\">>, 20000), Atoms, lists:seq(1, 2000), 'åäö', self()}, "
            f"erlang:send({{inbox, '{py_name}'}}, Big), "
            f"[erlang:send({{inbox, '{py_name}'}}, {{small, I, lists:nth(I, Atoms), 'åäö', node()}}) || I <- lists:seq(1, 300)], "
            f"erlang:send({{inbox, '{py_name}'}}, done), ok."
        )
        fut = loop.run_in_executor(None, erl.eval, big_src)
        got = []
        while True:
            ev = await link.next()
            assert isinstance(ev, C.RegSend), ev
            assert ev.to_name == "inbox"
            if ev.message == "done":
                break
            got.append(ev.message)
        assert await fut == "ok"
        big = got[0]
        assert big[0] == "big" and big[1] == b"0123456789" * 20000
        assert big[2] == [Atom(f"atom_{i}") for i in range(1, 301)]
        assert big[3] == list(range(1, 2001)) and big[4] == Atom("åäö")
        assert type(big[5]) is Pid and big[5].node == erl.name
        assert len(got) == 301
        for i, m in enumerate(got[1:], 1):
            assert m == (Atom("small"), i, Atom(f"atom_{i}"), Atom("åäö"), Atom(erl.name))
        # 200 KB came as fragments of ~64 KiB, atoms through the cache (docs/WIRE.md §3.4)
        assert (conn.fragment_packets >= 4) == bool(flags & DistFlags.FRAGMENTS)
        assert (conn.cache_entries >= 300) == bool(flags & DistFlags.DIST_HDR_ATOM_CACHE)

        # py -> erl: erl must accept what we send in this mode
        await loop.run_in_executor(None, erl.eval, STORE_SRC)
        me = Pid(py, 1, 0, 42)
        sent = [
            (Atom("hello"), 1, "text", b"bin", [Atom("a"), Atom("åäö")], {Atom("k"): 2.5}),
            (Atom("big"), b"B" * 300_000),
        ]
        link.write(conn.send_many([C.RegSend(me, Atom("store"), m) for m in sent]))
        for i in range(500):
            link.write(conn.send(C.RegSend(me, Atom("store"), (Atom("n"), i))))
        # a pid send: SEND_SENDER to the store's pid, as a node replying would
        store_pid = await loop.run_in_executor(None, erl.eval, "whereis(store).")
        link.write(conn.send(C.SendSender(me, store_pid, Atom("by_pid"))))

        contents: list[Any] = []

        async def all_stored() -> bool:
            contents.extend(await loop.run_in_executor(None, store_contents, erl))
            return bool(contents) and contents[-1] == "by_pid"

        await wait_async(all_stored, 20, "erl's store to receive everything")
        assert contents[0] == (Atom("hello"), 1, b"text", b"bin", [Atom("a"), Atom("åäö")], {Atom("k"): 2.5})
        assert contents[1] == (Atom("big"), b"B" * 300_000)
        assert contents[2:502] == [(Atom("n"), i) for i in range(500)]
        assert contents[502] == "by_pid"
        # the link stays up for longer than T (4 s): erl ticks every T/4 while it has nothing to
        # send, we tick on our side; wait for 5 of its ticks
        ticks0 = conn.ticks_received

        async def five_ticks() -> bool:
            return conn.ticks_received >= ticks0 + 5

        await wait_async(five_ticks, 15, "five ticks from erl")
        nodes = await loop.run_in_executor(None, erl.eval, "nodes(connected).")
        assert py in nodes
    finally:
        await link.close()


@pytest.mark.interop
@pytest.mark.parametrize("mode", ["hdr+frag", "frag-only", "pass"])
def test_live_otp25(mode: str) -> None:
    from pynode.testing import BeamNode, unique_name

    flags = {"hdr+frag": HDR, "frag-only": FRAG_ONLY, "pass": PASS}[mode]
    erl = BeamNode.start(f"{unique_name('erl')}@localhost", COOKIE, args=["-kernel", "net_ticktime", "4"])
    try:
        asyncio.run(asyncio.wait_for(_live(erl, f"{unique_name('py')}@localhost", flags), 90))
    finally:
        erl.stop()
