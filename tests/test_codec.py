"""Unit tests of the term mapping (README.md "Terms"): what each Python value encodes to,
what each tag decodes to, and which values are refused. No BEAM needed."""

from __future__ import annotations

import collections
import enum
import struct

import pytest

from erl_interop import (
    Atom,
    BitBinary,
    DecodeError,
    EncodeError,
    Export,
    Fun,
    ImproperList,
    Map,
    Pid,
    Port,
    Reference,
    decode,
    decode_term,
    encode,
    encode_term,
    exact_equal,
)
from erl_interop.terms import exact_key

NODE = Atom("n@h")
PID = Pid(NODE, 1, 2, 3)


def rt(t: object) -> object:
    return decode(encode(t))


# --- atoms, booleans, nil -------------------------------------------------------------------

def test_bool_and_none_are_atoms() -> None:
    assert encode(True) == b"\x83w\x04true"
    assert encode(False) == b"\x83w\x05false"
    assert encode(None) == b"\x83w\x03nil"
    assert rt(True) is True and rt(False) is False and rt(None) is None


def test_true_false_nil_decode_from_every_atom_tag() -> None:
    for raw in (b"\x83d\x00\x04true", b"\x83s\x04true", b"\x83v\x00\x04true", b"\x83w\x04true"):
        assert decode(raw) is True
    assert decode(b"\x83d\x00\x03nil") is None


def test_atom_vs_str_vs_bytes() -> None:
    assert encode(Atom("ok")) == b"\x83w\x02ok"
    assert encode("ok") == b"\x83m\x00\x00\x00\x02ok"
    assert encode(b"ok") == encode("ok")
    assert type(rt(Atom("ok"))) is Atom
    assert type(rt("ok")) is bytes  # a str is an Elixir string; it comes back as a binary
    assert rt("åä") == "åä".encode()
    assert not exact_equal(Atom("ok"), "ok") and not exact_equal(Atom("ok"), b"ok")


def test_atom_encodings() -> None:
    assert encode(Atom("")) == b"\x83w\x00"
    long = Atom("é" * 200)  # 400 UTF-8 bytes: ATOM_UTF8_EXT
    assert encode(long)[:4] == b"\x83v\x01\x90"
    assert rt(long) == long
    assert encode(Atom("a" * 255))[:3] == b"\x83w\xff"
    assert rt(Atom("\U0001F600" * 255)) == "\U0001F600" * 255
    assert decode(b"\x83s\x02\xe5\xe4") == Atom("åä")  # latin-1
    assert decode(b"\x83d\x00\x02\xe5\xe4") == Atom("åä")


def test_atom_too_long_or_unencodable() -> None:
    with pytest.raises(EncodeError):
        encode(Atom("a" * 256))
    with pytest.raises(EncodeError):
        encode(Atom("\ud800"))
    with pytest.raises(EncodeError):
        encode("\udcff")  # lone surrogate in a str


# --- numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value,prefix",
    [
        (0, b"a"), (255, b"a"), (256, b"b"), (-1, b"b"), (2**31 - 1, b"b"), (-(2**31), b"b"),
        (2**31, b"n"), (-(2**31) - 1, b"n"), ((1 << 2040) - 1, b"n"), (1 << 2040, b"o"), (-(1 << 2040), b"o"),
    ],
)
def test_integer_forms(value: int, prefix: bytes) -> None:
    raw = encode(value)
    assert raw[1:2] == prefix
    assert rt(value) == value and type(rt(value)) is int


def test_float() -> None:
    assert encode(1.5) == b"\x83F" + struct.pack(">d", 1.5)
    assert exact_equal(rt(-0.0), -0.0) and str(rt(-0.0)) == "-0.0"
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(EncodeError):
            encode(bad)


def test_int_float_bool_are_distinct() -> None:
    assert encode(1) != encode(1.0) != encode(True)
    assert not exact_equal(1, 1.0) and not exact_equal(1, True) and not exact_equal(1.0, True)


def test_subclasses_encode_as_their_base() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    assert decode(encode(Color.RED)) == 1
    assert decode(encode(Name("x"))) == b"x"
    assert decode(encode(collections.OrderedDict(a=1))) == {b"a": 1}
    Point = collections.namedtuple("Point", "x y")
    assert decode(encode(Point(1, 2))) == (1, 2)


# --- lists and strings ----------------------------------------------------------------------

def test_string_ext_rules() -> None:
    assert encode([]) == b"\x83j"
    assert encode([104, 105]) == b"\x83k\x00\x02hi"
    assert encode([0, 255]) == b"\x83k\x00\x02\x00\xff"
    assert encode([97] * 65535)[1:4] == b"k\xff\xff"
    assert encode([97] * 65536)[1:2] == b"l"  # too long for STRING_EXT
    assert encode([256])[1:2] == b"l"
    assert encode([-1])[1:2] == b"l"
    assert encode([1, 2.0])[1:2] == b"l"


def test_bools_are_not_string_bytes() -> None:
    raw = encode([True, False])
    assert raw == b"\x83l\x00\x00\x00\x02w\x04truew\x05falsej"
    assert rt([True, 1]) == [True, 1] and type(rt([True, 1])[0]) is bool
    assert encode([1, True])[1:2] == b"l"


def test_string_ext_decodes_to_list_of_ints() -> None:
    assert decode(b"\x83k\x00\x03abc") == [97, 98, 99]
    assert decode(b"\x83k\x00\x00") == []


def test_tuple_and_list_are_distinct() -> None:
    assert encode((1, 2)) != encode([1, 2])
    assert not exact_equal((1,), [1])
    big = tuple(range(300))
    assert encode(big)[1:6] == b"i" + struct.pack(">I", 300)
    assert rt(big) == big


def test_improper_list() -> None:
    t = ImproperList((1, Atom("a")), Atom("b"))
    assert encode(t) == b"\x83l\x00\x00\x00\x02a\x01w\x01aw\x01b"
    assert rt(t) == t
    assert rt(ImproperList([1], b"x")) == ImproperList((1,), b"x")  # elements become a tuple
    assert list(t) == [1, Atom("a")] and len(t) == 2
    with pytest.raises(ValueError):
        ImproperList((), Atom("b"))
    with pytest.raises(ValueError):
        ImproperList((1,), [2])  # that would be the proper list [1, 2]


def test_improper_list_decoding_normalises() -> None:
    # [1 | [2 | []]] written with nested LIST_EXT is the proper list [1, 2].
    raw = b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02j"
    assert decode(raw) == [1, 2]
    # [1 | [2 | c]] is [1, 2 | c].
    raw = b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02w\x01c"
    assert decode(raw) == ImproperList((1, 2), Atom("c"))


# --- binaries and bitstrings ----------------------------------------------------------------

def test_binaries() -> None:
    assert encode(b"") == b"\x83m\x00\x00\x00\x00"
    assert encode(bytearray(b"x")) == encode(b"x") == encode(memoryview(b"x"))


def test_bitbinary() -> None:
    t = BitBinary(b"\x01\x40", 3)
    assert encode(t) == b"\x83M\x00\x00\x00\x02\x03\x01\x40"
    assert rt(t) == t
    # unused low bits are cleared on the way out
    assert encode(BitBinary(b"\xff", 1)) == b"\x83M\x00\x00\x00\x01\x01\x80"
    with pytest.raises(ValueError):
        BitBinary(b"", 3)
    with pytest.raises(ValueError):
        BitBinary(b"a", 0)


# --- maps -----------------------------------------------------------------------------------

def test_dict_round_trip_keeps_order() -> None:
    d = {Atom("b"): 1, Atom("a"): 2, 3: [4]}
    assert list(rt(d)) == [Atom("b"), Atom("a"), 3]
    assert encode(rt(d)) == encode(d)


def test_keys_distinct_in_erlang_decode_to_map() -> None:
    m = Map([(1, Atom("int")), (1.0, Atom("float")), (True, Atom("bool"))])
    out = rt(m)
    assert type(out) is Map and len(out) == 3
    assert out[1] == Atom("int") and out[1.0] == Atom("float") and out[True] == Atom("bool")
    assert exact_equal(out, m)
    # Nested: {1} and {1.0} also collide in Python.
    out = rt(Map([((1,), 1), ((1.0,), 2)]))
    assert type(out) is Map and len(out) == 2


def test_unhashable_keys_decode_to_map() -> None:
    m = Map([([1, 2], Atom("list")), ({Atom("k"): 1}, Atom("map"))])
    out = rt(m)
    assert type(out) is Map
    assert out[[1, 2]] == Atom("list") and out[{Atom("k"): 1}] == Atom("map")
    assert [1, 2] in out and [1, 2.0] not in out
    assert out.get([3], Atom("x")) == Atom("x")
    with pytest.raises(KeyError):
        out[[3]]


def test_map_equality_and_hash() -> None:
    a = Map([(1, 2), (1.0, 3)])
    b = Map([(1.0, 3), (1, 2)])
    assert a == b and hash(a) == hash(b)  # order does not matter
    assert a != Map([(1, 3), (1.0, 2)])
    assert a != Map([(1, 2)])
    assert (a == {1: 2}) is False  # never equal to a dict
    assert Map([([1], 1)]) == Map([([1], 1)]) and hash(Map([([1], 1)])) == hash(Map([([1], 1)]))
    assert len({Map([(i, i)]) for i in range(100)}) == 100
    assert a.keys() == [1, 1.0] and a.values() == [2, 3] and list(a) == [1, 1.0]


def test_duplicate_map_keys_are_refused() -> None:
    raw = b"\x83t\x00\x00\x00\x02a\x01a\x00a\x01a\x01"
    with pytest.raises(DecodeError):
        decode(raw)


def test_dict_exact_equal_is_type_aware() -> None:
    assert exact_equal({1: 2}, {1: 2})
    assert not exact_equal({1: 2}, {1: 2.0})
    assert not exact_equal({(1,): 2}, {(1.0,): 2})
    assert exact_equal({Atom("a"): 1, Atom("b"): [2]}, {Atom("b"): [2], Atom("a"): 1})  # order is not a difference
    assert exact_equal({10**5000: 1}, {10**5000: 1})  # no repr of keys (Python refuses 5000 digits)
    assert not exact_equal({(1,): 2}, {(1,): 2, (2,): 3})


def test_zero_and_negative_zero_are_distinct_terms() -> None:
    """As in OTP 27 and later (docs/WIRE.md §5.5): =:= tells them apart, a map keeps both."""
    assert not exact_equal(0.0, -0.0) and exact_equal(-0.0, -0.0) and not exact_equal([0.0], [-0.0])
    assert exact_key(0.0) != exact_key(-0.0)
    raw = b"\x83t\x00\x00\x00\x02F" + b"\x00" * 8 + b"a\x01F\x80" + b"\x00" * 7 + b"a\x02"
    m = decode(raw)
    assert type(m) is Map and m[0.0] == 1 and m[-0.0] == 2 and encode(m) == raw
    with pytest.raises(DecodeError):
        decode(b"\x83t\x00\x00\x00\x02F\x80" + b"\x00" * 7 + b"a\x01F\x80" + b"\x00" * 7 + b"a\x02")
    assert encode(-0.0) == b"\x83F\x80" + b"\x00" * 7


def test_exact_key_and_equal_are_iterative_and_collision_resistant() -> None:
    deep: object = 1
    for i in range(200_000):
        deep = [deep] if i % 3 else {Atom("k"): (deep,)}
    assert exact_equal(deep, decode(encode(deep)))
    assert type(exact_key(deep)) is bytes and hash(Map([(1, deep)])) == hash(Map([(1, decode(encode(deep)))]))
    # keys whose Python hashes are all equal get distinct exact keys (bytes: SipHash-hashed)
    p61 = 2**61 - 1
    keys = [7 + i * p61 for i in range(1000)]
    assert len({hash(k) for k in keys}) == 1 and len({exact_key(k) for k in keys}) == 1000
    # maps as keys: equal whatever the order of their items
    assert exact_key({1: 2, 3: 4}) == exact_key({3: 4, 1: 2}) != exact_key(Map([(1, 2), (3, 4)]))
    assert exact_key(Map([(1, 2), (1.0, 3)])) == exact_key(Map([(1.0, 3), (1, 2)]))
    # values outside the mapping still get a key (a tuple), consistent with exact_equal
    class Color(enum.IntEnum):
        RED = 1

    assert exact_key(Color.RED) == exact_key(Color.RED) and exact_key([Color.RED]) != exact_key([1])


# --- pids, refs, ports, funs ----------------------------------------------------------------

def test_pid_ref_port() -> None:
    assert encode(PID) == b"\x83Xw\x03n@h" + struct.pack(">III", 1, 2, 3)
    ref = Reference(NODE, 7, (1, 2, 3))
    assert encode(ref) == b"\x83Z\x00\x03w\x03n@h" + struct.pack(">IIII", 7, 1, 2, 3)
    # Ports are V4_PORT_EXT whatever their id, as OTP 26+ writes them (docs/WIRE.md §5.3);
    # the older forms still decode.
    assert encode(Port(NODE, 5, 6)) == b"\x83xw\x03n@h" + struct.pack(">QI", 5, 6)
    assert encode(Port(NODE, 1 << 32, 6)) == b"\x83xw\x03n@h" + struct.pack(">QI", 1 << 32, 6)
    assert decode(b"\x83Yw\x03n@h" + struct.pack(">II", 5, 6)) == Port(NODE, 5, 6)
    assert decode(b"\x83fw\x03n@h" + struct.pack(">IB", 5, 2)) == Port(NODE, 5, 2)
    for t in (PID, ref, Reference(NODE, 0xFFFFFFFF, (1, 2, 3, 4, 5)), Port(NODE, 5, 6), Port(NODE, 1 << 40, 0)):
        assert rt(t) == t


@pytest.mark.parametrize(
    "term",
    [
        Pid(NODE, 1 << 32, 0, 0),
        Pid(NODE, -1, 0, 0),
        Pid(NODE, 0, 0, 1 << 32),
        Reference(NODE, 0, ()),
        Reference(NODE, 0, (1, 2, 3, 4, 5, 6)),
        Reference(NODE, 1 << 32, (1,)),
        Reference(NODE, 0, (-1,)),
        Port(NODE, 1 << 64, 0),
        Port(NODE, -1, 0),
        Port(NODE, 1, 1 << 32),
        Export(Atom("m"), Atom("f"), 256),
        Export(Atom("m"), Atom("f"), -1),
        Fun(256, b"\x00" * 16, 0, Atom("m"), 0, 0, PID, ()),
        Fun(0, b"\x00" * 15, 0, Atom("m"), 0, 0, PID, ()),
        Fun(0, b"\x00" * 16, 1 << 32, Atom("m"), 0, 0, PID, ()),
    ],
    ids=repr,
)
def test_out_of_range_fields_raise_encode_error(term: object) -> None:
    with pytest.raises(EncodeError):
        encode(term)


def test_export_and_fun() -> None:
    e = Export(Atom("lists"), Atom("map"), 2)
    assert encode(e) == b"\x83qw\x05listsw\x03mapa\x02"
    assert rt(e) == e
    f = Fun(1, bytes(range(16)), 3, Atom("m"), 4, 123456, PID, (1, Atom("x"), [b"y"]))
    raw = encode(f)
    assert raw[1:2] == b"p"
    assert struct.unpack(">I", raw[2:6])[0] == len(raw) - 2
    assert rt(f) == f and encode(rt(f)) == raw


# --- refused Python values and API details --------------------------------------------------

@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, frozenset(), 1j, decode, type, ..., range(3)],
    ids=lambda v: type(v).__name__,  # repr() holds addresses, which differ between xdist workers
)
def test_unsupported_types(value: object) -> None:
    with pytest.raises(EncodeError):
        encode(value)
    with pytest.raises(EncodeError):
        encode([1, (2, value)])


def test_deep_terms_encode() -> None:
    """No nesting limit (the BEAM has none): 100,000 levels encode, iteratively."""
    t: object = []
    for _ in range(100_000):
        t = [t]
    raw = encode(t)
    assert raw == b"\x83" + b"l\x00\x00\x00\x01" * 100_000 + b"j" * 100_001
    assert encode(decode(raw)) == raw


class _Wrap(tuple):  # type: ignore[type-arg]
    pass


def test_too_deep_through_subclass_conversions() -> None:
    """Subclasses convert through a Python call per level, which the recursion limit bounds:
    EncodeError, never a crash."""
    t: object = 1
    for _ in range(100_000):
        t = _Wrap((t,))
    with pytest.raises(EncodeError):
        encode(t)


def test_decode_term_and_encode_term() -> None:
    body = encode_term((1, Atom("a")))
    assert body[0] == 104
    data = b"junk" + body + b"more"
    assert decode_term(data, 4) == ((1, Atom("a")), 4 + len(body))
    assert decode_term(bytearray(body)) == ((1, Atom("a")), len(body))
    # ATOM_CACHE_REF resolves through the header's atom list
    assert decode_term(b"h\x02R\x00R\x01", 0, [Atom("x"), Atom("y")]) == ((Atom("x"), Atom("y")), 6)
    with pytest.raises(DecodeError):
        decode_term(b"R\x02", 0, [Atom("x")])
    with pytest.raises(DecodeError):
        decode(b"\x83R\x00")  # no header outside distribution


def test_decode_accepts_buffers() -> None:
    raw = encode({Atom("a"): [1, 2]})
    assert decode(bytearray(raw)) == decode(memoryview(raw)) == {Atom("a"): [1, 2]}


def test_decode_entry_errors() -> None:
    for raw in (b"", b"\x82a\x01", b"\x83", b"\x83a\x01\x00"):
        with pytest.raises(DecodeError) as ei:
            decode(raw)
        assert 0 <= ei.value.offset <= len(raw)
