"""Property tests and hostile input for the codec.

(a) Any term of the mapping round-trips: ``decode(encode(t))`` is ``exact_equal`` to ``t``
    and re-encodes to the same bytes.
(b) Random bytes and mutated/truncated valid encodings: only :class:`DecodeError` escapes,
    with an int offset inside the input; whatever decodes re-encodes to an equal term.
(c) Specific nasties: huge claimed lengths (no allocation before the check, measured with
    tracemalloc), deep nesting, zlib bombs, truncation at every offset, bad atoms,
    bad bitstrings, bad references, removed/unknown tags, and inputs that used to be
    quadratic.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from erl_interop import (
    Atom,
    BitBinary,
    DecodeError,
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
    exact_equal,
)
from erl_interop.codec import MAX_UNCOMPRESSED_SIZE, RECURSION_DEPTH
from erl_interop.terms import exact_key

# --- strategies ------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
atom_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "é", "中", "\U0001F600"]), st.integers(100, 255)
)
atoms = atom_text.filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
node_names = st.sampled_from(["a@b", "nonode@nohost", "node@host.example", "ñö@h", "true"]).map(Atom)
ints = st.integers() | st.integers(-(2**40), 2**40) | st.integers(0, 255) | st.integers(-(1 << 600), 1 << 600)
floats = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def bitbinaries(draw: Any) -> BitBinary:
    data = bytearray(draw(st.binary(min_size=1, max_size=20)))
    bits = draw(st.integers(1, 7))
    data[-1] &= (0xFF << (8 - bits)) & 0xFF
    return BitBinary(bytes(data), bits)


pids = st.builds(Pid, node_names, u32, u32, u32)
refs = st.builds(Reference, node_names, u32, st.lists(u32, min_size=1, max_size=5).map(tuple))
ports = st.builds(Port, node_names, st.integers(0, 2**64 - 1), u32)
exports = st.builds(Export, atoms, atoms, st.integers(0, 255))

hashable_leaves = st.one_of(
    st.booleans(), st.none(), ints, floats, atoms, st.binary(max_size=30), bitbinaries(),
    pids, refs, ports, exports,
)
hashable_keys = st.recursive(hashable_leaves, lambda c: st.tuples(c, c) | st.tuples(c), max_leaves=6)
leaves = hashable_leaves | st.lists(st.integers(0, 255), max_size=30)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    improper_tail = children.filter(lambda t: type(t) not in (list, ImproperList))
    return st.one_of(
        st.lists(children, max_size=6).map(tuple),
        st.lists(children, max_size=6),
        st.builds(ImproperList, st.lists(children, min_size=1, max_size=4).map(tuple), improper_tail),
        st.dictionaries(hashable_keys, children, max_size=6),
        _maps(children),
        st.builds(
            Fun, st.integers(0, 255), st.binary(min_size=16, max_size=16), u32, atoms,
            st.integers(0, 2**31 - 1), st.integers(-(2**31), 2**31 - 1), pids,
            st.lists(children, max_size=3).map(tuple),
        ),
    )


@st.composite
def _maps(draw: Any, children: st.SearchStrategy[Any]) -> Map:
    # A Map decodes back as a Map only if a dict cannot hold it: always give it a key
    # Python cannot hash (a list) or keys that collide in a dict (1, 1.0, True).
    pairs = [(draw(st.lists(children, max_size=3)), draw(children))]
    if draw(st.booleans()):
        pairs += [(1, draw(children)), (1.0, draw(children)), (True, draw(children))]
    for k, v in draw(st.lists(st.tuples(hashable_keys | st.lists(children, max_size=2), children), max_size=4)):
        pairs.append((k, v))
    seen: set[Any] = set()
    unique = []
    for k, v in pairs:
        ek = exact_key(k)
        if ek not in seen:
            seen.add(ek)
            unique.append((k, v))
    return Map(unique)


terms = st.recursive(leaves, _containers, max_leaves=25)

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- (a) round trip --------------------------------------------------------------------------

@SETTINGS
@given(terms)
def test_round_trip(t: Any) -> None:
    raw = encode(t)
    back = decode(raw)
    assert exact_equal(back, t), (back, t)
    assert encode(back) == raw


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_round_trip_compressed(t: Any) -> None:
    raw = encode(t)
    body = raw[1:]
    packed = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)
    assert exact_equal(decode(packed), t)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_str_encodes_as_utf8_binary(s: str) -> None:
    assume(all(not 0xD800 <= ord(c) <= 0xDFFF for c in s))
    assert decode(encode(s)) == s.encode()


# --- (b) only DecodeError escapes -------------------------------------------------------------

def check_hostile(data: bytes) -> None:
    """The invariant of the fuzzers: only DecodeError escapes, with a sane offset; anything
    that decodes re-encodes to bytes that decode to an exact_equal term."""
    try:
        t = decode(data)
    except DecodeError as e:
        assert type(e.offset) is int and 0 <= e.offset <= len(data), (e.offset, len(data))
        return
    again = decode(encode(t))
    assert exact_equal(again, t), (again, t)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\x83")
@example(b"\x83\x50")
def test_random_bytes(data: bytes) -> None:
    check_hostile(b"\x83" + data)
    check_hostile(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.data())
def test_mutated_valid_encodings(t: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(t))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[i] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 106, 108, 116, 131]))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and raw:
            del raw[i : i + data.draw(st.integers(1, 4))]
        elif op == "truncate":
            del raw[i:]
    check_hostile(bytes(raw))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.data())
def test_mutated_compressed_encodings(t: Any, data: st.DataObject) -> None:
    body = encode(t)[1:]
    raw = bytearray(b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body))
    i = data.draw(st.integers(2, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    check_hostile(bytes(raw))


# --- (c) specific nasties ---------------------------------------------------------------------

def peak_alloc(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            fn()
        except DecodeError:
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def refuse(raw: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as ei:
        decode(raw)
    e = ei.value
    assert type(e.offset) is int and 0 <= e.offset <= len(raw)
    return e


MAXU32 = struct.pack(">I", 2**32 - 1)

HUGE_CLAIMS = {
    "list": b"\x83l" + MAXU32 + b"a\x01j",
    "tuple": b"\x83i" + MAXU32 + b"a\x01",
    "map": b"\x83t" + MAXU32 + b"a\x01",
    "binary": b"\x83m" + MAXU32 + b"abc",
    "bitstring": b"\x83M" + MAXU32 + b"\x03abc",
    "string": b"\x83k\xff\xffabc",
    "large_big": b"\x83o" + MAXU32 + b"\x00abc",
    "small_big": b"\x83n\xff\x00abc",
    "atom_utf8": b"\x83v\xff\xffabc",
    "atom_latin1": b"\x83d\xff\xffabc",
    "small_atom": b"\x83w\xffabc",
    "newer_ref": b"\x83Z\x00\x05w\x01a" + b"\x00" * 4 + b"\x00" * 3,
    "fun_size": b"\x83p" + MAXU32 + b"\x00" * 30,
    "fun_free_vars": b"\x83p\x00\x00\x00\x40" + b"\x00" * 21 + MAXU32 + b"w\x01ma\x00a\x00" + b"\x00" * 30,
    "compressed_4gb": b"\x83P" + MAXU32 + zlib.compress(b"a\x01"),
    "compressed_over_limit": b"\x83P" + struct.pack(">I", MAX_UNCOMPRESSED_SIZE + 1) + zlib.compress(b"a\x01"),
}


@pytest.mark.parametrize("name", sorted(HUGE_CLAIMS))
def test_huge_claims_fail_fast_without_allocating(name: str) -> None:
    raw = HUGE_CLAIMS[name]
    refuse(raw)
    t0 = time.perf_counter()
    peak = peak_alloc(lambda: decode(raw))
    assert time.perf_counter() - t0 < 1.0
    assert peak < 64 * 1024, f"{name}: peak {peak} bytes for a {len(raw)}-byte input"


def test_list_claiming_4g_elements_with_3_bytes() -> None:
    raw = b"\x83l" + MAXU32 + b"a\x01j"[:3]
    e = refuse(raw)
    assert "list" in e.message
    assert peak_alloc(lambda: decode(raw)) < 16 * 1024


@pytest.mark.parametrize(
    "unit,close",
    [
        (b"l\x00\x00\x00\x01", b"j"),  # [[[...]]] : each LIST_EXT holds the next
        (b"h\x01", b""),  # {{{...}}}
        (b"i\x00\x00\x00\x01", b""),
        (b"t\x00\x00\x00\x01a\x01", b""),  # #{1 => #{1 => ...}}
        (b"l\x00\x00\x00\x01a\x01", b""),  # [1 | [1 | ...]] through the tail
    ],
)
def test_deep_nesting_decodes(unit: bytes, close: bytes) -> None:
    """No nesting limit, as binary_to_term has none (docs/WIRE.md §5.5): 100,000 levels
    decode (iteratively), in a compressed term too, and re-encode to a term that decodes
    back the same; truncated anywhere deep, it is a DecodeError."""
    n = 100_000
    raw = b"\x83" + unit * n + b"j" + close * n
    t0 = time.perf_counter()
    t = decode(raw)
    assert time.perf_counter() - t0 < 30
    again = encode(t)
    assert decode(again) is not None and encode(decode(again)) == again
    if unit == b"l\x00\x00\x00\x01a\x01":  # a non-canonical spelling of [1, 1, ...]
        assert t == [1] * n
    elif unit != b"i\x00\x00\x00\x01":  # LARGE_TUPLE_EXT of one element is not canonical either
        assert again == raw
    body = raw[1:]
    assert encode(decode(b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body))) == again
    for cut in (1, len(close) * n // 2 + 1, len(raw) // 2):
        refuse(raw[:-cut])


def test_deep_nesting_in_fun_free_vars() -> None:
    inner = b"h\x01" * 100_000 + b"j"
    head = b"\x00" + b"\x00" * 16 + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x01" + b"w\x01ma\x00a\x00"
    head += b"Xw\x01a" + b"\x00" * 12
    body = head + inner
    raw = b"\x83p" + struct.pack(">I", len(body) + 4) + body
    fun = decode(raw)
    assert type(fun) is Fun and encode(fun) == raw
    refuse(raw[:-1])
    refuse(b"\x83p" + struct.pack(">I", len(body) + 5) + body)  # a size that does not match


def test_no_recursion_error_when_caller_stack_is_deep() -> None:
    raw = b"\x83" + b"h\x01" * (3 * RECURSION_DEPTH) + b"j"
    limit = sys.getrecursionlimit()

    def dive(n: int) -> Any:
        if n:
            return dive(n - 1)
        try:
            return decode(raw)
        except DecodeError as e:
            return e

    # At several stack depths, the result is a term or a DecodeError, never RecursionError.
    for depth in (0, limit // 2, limit - 200, limit - 60):
        dive(depth)


def test_zlib_bomb_within_limit_lying_about_size() -> None:
    payload = zlib.compress(b"j" + b"\x00" * (64 * 1024 * 1024), 9)  # 64 MiB in ~65 KB
    for claimed in (1, 100, 1 << 20):
        raw = b"\x83P" + struct.pack(">I", claimed) + payload
        t0 = time.perf_counter()
        peak = peak_alloc(lambda: decode(raw))
        assert time.perf_counter() - t0 < 2.0
        # bounded by the claim (a few copies of it), never by what the stream inflates to
        assert peak < 3 * claimed + 2 * len(raw) + (1 << 20), (claimed, peak)
        refuse(raw)


def test_compressed_bomb_claiming_4gb() -> None:
    raw = b"\x83P" + MAXU32 + zlib.compress(b"\x00" * 10_000_000)
    e = refuse(raw)
    assert e.offset == 2
    assert peak_alloc(lambda: decode(raw)) < 64 * 1024


def test_compressed_claiming_zero_bytes() -> None:
    # zlib reads max_length=0 as "no limit": a zero claim must not inflate anything.
    raw = b"\x83P\x00\x00\x00\x00" + zlib.compress(b"\x00" * 50_000_000)
    refuse(raw)
    assert peak_alloc(lambda: decode(raw)) < 64 * 1024


@pytest.mark.parametrize(
    "body",
    [
        zlib.compress(b"a\x01")[:-3],  # truncated stream
        zlib.compress(b"a\x01") + b"x",  # junk after the stream
        b"not zlib at all",
        zlib.compress(b"a\x01a\x02"),  # inflates to more than claimed (2)
        zlib.compress(b"a"),  # inflates to less than claimed, then bad term
        zlib.compress(b"\x50\x00\x00\x00\x02" + zlib.compress(b"a\x01")),  # nested compression
    ],
)
def test_bad_compressed(body: bytes) -> None:
    refuse(b"\x83P\x00\x00\x00\x02" + body)


def _complex_term() -> Any:
    pid = Pid(Atom("a@b"), 1, 2, 3)
    return (
        [1, -5, 2**70, -(2**3000), 1.5, Atom("åäö"), Atom("x" * 255), b"bin", BitBinary(b"\x01\xe0", 3)],
        tuple(range(300)),
        {Atom("k"): [104, 105], (1, 2): ImproperList((1, 2), Atom("t"))},
        Map([(1, 1), (1.0, 2), (True, 3), ([1], 4)]),
        pid,
        Reference(Atom("a@b"), 4, (1, 2, 3, 4, 5)),
        Port(Atom("a@b"), 1 << 40, 9),
        Export(Atom("m"), Atom("f"), 3),
        Fun(1, bytes(16), 2, Atom("m"), 3, -4, pid, (1, [2], {Atom("x"): b"y"})),
        [[]],
        [97] * 300 + [256],
        [97] * 1000,
    )


def test_truncated_at_every_offset() -> None:
    raw = encode(_complex_term())
    assert exact_equal(decode(raw), _complex_term())
    for cut in range(len(raw)):
        refuse(raw[:cut])


def test_truncated_compressed_at_every_offset() -> None:
    body = encode(_complex_term()[:9])[1:]
    raw = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)
    for cut in range(len(raw)):
        refuse(raw[:cut])


def test_trailing_bytes() -> None:
    raw = encode(_complex_term())
    e = refuse(raw + b"\x00")
    assert e.offset == len(raw)
    body = raw[1:] + b"j"
    refuse(b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body))


def test_decode_term_reports_end_not_trailing() -> None:
    raw = encode((1, 2))[1:]
    assert decode_term(raw + b"junk") == ((1, 2), len(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x83w\x02\xc3\x28",  # invalid continuation byte
        b"\x83w\x01\x80",  # lone continuation
        b"\x83w\x02\xc0\x80",  # overlong NUL
        b"\x83w\x03\xed\xa0\x80",  # surrogate
        b"\x83v\x00\x04\xf4\x90\x80\x80",  # above U+10FFFF
        b"\x83w\x02\xe4\xb8",  # truncated sequence
        b"\x83Xw\x01\xff" + b"\x00" * 12,  # in a node name
        b"\x83qw\x01mw\x01\xffa\x01",  # in an export
    ],
)
def test_bad_atom_utf8(raw: bytes) -> None:
    refuse(raw)


def test_atoms_longer_than_255_chars() -> None:
    refuse(b"\x83v\x01\x00" + b"a" * 256)
    refuse(b"\x83d\x01\x00" + b"a" * 256)
    two_byte = "é".encode() * 256
    refuse(b"\x83v" + struct.pack(">H", len(two_byte)) + two_byte)
    ok = "é".encode() * 255
    assert decode(b"\x83v" + struct.pack(">H", len(ok)) + ok) == "é" * 255


@pytest.mark.parametrize("bits,data", [(0, b"\x01"), (9, b"\x01"), (255, b"\x01"), (8, b""), (3, b"")])
def test_bad_bitstrings(bits: int, data: bytes) -> None:
    refuse(b"\x83M" + struct.pack(">I", len(data)) + bytes([bits]) + data)


def test_empty_bitstring_with_zero_bits_is_empty_binary() -> None:
    assert decode(b"\x83M\x00\x00\x00\x00\x00") == b""  # as binary_to_term


@pytest.mark.parametrize("words", [0, 6, 0xFFFF])
@pytest.mark.parametrize("tag", [90, 114])
def test_bad_reference_word_counts(tag: int, words: int) -> None:
    creation = b"\x00\x00\x00\x01" if tag == 90 else b"\x01"
    refuse(bytes([131, tag]) + struct.pack(">H", words) + b"w\x01a" + creation + b"\x00\x00\x00\x01" * min(words, 8))


def test_fun_ext_117_is_refused() -> None:
    e = refuse(b"\x83u\x00\x00\x00\x00Xw\x01a" + b"\x00" * 12 + b"w\x01ma\x00a\x00")
    assert "FUN_EXT" in e.message


KNOWN_TAGS = {70, 77, 82, 88, 89, 90, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109,
              110, 111, 112, 113, 114, 115, 116, 118, 119, 120}


@pytest.mark.parametrize("tag", sorted(set(range(256)) - KNOWN_TAGS))
def test_unknown_tags(tag: int) -> None:
    refuse(bytes([131, tag]) + b"\x00" * 8)
    refuse(b"\x83h\x02a\x01" + bytes([tag]) + b"\x00" * 8)


def test_version_byte_inside() -> None:
    e = refuse(b"\x83h\x01\x83a\x01")
    assert e.offset == 3
    refuse(b"\x83\x83a\x01")
    refuse(b"\x83l\x00\x00\x00\x01a\x01\x83j")


def test_compressed_below_top_level() -> None:
    refuse(b"\x83h\x01P\x00\x00\x00\x02" + zlib.compress(b"a\x01"))


def test_non_finite_floats() -> None:
    for bits in (0x7FF8000000000000, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF0000000000001):
        refuse(b"\x83F" + struct.pack(">Q", bits))
    for text in (b"nan", b"inf", b"-inf", b"1.0e400", b"15", b"1e3", b" 1.5", b"1.5 ", b"1_0.0", b"0x1.0p3"):
        refuse(b"\x83c" + text + b"\x00" * (31 - len(text)))


def test_export_arity_must_be_small_integer() -> None:
    refuse(b"\x83qw\x01mw\x01fb\x00\x00\x00\x01")


def test_pid_node_must_be_atom() -> None:
    refuse(b"\x83Xa\x01" + b"\x00" * 12)


def test_map_with_many_keys_colliding_in_python_is_linear() -> None:
    n = 50_000
    parts = [b"\x83t", struct.pack(">I", n), b"a\x01a\x00", b"F" + struct.pack(">d", 1.0) + b"a\x00"]
    parts += [b"b" + struct.pack(">i", 1000 + i) + b"a\x00" for i in range(n - 2)]
    t0 = time.perf_counter()
    m = decode(b"".join(parts))
    assert time.perf_counter() - t0 < 5.0
    assert type(m) is Map and len(m) == n


def test_map_with_duplicate_among_many_unhashable_keys_is_linear() -> None:
    n = 20_000
    key = lambda i: b"l\x00\x00\x00\x01b" + struct.pack(">i", i) + b"j"  # noqa: E731
    parts = [b"\x83t", struct.pack(">I", n)] + [key(i) + b"a\x00" for i in range(n - 1)] + [key(7) + b"a\x00"]
    t0 = time.perf_counter()
    refuse(b"".join(parts))
    assert time.perf_counter() - t0 < 5.0


def test_map_keyed_by_many_maps_is_linear() -> None:
    n = 20_000
    parts = [b"\x83t", struct.pack(">I", n)]
    for i in range(n):
        parts.append(b"t\x00\x00\x00\x01l\x00\x00\x00\x01b" + struct.pack(">i", i) + b"ja\x00a\x00")
    t0 = time.perf_counter()
    d = decode(b"".join(parts))
    assert time.perf_counter() - t0 < 5.0
    assert len(d) == n


def test_only_decode_error_escapes_for_every_prefix_of_every_tag() -> None:
    """Each tag followed by a few bytes of every value: exhaustive over short inputs."""
    for tag in range(256):
        for fill in (0x00, 0x01, 0x7F, 0xFF):
            for n in range(0, 12):
                check_hostile(bytes([131, tag]) + bytes([fill]) * n)


# --- the atheris harness, bounded -------------------------------------------------------------

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_codec.py")


def test_fuzz_codec_bounded(tmp_path: Any) -> None:
    """tests/fuzz_codec.py for 20,000 iterations in a subprocess: it must finish cleanly."""
    proc = subprocess.run(
        [sys.executable, FUZZ, "-atheris_runs=20000", "-max_len=512", "-seed=1",
         f"-artifact_prefix={tmp_path}{os.sep}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Done 20000 " in out, out[-4000:]


def test_fuzz_seeds_satisfy_the_invariant() -> None:
    sys.path.insert(0, os.path.dirname(FUZZ))
    try:
        import fuzz_codec
    finally:
        sys.path.remove(os.path.dirname(FUZZ))
    for seed in fuzz_codec._seeds():
        fuzz_codec.check(seed)
        for cut in range(len(seed)):
            fuzz_codec.check(seed[:cut])
