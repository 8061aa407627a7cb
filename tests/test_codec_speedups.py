"""Differential tests: the C accelerator (erl_interop._speedups) against the pure-Python codec.

Every check runs one input through both implementations of the codec's recursive cores
and demands the same outcome:

- decoding: ``_speedups.decode_at(data, pos, depth, refs)`` against
  ``codec._py_decode`` -- the same term, built from the same Python types all the way down
  (floats compared bit for bit), the same end offset; or the same exception type, and for
  :class:`DecodeError` the same offset. The Python core lets ``IndexError`` /
  ``struct.error`` escape where the input ends early; ``decode_term`` turns those into
  ``DecodeError(len(data))``, which is what the C core raises directly, so the reference
  here applies the same translation.
- encoding: ``_speedups.encode_into(term, out)`` against ``codec._py_enc`` -- the same
  bytes, or the same exception type.

The pure-Python reference runs with ``codec._decode``/``codec._enc`` pointed back at the
Python functions (the Python cores call those module globals for nested terms).

Inputs: hypothesis-generated terms (every type of the mapping, subclasses and odd field
values), their encodings mutated and truncated, random bytes, and hand-written nasties
(FLOAT_EXT spellings, limits, atom cache refs, depth at the limit).

When the extension is not built, or ``ERL_INTEROP_PURE`` is set, the differential tests
are skipped; :func:`test_accelerator_in_use` fails instead if the extension should be
there, so a silently failed compile does not go unnoticed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import math
import os
import struct
import sys
from typing import Any, Callable, Iterator, NamedTuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from erl_interop import codec
from erl_interop.errors import DecodeError, EncodeError
from erl_interop.terms import Atom, BitBinary, Export, Fun, ImproperList, Map, Pid, Port, Reference, exact_key

PURE = os.environ.get("ERL_INTEROP_PURE", "") not in ("", "0")

try:
    from erl_interop import _speedups
except ImportError:  # pragma: no cover - depends on the build
    _speedups = None  # type: ignore[assignment]


def test_accelerator_in_use() -> None:
    """CI notices a silently failed compile: the accelerator must be active unless
    ERL_INTEROP_PURE is set."""
    if PURE:
        assert codec.ACCELERATED is False
        assert codec._decode is codec._py_decode and codec._enc is codec._py_enc
        return
    assert _speedups is not None, "erl_interop._speedups is not built (pip install -e . compiles it)"
    assert codec.ACCELERATED is True
    assert codec._decode is _speedups.decode_at and codec._enc is _speedups.encode_into
    from erl_interop import connection

    assert connection._decode is _speedups.decode_at and connection._enc is _speedups.encode_into


needs_c = pytest.mark.skipif(_speedups is None or PURE, reason="C accelerator not in use")

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def pure() -> Iterator[None]:
    """Point the codec's module globals at the pure-Python cores for the duration."""
    saved = codec._decode, codec._enc
    codec._decode, codec._enc = codec._py_decode, codec._py_enc
    try:
        yield
    finally:
        codec._decode, codec._enc = saved


# --- comparison ------------------------------------------------------------------------------

def same(a: Any, b: Any) -> bool:
    """Equal values of identical types, recursively (floats bit for bit). Iterative: decoded
    terms nest without limit."""
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        ta = type(a)
        if ta is not type(b):
            return False
        if ta is float:
            if struct.pack(">d", a) != struct.pack(">d", b):
                return False
        elif ta is tuple or ta is list:
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b))
        elif ta is dict:
            if len(a) != len(b):
                return False
            stack.extend(zip(a.items(), b.items()))
        elif ta is Map:
            stack.append((a.items(), b.items()))
        elif dataclasses.is_dataclass(a):
            stack.extend((getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
        elif not a == b:
            return False
    return True


def outcome_decode(fn: Callable[..., Any], data: Any, pos: int, depth: int, refs: Any) -> tuple[Any, ...]:
    try:
        term, end = fn(data, pos, depth, refs)
    except DecodeError as e:
        return ("DecodeError", e.offset)
    except (IndexError, struct.error):  # as decode_term translates them
        return ("DecodeError", len(data))
    except Exception as e:
        return (type(e).__name__,)
    return ("ok", term, end)


def check_decode(data: bytes, pos: int = 0, depth: int = 0, refs: Any = None) -> tuple[Any, ...]:
    with pure():
        want = outcome_decode(codec._py_decode, data, pos, depth, refs)
    got = outcome_decode(_speedups.decode_at, data, pos, depth, refs)
    if want[0] == "ok" and got[0] == "ok":
        assert same(got[1], want[1]), (data, got[1], want[1])
        assert got[2] == want[2], (data, got, want)
    else:
        assert got == want, (data, pos, depth, got, want)
    return got


def outcome_encode(fn: Callable[[Any, bytearray], None], term: Any) -> tuple[Any, ...]:
    out = bytearray(b"prefix")
    try:
        fn(term, out)
    except RecursionError:
        return ("RecursionError",)
    except Exception as e:
        return (type(e).__name__,)
    return ("ok", bytes(out))


def check_encode(term: Any) -> tuple[Any, ...]:
    with pure():
        want = outcome_encode(codec._py_enc, term)
    got = outcome_encode(_speedups.encode_into, term)
    assert got == want, (term, got, want)
    return got


# --- strategies ------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
atom_text = text | st.text(st.characters(blacklist_categories=("Cs",)), min_size=250, max_size=260)
atoms = atom_text.map(Atom)  # includes 'true'/'false'/'nil' and atoms too long to encode
nodes = st.sampled_from(["a@b", "nonode@nohost", "ñö@h", "true", "nil", ""]).map(Atom)
ints = (
    st.integers(-300, 300)
    | st.integers(-(2**32), 2**32)
    | st.integers(-(2**64), 2**64)
    | st.integers(-(1 << 700), 1 << 700)
    | st.sampled_from([255, 256, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63), 2**64 - 1])
)
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 5e-324, 1e308])
field_ints = u32 | st.sampled_from([-1, 2**32, 2**64, 2**64 - 1])


@st.composite
def bitbinaries(draw: Any) -> BitBinary:
    data = bytearray(draw(st.binary(min_size=1, max_size=12)))
    bits = draw(st.integers(1, 8))
    if draw(st.booleans()):  # canonical: unused low bits clear
        data[-1] &= (0xFF << (8 - bits)) & 0xFF
    return BitBinary(bytes(data), bits)


pids = st.builds(Pid, nodes, field_ints, field_ints, field_ints)
refs_ = st.builds(Reference, nodes, field_ints, st.lists(field_ints, min_size=0, max_size=6).map(tuple))
ports = st.builds(Port, nodes, st.integers(0, 2**64 - 1) | st.sampled_from([-1, 2**64]), field_ints)
exports = st.builds(Export, atoms, atoms, st.integers(-1, 256))

leaves = st.one_of(
    st.booleans(), st.none(), ints, floats, atoms, st.binary(max_size=20), text, bitbinaries(),
    pids, refs_, ports, exports,
    st.lists(st.integers(0, 255), max_size=10),
    st.lists(st.integers(-1, 256) | st.booleans(), max_size=6),
)


class Color(enum.IntEnum):
    RED = 1
    BIG = 2**40


class Pair(NamedTuple):
    a: Any
    b: Any


class MyStr(str):
    pass


class MyAtom(Atom):
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


odd_leaves = st.one_of(
    st.sampled_from([Color.RED, Color.BIG, MyStr("x"), MyAtom("y"), 1.5j, object, float("inf"), float("nan")]),
    st.builds(bytearray, st.binary(max_size=8)),
    st.builds(lambda b: memoryview(b), st.binary(max_size=8)),
    st.text(max_size=4),  # may hold lone surrogates: UnicodeEncodeError both ways
    st.text(max_size=4).map(Atom),
    st.builds(lambda v: Pid(Atom("a@b"), v, 1, 2), st.sampled_from([True, 1.0, Color.RED, "1", None])),
    st.builds(lambda v: Port(Atom("a@b"), v, 0), st.sampled_from([True, 5.0, Color.BIG, None])),
    st.builds(lambda v: Export(Atom("m"), Atom("f"), v), st.sampled_from([1.0, True, Color.RED, None])),
    st.builds(lambda ids: Reference(Atom("a@b"), 1, ids), st.sampled_from([[1, 2], (True,), (1.0,), ()])),
    st.builds(lambda n: Pid(n, 1, 2, 3), st.sampled_from([Atom("x" * 256), "plain", MyStr("s"), 7, "\udc80"])),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    hashable = children.filter(lambda t: _hashable(t))
    return st.one_of(
        st.lists(children, max_size=5).map(tuple),
        st.lists(children, max_size=5),
        st.builds(ImproperList, st.lists(children, min_size=1, max_size=3).map(tuple),
                  children.filter(lambda t: not isinstance(t, list))),
        st.dictionaries(hashable, children, max_size=4),
        st.lists(st.tuples(children, children), max_size=4).map(Map),
        st.builds(
            Fun, st.integers(0, 256), st.binary(min_size=15, max_size=17), field_ints, atoms,
            ints, ints, pids, st.lists(children, max_size=3).map(tuple),
        ),
        st.builds(Pair, children, children),
        st.lists(children, max_size=3).map(MyList),
        st.dictionaries(hashable, children, max_size=3).map(collections.OrderedDict),
    )


def _hashable(t: Any) -> bool:
    try:
        hash(t)
    except TypeError:
        return False
    return True


terms = st.recursive(leaves | odd_leaves, _containers, max_leaves=20)
# Terms the pure encoder accepts (to get valid bytes to decode and mutate).
clean_terms = st.recursive(leaves, _containers, max_leaves=20)


def py_encode(t: Any) -> bytes | None:
    out = bytearray()
    with pure():
        try:
            codec._py_enc(t, out)
        except Exception:
            return None
    return bytes(out)


# --- encoding --------------------------------------------------------------------------------

@needs_c
@SETTINGS
@given(terms)
def test_encode_same_bytes(t: Any) -> None:
    check_encode(t)


@needs_c
@pytest.mark.parametrize(
    "t",
    [
        [], [0, 255], [0, 256], [True, 1], [1, Color.RED], list(range(256)) * 256, [1] * 65535, [1] * 65536,
        "", "ascii", "ünï", "\udc80", Atom("\udc80"), Atom("a" * 255), Atom("é" * 255), Atom("a" * 256),
        Atom("é" * 100), 2**2048 * 255, -(2**2048 * 255), b"x" * 10000, bytearray(b"y" * 9000),
        tuple(range(256)), tuple(range(255)), {1: 2, 1.0: 3}, float("-0.0"), float("inf"), float("nan"),
        BitBinary(b"\xff", 1), BitBinary(b"\x01\xff", 7), BitBinary(b"ab", 8),
        Port(Atom("n@h"), 2**32 - 1, 1), Port(Atom("n@h"), 2**32, 1), Port(Atom("n@h"), 2**64, 1),
        Reference(Atom("n@h"), 1, (1, 2, 3, 4, 5)), Reference(Atom("n@h"), 1, (1, 2, 3, 4, 5, 6)),
        Reference(Atom("n@h"), 2**32, (1,)), Reference(Atom("n@h"), 1, tuple(range(9))),
        ImproperList((1,), Atom("t")), ImproperList((1, 2), ImproperList((3,), 4)),
        Map([]), Map([([1], 2), ([1], 3)]),
        Fun(0, b"u" * 16, 0, Atom("m"), 0, 0, Pid(Atom("n@h"), 1, 2, 3), ()),
        Fun(0, b"u" * 16, 0, Atom("m"), 2**100, -(2**100), Pid(Atom("n@h"), 1, 2, 3), (Color.RED, Pair(1, 2))),
        Fun(0, b"u" * 16, 0, Atom("m"), 0, 0, Pid(Atom("n@h"), 2**32, 2, 3), ()),
        Fun(0, b"u" * 16, 0, Atom("m"), 0, 0, Pid(Atom("n@h"), True, 2, 3), ()),
        Fun(0, b"u" * 16, 0, Atom("m"), 0, 0, (1, 2), ()),
        Fun(0, b"u" * 16, 0, Atom("m"), 0, 0, Pid(Atom("n@h"), 1, 2, 3), [1]),
        Fun(0, b"u" * 16, 2**32, Atom("m"), 0, 0, Pid(Atom("n@h"), 1, 2, 3), ()),
        Fun(256, b"u" * 16, 0, Atom("m"), 0, 0, Pid(Atom("n@h"), 1, 2, 3), ()),
        Fun(0, bytearray(b"u" * 16), 0, Atom("m"), 0, 0, Pid(Atom("n@h"), 1, 2, 3), ()),
        Fun(0, b"u" * 16, 0, Atom("m"), 1.0, 0, Pid(Atom("n@h"), 1, 2, 3), ()),
        collections.OrderedDict(a=1), collections.defaultdict(int, {1: 2}), Pair(1, [2]),
        object(), {1, 2}, frozenset(), 1j, range(3), ..., type, None, True, False,
    ],
    ids=lambda t: type(t).__name__,
)
def test_encode_cases(t: Any) -> None:
    check_encode(t)


@needs_c
def test_encode_hacked_frozen_fields() -> None:
    """Fields set behind the dataclasses' backs (object.__setattr__) take the Python path."""
    cases = []
    b = BitBinary(b"\x01", 1)
    for bits in (0, 9, -1, 1.0, True):
        x = BitBinary(b"\x01", 1)
        object.__setattr__(x, "bits", bits)
        cases.append(x)
    x = BitBinary(b"\x01", 1)
    object.__setattr__(x, "data", b"")
    cases.append(x)
    x = BitBinary(b"\x01", 1)
    object.__setattr__(x, "data", bytearray(b"\x81"))
    cases.append(x)
    il = ImproperList((1,), 2)
    object.__setattr__(il, "elements", [1, 2])
    cases.append(il)
    m = Map([(1, 2)])
    object.__setattr__(m, "_items", ((1, 2, 3),))
    cases.append(m)
    m = Map([(1, 2)])
    object.__setattr__(m, "_items", [(1, 2)])
    cases.append(m)
    p = Pid(Atom("a@b"), 1, 2, 3)
    object.__delattr__(p, "serial")
    cases.append(p)
    cases.append(b)
    for t in cases:
        check_encode(t)
        check_encode([t, (t,)])


def _nest(levels: int, leaf: Any = Atom("x")) -> Any:
    """Every container kind in turn, ``levels`` deep (funs, Maps and improper lists too)."""
    t = leaf
    pid = Pid(Atom("n@h"), 1, 2, 3)
    for i in range(levels):
        k = i % 7
        t = ([t] if k == 0 else (t,) if k == 1 else {1: t} if k == 2 else ImproperList((t,), Atom("t")) if k == 3
             else Map([(1, t), (1.0, 0)]) if k == 4 else Fun(0, b"u" * 16, 1, Atom("m"), 0, 0, pid, (t, 1)) if k == 5
             else [1, t, 2])
    return t


@needs_c
@pytest.mark.parametrize("levels", [codec.RECURSION_DEPTH - 1, codec.RECURSION_DEPTH, codec.RECURSION_DEPTH + 1,
                                    3 * codec.RECURSION_DEPTH + 5, 20_000])
def test_encode_deep_nesting(levels: int) -> None:
    """Around the point where recursion hands over to the explicit stack, and far beyond:
    the same bytes from both encoders, starting at any depth, and they decode back."""
    t = _nest(levels)
    for depth in (0, codec.RECURSION_DEPTH - 1, codec.RECURSION_DEPTH):
        with pure():
            want = bytearray()
            codec._py_enc(t, want, depth)
        got = bytearray()
        _speedups.encode_into(t, got, depth)
        assert got == want
    got = check_encode(t)
    assert got[0] == "ok"
    check_decode(got[1][len(b"prefix"):])


@needs_c
def test_encode_nesting_through_python_callbacks_is_bounded() -> None:
    # Nested through Python callbacks (namedtuple -> Python lambda -> C -> ...): each level
    # is a Python call, so the recursion limit bounds it: RecursionError from both cores.
    cb: Any = 1
    for _ in range(5_000):
        cb = Pair((cb,), 0)
    assert check_encode(cb) == ("RecursionError",)
    with pytest.raises(EncodeError):
        codec.encode(cb)


@needs_c
def test_encode_deep_with_raised_recursion_limit() -> None:
    """The C encoder recurses at most RECURSION_DEPTH levels whatever the recursion limit:
    a million levels encode with the default limit and with a raised one."""
    deep: Any = []
    for _ in range(1_000_000):
        deep = (deep,)
    want = b"\x83" + b"h\x01" * 1_000_000 + b"j"
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        assert codec.encode(deep) == want
    finally:
        sys.setrecursionlimit(old)
    assert codec.encode(deep) == want


@needs_c
def test_encode_into_depth_argument() -> None:
    # Not a plain depth: the Python encoder decides (here: it recurses from depth -5).
    for depth in (-5, True, 2**70):
        got = bytearray()
        _speedups.encode_into((1, [2]), got, depth)  # type: ignore[arg-type]
        assert bytes(got) == codec.encode_term((1, [2]))
    with pytest.raises(TypeError):
        _speedups.encode_into(1, bytearray(), 0, 0)  # type: ignore[call-arg]


@needs_c
def test_encode_into_appends_and_odd_out() -> None:
    out = bytearray(b"\x00\x00\x00\x00")
    _speedups.encode_into((Atom("a"), [1, 2]), out)
    assert bytes(out) == b"\x00\x00\x00\x00" + codec.encode_term((Atom("a"), [1, 2]))
    # A bytearray encoded into itself sees what was written before it, as in Python.
    results = []
    for fn in (codec._py_enc, _speedups.encode_into):
        out = bytearray(b"ab")
        with pure() if fn is codec._py_enc else contextlib.nullcontext():
            fn((1, out, [out]), out)
        results.append(bytes(out))
    assert results[0] == results[1]
    # `out` that is not a bytearray: whatever the Python core does with it.
    for fn in (codec._py_enc, _speedups.encode_into):
        lst: list[Any] = []
        with pure() if fn is codec._py_enc else contextlib.nullcontext():
            fn((1, 2), lst)  # type: ignore[arg-type]
        results.append(lst)
    assert results[2] == results[3]
    with pytest.raises(TypeError):
        _speedups.encode_into(1)  # type: ignore[call-arg]


class _Clears(int):
    """An int subclass whose conversion (in the Python fallback encoder) empties a container."""

    target: Any = None

    def __int__(self) -> int:
        _Clears.target.clear()
        return 7


@needs_c
@pytest.mark.parametrize("make", [lambda: {1: _Clears(1), 2: 3, 4: 5}, lambda: [1, _Clears(2), 3, 4],
                                  lambda: [_Clears(1)] * 3])
def test_encode_container_mutated_during_encoding(make: Callable[[], Any]) -> None:
    outcomes = []
    for fn in (codec._py_enc, _speedups.encode_into):
        _Clears.target = t = make()
        with pure() if fn is codec._py_enc else contextlib.nullcontext():
            outcomes.append(outcome_encode(fn, t))
    assert outcomes[0] == outcomes[1]


# --- decoding --------------------------------------------------------------------------------

REFS = [Atom("r0"), Atom("a@b"), True, None, Atom("x" * 10)]


@needs_c
@SETTINGS
@given(clean_terms)
def test_decode_valid_encodings(t: Any) -> None:
    raw = py_encode(t)
    if raw is None:
        return
    got = check_decode(raw)
    assert got[0] == "ok" and got[2] == len(raw) or got[0] == "DecodeError"  # Map with duplicate keys
    check_decode(b"junk" + raw + b"more", 4)


@needs_c
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clean_terms, st.data())
def test_decode_mutated_encodings(t: Any, data: st.DataObject) -> None:
    raw0 = py_encode(t)
    if raw0 is None:
        return
    raw = bytearray(raw0)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[i] = data.draw(st.sampled_from([0, 1, 2, 8, 9, 0x7F, 0x80, 0xFF, 82, 97, 99, 106, 107, 108, 116, 131]))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and raw:
            del raw[i : i + data.draw(st.integers(1, 4))]
        elif op == "truncate":
            del raw[i:]
    refs = data.draw(st.sampled_from([None, REFS, tuple(REFS), [], [1, "s", (1,)]]))
    check_decode(bytes(raw), 0, 0, refs)


TAGS = [70, 77, 80, 82, 88, 89, 90, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110,
        111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 131, 0, 255]


@needs_c
@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(TAGS), st.binary(max_size=60), st.sampled_from([None, REFS, [1, "s"]]))
@example(106, b"", None)
@example(82, b"\x05", REFS)
@example(82, b"\x00", [1])
def test_decode_random_bytes(tag: int, rest: bytes, refs: Any) -> None:
    check_decode(bytes([tag]) + rest, 0, 0, refs)


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


ATOM_A = b"w\x01a"
PID = b"X" + ATOM_A + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"


def _fun(free: bytes = b"", nfree: int = 0, size_delta: int = 0, pid: bytes = PID, old: bytes = b"a\x00a\x00") -> bytes:
    body = b"\x01" + b"u" * 16 + _u32(7) + _u32(nfree) + ATOM_A + old + pid + free
    return b"p" + _u32(len(body) + 4 + size_delta) + body


NASTIES = [
    b"", b"j", b"a", b"b\x00\x00", b"h", b"h\x01", b"i\x00\x00\x00\x01", b"i" + _u32(2**32 - 1) + b"a\x01",
    b"l" + _u32(2**32 - 1) + b"j", b"l\x00\x00\x00\x01a\x01", b"l\x00\x00\x00\x01a\x01a\x02",
    b"l\x00\x00\x00\x00a\x02", b"l\x00\x00\x00\x00j", b"l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02j",
    b"l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02a\x03", b"l\x00\x00\x00\x01a\x01k\x00\x02ab",
    b"l\x00\x00\x00\x00l\x00\x00\x00\x01a\x02a\x03", b"l\x00\x00\x00\x01l\x00\x00\x00\x01a\x02a\x03a\x04",
    b"k\x00\x03ab", b"k\x00\x00", b"m\x00\x00\x00\x05abc", b"t" + _u32(2**31) + b"a\x01",
    b"t\x00\x00\x00\x02a\x01a\x02a\x01a\x03",  # duplicate key
    b"t\x00\x00\x00\x02a\x01a\x02F?\xf0\x00\x00\x00\x00\x00\x00a\x03",  # 1 and 1.0
    b"t\x00\x00\x00\x02a\x01a\x02w\x04truea\x03",  # 1 and true
    b"t\x00\x00\x00\x02l\x00\x00\x00\x01a\x01ja\x02l\x00\x00\x00\x01a\x01ja\x03",  # [1] twice
    b"t\x00\x00\x00\x02l\x00\x00\x00\x01a\x01ja\x02k\x00\x01\x01a\x03",  # [1] as LIST and STRING
    b"t\x00\x00\x00\x01l\x00\x00\x00\x01a\x01ja\x02",
    b"t\x00\x00\x00\x01t\x00\x00\x00\x00a\x02",
    b"n\x00\x00", b"n\x00\x01", b"n\x00\x02", b"n\x01\x00\x05", b"n\x08\x01" + b"\xff" * 8, b"n\x08\x00" + b"\xff" * 8,
    b"n\x09\x01" + b"\xff" * 9, b"n\x00", b"n", b"o\x00\x00\x01\x00\x01" + b"\x07" * 256, b"o\x00\x00\x00",
    b"o" + _u32(2**32 - 1) + b"\x00abc", b"n\x03\x02abc",
    b"F\x7f\xf0\x00\x00\x00\x00\x00\x00", b"F\xff\xf8\x00\x00\x00\x00\x00\x00", b"F\x80" + b"\x00" * 7, b"F\x00",
    b"M\x00\x00\x00\x00\x00", b"M\x00\x00\x00\x00\x01", b"M\x00\x00\x00\x01\x00\xff", b"M\x00\x00\x00\x01\x09\xff",
    b"M\x00\x00\x00\x01\x08\xff", b"M\x00\x00\x00\x01\x03\xff", b"M\x00\x00\x00\x02\x01\xff\xff", b"M\x00\x00\x00\x01",
    b"M\x00\x00\x00\x05\x03ab",
    PID, PID[:-1], b"X", b"XR\x00" + PID[4:], b"Xa\x01" + PID[4:], b"gw\x01a" + b"\x00" * 9, b"gw\x01a" + b"\x00" * 8,
    b"Zw", b"Z\x00\x00w\x01a", b"Z\x00\x06w\x01a", b"Z\x00\x01w\x01a\x00\x00\x00\x01\x00\x00\x00\x02",
    b"Z\x00\x02w\x01a\x00\x00\x00\x01\x00\x00\x00\x02", b"Z\x00\x01w\x01a\x00\x00",
    b"r\x00\x01w\x01a\x01\x00\x00\x00\x02", b"r\x00\x01w\x01a", b"r\x00\x05w\x01a\x01" + b"\x00" * 20,
    b"ew\x01a\x00\x00\x00\x01\x02", b"ew\x01a\x00\x00\x00\x01", b"ew\x04true\x00\x00\x00\x01\x02",
    b"Yw\x01a\x00\x00\x00\x01\x00\x00\x00\x02", b"fw\x01a\x00\x00\x00\x01\x02", b"xw\x01a" + b"\xff" * 12,
    b"xw\x01a" + b"\xff" * 11, b"Yw\x03nil\x00\x00\x00\x01\x00\x00\x00\x02",
    b"qw\x01mw\x01fa\x02", b"qw\x01mw\x01fb\x00\x00\x00\x02", b"qw\x01mw\x01f", b"qw\x01mw\x01fa",
    b"qw\x04truew\x05falsea\x02", b"qa\x01w\x01fa\x02", b"qR\x00R\x01a\x03",
    _fun(), _fun(size_delta=1), _fun(size_delta=-1), _fun(b"a\x05", 1), _fun(b"a\x05", 2), _fun(nfree=2**32 - 1),
    _fun(pid=b"a\x01"), _fun(old=b"b\x00\x00\x00\x01n\x01\x00\x05"), _fun(old=b"d\x00\x01a"),
    _fun(old=b"n\x01\x02\x05a\x00"), _fun()[:30], _fun()[:5], b"p" + _u32(2**32 - 1) + b"\x00" * 30,
    b"p\x00\x00\x00\x00", b"p\x00\x00\x00\x30\x01",
    b"R\x00", b"R\x04", b"R", b"d\x00\x01\xe9", b"s\x01\xe9", b"v\x00\x02\xc3\xa9", b"w\x02\xc3\x28",
    b"w\x04true", b"s\x05false", b"d\x00\x03nil", b"v\x00\x04true", b"w\x00", b"s\x00",
    b"d\x01\x00" + b"a" * 256, b"v\x01\x00" + b"a" * 256, b"v\x03\xfc" + "é".encode() * 510,
    b"w\xff" + "é".encode() * 127 + b"a", b"v\x02\x00" + "é".encode() * 256,
    b"P\x00\x00\x00\x01", b"\x83a\x01", b"u\x00", b"\x00", b"\xff", b"C",
]


@needs_c
@pytest.mark.parametrize("raw", NASTIES, ids=lambda r: r[:12].hex())
def test_decode_nasties(raw: bytes) -> None:
    for refs in (None, REFS, [1, "s"]):
        check_decode(raw, 0, 0, refs)
        for i in range(len(raw)):  # every truncation
            check_decode(raw[:i], 0, 0, refs)


def _float_ext(s: bytes) -> bytes:
    return b"c" + s[:31].ljust(31, b"\x00")


FLOAT_STRINGS = [
    b"1.0", b"-1.5e10", b"+2.25E-3", b"1.00000000000000000000e+00", b"0.0", b"-0.0", b"1.", b".5", b"1",
    b"1e3", b"inf", b"nan", b"-inf", b" 1.0", b"1.0 ", b"1.0x", b"1.0e", b"1.0e+", b"1.0e+x", b"1.0E5\x00junk",
    b"1_0.0", b"1.0e999", b"-1.0e999", b"1.0e-999", b"0x1.0", b"1.0\x00\x00", b"\x00", b"", b"+.0", b"1.0ee5",
    b"1" * 29 + b".0", b"1" * 30 + b".", b"1.0e" + b"0" * 27, b"1.0e" + b"9" * 27,
]


@needs_c
@pytest.mark.parametrize("s", FLOAT_STRINGS, ids=lambda s: s.decode("latin-1"))
def test_decode_float_ext(s: bytes) -> None:
    check_decode(_float_ext(s))
    check_decode(b"c" + s[:31].ljust(31, b"0"))
    check_decode(_float_ext(s)[:-1])


@needs_c
@settings(max_examples=500, deadline=None)
@given(st.from_regex(rb"\A[+-]?[0-9]{0,6}[.]?[0-9]{0,6}([eE][+-]?[0-9]{0,5})?[\x00 a-z]?", fullmatch=True),
       st.binary(max_size=31))
def test_decode_float_ext_generated(s: bytes, pad: bytes) -> None:
    check_decode(b"c" + (s + pad)[:31].ljust(31, b"\x00"))


R = codec.RECURSION_DEPTH


@needs_c
@pytest.mark.parametrize("depth", [0, 1, R - 2, R - 1, R, R + 1])
@pytest.mark.parametrize("unit,close", [(b"h\x01", b""), (b"l\x00\x00\x00\x01", b"j"),
                                        (b"t\x00\x00\x00\x01a\x01", b""), (b"l\x00\x00\x00\x01a\x01", b""),
                                        (b"l\x00\x00\x00\x02a\x01", b"j"), (b"i\x00\x00\x00\x01", b""),
                                        (b"t\x00\x00\x00\x02a\x01a\x02F\x3f\xf0" + b"\x00" * 6, b"")])
def test_decode_across_the_recursion_depth(depth: int, unit: bytes, close: bytes) -> None:
    """Where recursion hands over to the explicit stack: the same terms, ends and errors
    (truncated and with trailing junk too), whatever depth the decode starts at."""
    for n in (0, 1, R - depth - 1, R - depth, R - depth + 1, 3 * R):
        if n < 0:
            continue
        raw = unit * n + b"j" + close * n
        check_decode(raw, 0, depth)
        check_decode(raw + b"junk", 0, depth)
        for cut in (1, 2, 5, len(raw) // 2):
            check_decode(raw[:-cut], 0, depth)


@needs_c
@pytest.mark.parametrize("depth", [R - 1, R])
def test_decode_funs_across_the_recursion_depth(depth: int) -> None:
    for raw in (_fun(b"a\x05", 1), _fun(), _fun(b"a\x05", 2), _fun(b"h\x01a\x05", 1), _fun(size_delta=1),
                _fun(b"l\x00\x00\x00\x01" + _fun(b"a\x05", 1) + b"j", 1)):
        check_decode(raw, 0, depth)
        for i in range(len(raw)):
            check_decode(raw[:i], 0, depth)


@needs_c
@pytest.mark.parametrize("levels", [10_000, 200_000])
def test_decode_deep_terms(levels: int) -> None:
    """Far deeper than the recursion: every container kind, and long non-canonical chains of
    list tails ([1 | [1 | ...]]), decode the same in both cores."""
    raw = py_encode(_nest(levels))
    assert raw is not None
    got = check_decode(raw)
    assert got[0] == "ok" and got[2] == len(raw)
    chain = b"l\x00\x00\x00\x01a\x01" * levels + b"j"
    got = check_decode(chain)
    assert got[1] == [1] * levels
    check_decode(b"l\x00\x00\x00\x01a\x01" * levels + b"a\x02")  # improper at the very end
    check_decode(b"h\x01" * levels + b"l\x00\x00\x00\x00k\x00\x02ab" + b"")  # [] | "ab" as the tail


@needs_c
def test_decode_entry_arguments() -> None:
    raw = b"h\x02a\x01w\x01a"
    # inputs the C core hands to the Python core: buffers, negative or huge positions/depths
    for args in [(bytearray(raw), 0, 0, None), (memoryview(raw), 0, 0, None), (raw, -3, 0, None),
                 (raw, 2**70, 0, None), (raw, 0, -5, None), (raw, len(raw), 0, None), (raw, 1, 0, None),
                 (raw, True, 0, None), (raw, 0, 2**70, None)]:
        with pure():
            want = outcome_decode(codec._py_decode, *args)
        got = outcome_decode(_speedups.decode_at, *args)
        assert got[0] == want[0] and (got[0] != "ok" or same(got[1:], want[1:])), (args, got, want)
        if got[0] == "DecodeError":
            assert got == want
    with pytest.raises(TypeError):
        _speedups.decode_at(raw, 0, 0)  # type: ignore[call-arg]


@needs_c
def test_decoded_values_are_proper_instances() -> None:
    """Values built through the slots behave like ones built by their constructors."""
    term = (
        Pid(Atom("a@b"), 1, 2, 3), Reference(Atom("a@b"), 4, (5, 6)), Port(Atom("a@b"), 2**40, 7),
        Export(Atom("m"), Atom("f"), 2), BitBinary(b"\x01\x80", 1), ImproperList((1, 2), Atom("t")),
        Fun(1, b"u" * 16, 3, Atom("m"), 4, 5, Pid(Atom("a@b"), 1, 2, 3), (Atom("x"),)),
    )
    raw = codec.encode(term)
    got = codec.decode(raw)
    assert got == term and hash(got) == hash(term) and repr(got) == repr(term)
    for v in got:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(v, dataclasses.fields(v)[0].name, 1)
        assert dataclasses.replace(v) == v
    assert type(got[0].node) is Atom and str(got[0]) == "<a@b.1.2>"
    # true/false/nil as node, module or function names stay atoms
    raw2 = b"\x83h\x02X" + b"w\x04true" + b"\x00" * 12 + b"qw\x03nilw\x05falsea\x00"
    got2 = codec.decode(raw2)
    assert type(got2[0].node) is Atom and got2[0].node == "true"
    assert type(got2[1].module) is Atom and got2[1].module == "nil" and got2[1].function == "false"


@needs_c
def test_atom_cache_churn() -> None:
    """More distinct atoms than the C atom cache holds: every one still decodes right."""
    names = [Atom(f"atom_{i}_{'é' * (i % 3)}") for i in range(10_000)]
    raw = codec.encode(names)
    assert codec.decode(raw) == names
    assert codec.decode(raw) == names
    latin = b"\x83l" + _u32(300) + b"".join(b"s\x02" + bytes([0xE0 + i % 32, i % 256]) for i in range(300)) + b"j"
    check_decode(latin[1:])


@needs_c
def test_decode_hostile_claims_allocate_little() -> None:
    import tracemalloc

    for raw in (b"i" + _u32(2**32 - 1), b"l" + _u32(2**32 - 1) + b"j", b"t" + _u32(2**32 - 1),
                b"m" + _u32(2**32 - 1), b"o" + _u32(2**32 - 1) + b"\x00", _fun(nfree=2**32 - 1)):
        tracemalloc.start()
        try:
            with pytest.raises(DecodeError):
                _speedups.decode_at(raw + b"a\x01" * 10, 0, 0, None)
            assert tracemalloc.get_traced_memory()[1] < 64 * 1024
        finally:
            tracemalloc.stop()


@needs_c
def test_nan_inf_never_decode() -> None:
    for bits in (0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0x7FF0000000000001):
        raw = b"F" + struct.pack(">Q", bits)
        assert check_decode(raw) == ("DecodeError", 0)
    assert math.isinf(float("1e999"))
    assert check_decode(_float_ext(b"1.0e999")) == ("DecodeError", 0)


# --- maps: dict or Map, duplicates, hash collisions, deep keys ---------------------------------

_P61 = 2**61 - 1  # CPython's int hash is the value modulo this prime: k * _P61 + c all hash to c


def _map_of(keys: list[bytes]) -> bytes:
    return b"t" + _u32(len(keys)) + b"".join(k + b"a\x00" for k in keys)


def _ints(values: list[int]) -> list[bytes]:
    out = []
    with pure():
        for v in values:
            b = bytearray()
            codec._py_enc(v, b)
            out.append(bytes(b))
    return out


def _nested_key(levels: int, kind: str) -> bytes:
    raw = b"a\x01"
    for _ in range(levels - 1 if kind != "tuple" else levels):
        if kind == "tuple":
            raw = b"h\x01" + raw
        elif kind == "improper":
            raw = b"l" + _u32(1) + raw + b"a\x02"
        else:
            raw = _fun(raw, 1)
    return raw if kind == "tuple" else (b"l" + _u32(1) + raw + b"a\x02" if kind == "improper" else _fun(raw, 1))


C = codec.MAP_HASH_CHECK
K = codec.MAX_HASHED_KEY_DEPTH
MAP_CASES = {
    "distinct_ints_beyond_check": (_map_of(_ints(list(range(C + 1)))), dict),
    "all_colliding_at_the_check": (_map_of(_ints([7 + i * _P61 for i in range(C)])), dict),
    "all_colliding_beyond_the_check": (_map_of(_ints([7 + i * _P61 for i in range(C + 1)])), Map),
    # pairs sharing a hash == keys: still a dict; one pair more: a Map
    "pairs_equal_to_keys": (_map_of(_ints([g + i * _P61 for g in range(20) for i in range(3)])), dict),
    "pairs_above_keys": (_map_of(_ints([g + i * _P61 for g in range(20) for i in range(3)] + [0 + 3 * _P61])), Map),
    "minus_one_and_minus_two": (_map_of(_ints([-1, -2] + list(range(C)))), dict),  # hash(-1) == hash(-2)
    "duplicate_among_colliding": (_map_of(_ints([7 + i * _P61 for i in range(C + 5)] + [7])), None),
    "zero_and_negative_zero": (_map_of([b"F" + b"\x00" * 8, b"F\x80" + b"\x00" * 7]), Map),
    "zero_twice": (_map_of([b"F" + b"\x00" * 8, b"F" + b"\x00" * 8]), None),
    "negative_zero_twice_many": (_map_of([b"F\x80" + b"\x00" * 7] + _ints(list(range(C))) + [b"F\x80" + b"\x00" * 7]), None),
    "unhashable_beyond_check": (_map_of([b"l" + _u32(1) + k + b"j" for k in _ints(list(range(C + 3)))]), Map),
    **{f"{kind}_key_{d}": (_map_of([_nested_key(d, kind), b"a\x05"]), dict if d <= K else Map)
       for kind in ("tuple", "improper", "fun") for d in (K - 1, K, K + 1, 5 * K)},
    "deep_tuple_keys_twice": (_map_of([_nested_key(K + 1, "tuple")] * 2), None),
    "deep_key_with_a_list_inside": (_map_of([b"h\x02" + _nested_key(K + 1, "tuple") + b"l" + _u32(1) + b"a\x01j"]), Map),
}


@needs_c
@pytest.mark.parametrize("name", list(MAP_CASES))
def test_map_decoding_decisions(name: str) -> None:
    """The same dict-or-Map decision and the same duplicate detection in both cores,
    straight and nested below the recursion depth."""
    raw, want = MAP_CASES[name]
    got = check_decode(raw)
    if want is None:
        assert got[0] == "DecodeError", got
    else:
        assert got[0] == "ok" and type(got[1]) is want, (got[0], type(got[1]) if got[0] == "ok" else None)
    check_decode(b"h\x01" * (R + 2) + raw)
    check_decode(raw, 0, R)
