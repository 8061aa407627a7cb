"""The codec against a real ``erl`` (OTP 25, 27 or 29): every tag it emits, both directions.

Forward: for each Erlang expression ``T`` the node returns
``term_to_binary(T, [{minor_version, 2}])`` (canonical), ``term_to_binary(T)`` (minor 1,
latin-1 atom tags), ``term_to_binary(T, [{minor_version, 0}])`` (``FLOAT_EXT``) and the
``compressed`` forms. The canonical bytes must decode and re-encode byte for byte; every
other form must decode to an ``exact_equal`` term.

Raw: byte strings OTP 25 accepts but never emits (legacy ``PID_EXT``/``PORT_EXT``/
``REFERENCE_EXT``/``NEW_REFERENCE_EXT``, 8-bit creations, ``V4_PORT_EXT``, non-canonical
integers and lists, ``FLOAT_EXT``) are fed to ``binary_to_term`` on the node; our decoding
must equal the node's, and re-encode to the node's canonical bytes. Bytes the node refuses
must be refused by us too.

Reverse: Python-built terms are encoded, sent to the node, and ``binary_to_term(B) =:= T``
is checked there (and, where the bytes are canonical, that they equal the node's own).

(``binary_to_term/1`` ignores trailing bytes; our ``decode`` refuses them by contract, so that
case lives in test_codec_hostile.py.)

What depends on the peer's release is a function of its ``erlang:system_info(otp_release)``
(:func:`ours_for`, :data:`RAW_BY_RELEASE`): we write what the current OTP writes (ports as
``V4_PORT_EXT``, which OTP 26 made the only form; OTP 25 writes ``NEW_PORT_EXT`` when the
port number fits 32 bits), and we keep ``0.0`` and ``-0.0`` apart as map keys, as OTP 27
does (OTP 25 and 26 refuse such a map as a duplicate key).

Everything is batched: one evaluation per table, so the module needs a handful of round trips.
"""

from __future__ import annotations

import base64
import struct

import pytest

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
    encode,
    exact_equal,
)
from pynode.testing import BeamNode, unique_name

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def otp(erl: BeamNode) -> int:
    """The peer's OTP release, as a number (25, 27, 29)."""
    return int(bytes(erl.eval("erlang:system_info(otp_release).")))


def ours_for(theirs: bytes, otp: int) -> bytes:
    """Our canonical bytes for the term that ``term_to_binary(T, [{minor_version, 2}])`` wrote
    as ``theirs`` on release ``otp``: the same bytes, except that before OTP 26 a port whose
    number fits 32 bits is NEW_PORT_EXT (89), where OTP 26+ and we write V4_PORT_EXT (120)."""
    tags: set[int] = set()
    _scan(theirs, 1, tags)
    if otp >= 26 or 89 not in tags:
        return theirs
    assert theirs[1] == 89, "a NEW_PORT_EXT below the top level: extend ours_for"
    node_end = _scan(theirs, 2, set())
    (number,) = struct.unpack_from(">I", theirs, node_end)
    return b"\x83x" + theirs[2:node_end] + struct.pack(">Q", number) + theirs[node_end + 4 : node_end + 8]


@pytest.fixture(scope="module")
def erl() -> BeamNode:
    node = BeamNode.start(unique_name("codec") + "@localhost")
    try:
        # Values that only the BEAM can make, kept for the reverse-direction table.
        node.eval(
            "persistent_term:put(codec_vals, {self(), make_ref(), alias(), hd(erlang:ports()),"
            " fun(X) -> X end, begin Y = {1, <<\"free\">>}, fun(X) -> {X, Y} end end}), ok."
        )
        yield node
    finally:
        node.stop()


# (id, Erlang expression). Every tag term_to_binary/2 can emit on OTP 25 appears here.
EXPRESSIONS: list[tuple[str, str]] = [
    # integers of every size
    ("int_0", "0"),
    ("int_255", "255"),
    ("int_256", "256"),
    ("int_neg1", "-1"),
    ("int_i32_max", "2147483647"),
    ("int_i32_min", "-2147483648"),
    ("small_big_pos", "2147483648"),
    ("small_big_neg", "-2147483649"),
    ("small_big_u64", "18446744073709551616"),
    ("small_big_255_bytes", "(1 bsl 2040) - 1"),
    ("large_big_256_bytes", "1 bsl 2040"),
    ("large_big_neg", "-(1 bsl 4000) - 12345"),
    ("large_big_huge", "-(7 bsl 70000)"),
    # floats (NEW_FLOAT_EXT; FLOAT_EXT via minor_version 0)
    ("float_0", "0.0"),
    ("float_neg0", "-0.0"),
    ("float_1_5", "1.5"),
    ("float_pi", "math:pi()"),
    ("float_big", "1.7976931348623157e308"),
    ("float_denormal", "5.0e-324"),
    ("float_neg_small", "-1.0e-300"),
    # atoms: latin-1 (ATOM_EXT/SMALL_ATOM_EXT in minor 1), UTF-8, long
    ("atom_ascii", "hello"),
    ("atom_empty", "''"),
    ("atom_true", "true"),
    ("atom_false", "false"),
    ("atom_nil", "nil"),
    ("atom_undefined", "undefined"),
    ("atom_latin1", "'åäö'"),
    ("atom_latin1_255", "list_to_atom(lists:duplicate(255, $ÿ))"),
    ("atom_unicode", "'中文'"),
    ("atom_emoji", "list_to_atom([16#1F600, $x])"),
    ("atom_utf8_long", "list_to_atom(lists:duplicate(200, 16#4e2d))"),
    ("atom_utf8_255_chars_4_bytes", "list_to_atom(lists:duplicate(255, 16#1F600))"),
    ("atom_ascii_255", "list_to_atom(lists:duplicate(255, $a))"),
    # binaries and bitstrings
    ("bin_empty", "<<>>"),
    ("bin", "<<0, 1, 255>>"),
    ("bin_utf8", "<<\"åäö\"/utf8>>"),
    ("bin_large", "binary:copy(<<7>>, 70000)"),
    ("bits_1", "<<1:1>>"),
    ("bits_3", "<<1, 2:3>>"),
    ("bits_7", "<<0:7>>"),
    ("bits_sub", "<<255, 255, 7:5>>"),
    # tuples
    ("tuple_empty", "{}"),
    ("tuple_small", "{a, 1, <<\"b\">>}"),
    ("tuple_255", "list_to_tuple(lists:seq(1, 255))"),
    ("tuple_large", "list_to_tuple(lists:seq(1, 300))"),
    ("tuple_nested", "{{{{}}}, [{}]}"),
    # lists and strings
    ("nil", "[]"),
    ("string", "\"hello\""),
    ("string_latin1", "\"åäö\""),
    ("string_with_zero", "[0, 1, 2]"),
    ("string_65535", "lists:duplicate(65535, $a)"),
    ("list_65536_bytes", "lists:duplicate(65536, $a)"),
    ("list_unicode_chars", "\"中文\""),
    ("list_ints", "[1, 256, -1]"),
    ("list_atoms", "[a, b, c]"),
    ("list_bools", "[true, false]"),
    ("list_nested", "[[], [[]], \"ab\", [1 | 2]]"),
    ("improper", "[a | b]"),
    ("improper_long", "[1, 2, 3 | 4]"),
    ("improper_bin_tail", "[1 | <<2>>]"),
    ("alias_tag", "[alias | make_ref()]"),
    # maps
    ("map_empty", "#{}"),
    ("map_small", "#{a => 1, <<\"b\">> => [2], {c} => #{}}"),
    ("map_1_1.0_true", "#{1 => a, 1.0 => b, true => c}"),
    ("map_0_0.0", "#{0 => a, 0.0 => b}"),
    ("map_tuple_keys_merge", "#{{1} => a, {1.0} => b, {true} => c}"),
    ("map_list_key", "#{[1, 2] => x, \"ab\" => y}"),
    ("map_map_key", "#{#{a => 1} => x}"),
    ("map_32", "maps:from_list([{I, I * 2} || I <- lists:seq(1, 32)])"),
    ("map_33", "maps:from_list([{I, I * 2} || I <- lists:seq(1, 33)])"),
    ("map_large_atoms", "maps:from_list([{list_to_atom(\"k\" ++ integer_to_list(I)), I} || I <- lists:seq(1, 100)])"),
    ("map_large_mixed", "maps:from_list([{I, a} || I <- lists:seq(1, 40)] ++ [{1.0, b}, {true, c}, {[1], d}, {<<\"x\">>, e}])"),
    ("map_large_nested", "maps:from_list([{I, #{I => [I]}} || I <- lists:seq(1, 50)])"),
    # pids, references, ports (local and with every creation form)
    ("pid_self", "self()"),
    ("pid_init", "whereis(init)"),
    ("pid_remote_creation_max", "binary_to_term(<<131, 88, 119, 3, \"a@b\", 5:32, 6:32, 16#FFFFFFFF:32>>)"),
    ("pid_remote_creation_0", "binary_to_term(<<131, 88, 119, 3, \"a@b\", 5:32, 6:32, 0:32>>)"),
    ("ref", "make_ref()"),
    ("ref_alias", "alias()"),
    ("ref_remote_1_word", "binary_to_term(<<131, 90, 1:16, 119, 3, \"a@b\", 9:32, 1:32>>)"),
    ("ref_remote_4_words", "binary_to_term(<<131, 90, 4:16, 119, 3, \"a@b\", 9:32, 1:32, 2:32, 3:32, 4:32>>)"),
    ("ref_remote_5_words", "binary_to_term(<<131, 90, 5:16, 119, 3, \"a@b\", 9:32, 1:32, 2:32, 3:32, 4:32, 5:32>>)"),
    ("port", "hd(erlang:ports())"),
    ("port_open", "begin P = open_port({spawn, \"true\"}, []), port_close(P), P end"),
    ("port_remote_creation_max", "binary_to_term(<<131, 89, 119, 3, \"a@b\", 7:32, 16#FFFFFFFF:32>>)"),
    ("port_v4", "binary_to_term(<<131, 120, 119, 3, \"a@b\", (1 bsl 40 + 3):64, 2:32>>)"),
    # funs
    ("export", "fun lists:map/2"),
    ("export_bif", "fun erlang:'+'/2"),
    ("export_unicode", "fun 'åäö':'中'/0"),
    ("closure", "fun(X) -> X end"),
    ("closure_free_vars", "begin Y = {1, <<\"free\">>, self()}, fun(X) -> {X, Y} end end"),
    ("closure_compiled", "lists:nth(1, [F || {_, F} <- [{x, fun erlang:abs/1}]])"),
    # a bit of everything, big enough that [compressed] really compresses
    ("mixed", "{[{I, <<I>>, float(I), integer_to_list(I)} || I <- lists:seq(1, 200)], self(), make_ref(), #{k => \"v\"}}"),
]

_FORMS = (
    "term_to_binary(T, [{minor_version, 2}])",
    "term_to_binary(T)",
    "term_to_binary(T, [{minor_version, 0}])",
    "term_to_binary(T, [compressed])",
    "term_to_binary(T, [{compressed, 9}, {minor_version, 2}])",
    "term_to_binary(T, [{compressed, 1}, {minor_version, 0}])",
)


@pytest.fixture(scope="module")
def forward(erl: BeamNode) -> dict[str, tuple[bytes, ...]]:
    src = (
        "[{" + ", ".join(_FORMS) + "} || T <- ["
        + ",\n".join(expr for _, expr in EXPRESSIONS)
        + "]]."
    )
    rows = erl.eval(src, timeout=60)
    assert len(rows) == len(EXPRESSIONS)
    return {name: row for (name, _), row in zip(EXPRESSIONS, rows)}


@pytest.mark.parametrize("name", [n for n, _ in EXPRESSIONS])
def test_canonical_round_trip(forward: dict[str, tuple[bytes, ...]], otp: int, name: str) -> None:
    canonical = forward[name][0]
    term = decode(canonical)
    assert encode(term) == ours_for(canonical, otp)


@pytest.mark.parametrize("name", [n for n, _ in EXPRESSIONS])
def test_other_forms_decode_to_same_term(forward: dict[str, tuple[bytes, ...]], otp: int, name: str) -> None:
    canonical, *others = forward[name]
    term = decode(canonical)
    for form, raw in zip(_FORMS[1:], others):
        other = decode(raw)
        assert exact_equal(other, term), (form, other, term)
        assert encode(other) == ours_for(canonical, otp), form


def test_every_emitted_tag_is_covered(forward: dict[str, tuple[bytes, ...]], otp: int) -> None:
    """The table really exercises every tag the peer's term_to_binary emits."""
    seen: set[int] = set()
    for row in forward.values():
        for raw in row:
            if raw[1] == 80:
                seen.add(80)
            else:
                assert _scan(raw, 1, seen) == len(raw)
    expected = {70, 77, 80, 88, 89, 90, 97, 98, 99, 100, 104, 105, 106, 107, 108, 109,
                110, 111, 112, 113, 116, 118, 119, 120}
    if otp >= 26:
        # Ports are V4_PORT_EXT only; and term_to_binary/1 writes UTF-8 atoms (minor
        # version 2) by default, so ATOM_EXT may no longer appear.
        expected -= {89, 100}
    assert expected <= seen, sorted(expected - seen)


def _scan(raw: bytes, pos: int, seen: set[int]) -> int:
    """Walk one term, recording tags; returns the end offset (canonical OTP output only)."""
    tag = raw[pos]
    seen.add(tag)
    if tag in (97,):
        return pos + 2
    if tag in (98,):
        return pos + 5
    if tag == 70:
        return pos + 9
    if tag == 99:
        return pos + 32
    if tag in (100, 118):
        return pos + 3 + struct.unpack_from(">H", raw, pos + 1)[0]
    if tag in (115, 119):
        return pos + 2 + raw[pos + 1]
    if tag in (104, 105):
        n, pos = (raw[pos + 1], pos + 2) if tag == 104 else (struct.unpack_from(">I", raw, pos + 1)[0], pos + 5)
        for _ in range(n):
            pos = _scan(raw, pos, seen)
        return pos
    if tag == 106:
        return pos + 1
    if tag == 107:
        return pos + 3 + struct.unpack_from(">H", raw, pos + 1)[0]
    if tag == 108:
        n = struct.unpack_from(">I", raw, pos + 1)[0]
        pos += 5
        for _ in range(n + 1):
            pos = _scan(raw, pos, seen)
        return pos
    if tag == 109:
        return pos + 5 + struct.unpack_from(">I", raw, pos + 1)[0]
    if tag == 77:
        return pos + 6 + struct.unpack_from(">I", raw, pos + 1)[0]
    if tag == 110:
        return pos + 3 + raw[pos + 1]
    if tag == 111:
        return pos + 6 + struct.unpack_from(">I", raw, pos + 1)[0]
    if tag == 116:
        n = struct.unpack_from(">I", raw, pos + 1)[0]
        pos += 5
        for _ in range(2 * n):
            pos = _scan(raw, pos, seen)
        return pos
    if tag == 88:
        return _scan(raw, pos + 1, seen) + 12
    if tag == 89:
        return _scan(raw, pos + 1, seen) + 8
    if tag == 120:
        return _scan(raw, pos + 1, seen) + 12
    if tag == 90:
        n = struct.unpack_from(">H", raw, pos + 1)[0]
        return _scan(raw, pos + 3, seen) + 4 + 4 * n
    if tag == 113:
        pos = _scan(raw, pos + 1, seen)
        pos = _scan(raw, pos, seen)
        return _scan(raw, pos, seen)
    if tag == 112:
        size = struct.unpack_from(">I", raw, pos + 1)[0]
        nfree = struct.unpack_from(">I", raw, pos + 26)[0]
        p = pos + 30
        for _ in range(4 + nfree):  # module, old index, old uniq, pid, free vars
            p = _scan(raw, p, seen)
        assert p == pos + 1 + size
        return p
    raise AssertionError(f"unexpected tag {tag} at {pos}")


def test_decoded_values_follow_the_mapping(forward: dict[str, tuple[bytes, ...]]) -> None:
    d = {name: decode(row[0]) for name, row in forward.items()}
    assert d["atom_true"] is True and d["atom_false"] is False and d["atom_nil"] is None
    assert type(d["atom_undefined"]) is Atom and d["atom_latin1"] == Atom("åäö")
    assert d["atom_utf8_long"] == "中" * 200
    assert d["large_big_256_bytes"] == 1 << 2040 and d["large_big_neg"] == -(1 << 4000) - 12345
    assert exact_equal(d["float_neg0"], -0.0) and d["float_denormal"] == 5e-324
    assert d["bin_utf8"] == "åäö".encode() and type(d["bin_utf8"]) is bytes
    assert d["bits_3"] == BitBinary(b"\x01\x40", 3) and d["bits_1"] == BitBinary(b"\x80", 1)
    assert d["tuple_large"] == tuple(range(1, 301))
    assert d["string"] == list(b"hello") and d["list_unicode_chars"] == [0x4E2D, 0x6587]
    assert d["list_bools"] == [True, False] and type(d["list_bools"][0]) is bool
    assert d["improper"] == ImproperList((Atom("a"),), Atom("b"))
    assert d["improper_long"] == ImproperList((1, 2, 3), 4)
    alias_tag = d["alias_tag"]
    assert type(alias_tag) is ImproperList and alias_tag.elements == (Atom("alias"),)
    assert type(alias_tag.tail) is Reference
    assert exact_equal(d["map_1_1.0_true"], Map([(1, Atom("a")), (1.0, Atom("b")), (True, Atom("c"))]))
    assert type(d["map_0_0.0"]) is Map and len(d["map_0_0.0"]) == 2
    assert type(d["map_tuple_keys_merge"]) is Map and len(d["map_tuple_keys_merge"]) == 3
    assert type(d["map_list_key"]) is Map and d["map_list_key"][[1, 2]] == Atom("x")
    assert type(d["map_33"]) is dict and d["map_33"] == {i: 2 * i for i in range(1, 34)}
    assert type(d["map_large_mixed"]) is Map and len(d["map_large_mixed"]) == 44
    assert type(d["pid_self"]) is Pid and d["pid_self"].node == Atom(d["pid_self"].node)
    assert d["pid_remote_creation_max"] == Pid(Atom("a@b"), 5, 6, 0xFFFFFFFF)
    assert d["ref_remote_5_words"] == Reference(Atom("a@b"), 9, (1, 2, 3, 4, 5))
    assert d["port_remote_creation_max"] == Port(Atom("a@b"), 7, 0xFFFFFFFF)
    assert d["port_v4"] == Port(Atom("a@b"), (1 << 40) + 3, 2)
    assert d["export"] == Export(Atom("lists"), Atom("map"), 2)
    assert d["export_unicode"] == Export(Atom("åäö"), Atom("中"), 0)
    assert type(d["closure"]) is Fun and type(d["closure_free_vars"]) is Fun
    assert d["closure_free_vars"].free_vars  # it captured something


# --- raw bytes OTP accepts but does not emit -------------------------------------------

_NODE = bytes([119, 3]) + b"a@b"  # SMALL_ATOM_UTF8 'a@b'
_NODE_LATIN1 = bytes([100, 0, 3]) + b"a@b"  # ATOM_EXT
_NODE_SMALL_LATIN1 = bytes([115, 3]) + b"a@b"  # SMALL_ATOM_EXT


def _u32(v: int) -> bytes:
    return struct.pack(">I", v)


def _float_ext(text: bytes) -> bytes:
    return b"\x83c" + text + b"\x00" * (31 - len(text))


RAW_ACCEPTED: list[tuple[str, bytes]] = [
    # legacy pids/ports/refs with 8-bit creations, and every atom encoding for the node
    *[(f"pid_ext_creation_{c}", b"\x83g" + _NODE + _u32(5) + _u32(6) + bytes([c])) for c in (0, 1, 2, 3)],
    ("pid_ext_atom_ext_node", b"\x83g" + _NODE_LATIN1 + _u32(5) + _u32(6) + b"\x01"),
    ("pid_ext_small_atom_ext_node", b"\x83g" + _NODE_SMALL_LATIN1 + _u32(5) + _u32(6) + b"\x02"),
    *[(f"port_ext_creation_{c}", b"\x83f" + _NODE + _u32(7) + bytes([c])) for c in (0, 3)],
    ("reference_ext", b"\x83e" + _NODE + _u32(9) + b"\x02"),
    *[
        (f"new_reference_ext_{n}_words", b"\x83r" + struct.pack(">H", n) + _NODE + b"\x01" + b"".join(_u32(i) for i in range(1, n + 1)))
        for n in (1, 2, 3)
    ],
    ("new_pid_ext_latin1_node", b"\x83X" + _NODE_LATIN1 + _u32(1) + _u32(0) + _u32(77)),
    ("newer_reference_ext_5_words", b"\x83Z\x00\x05" + _NODE + _u32(4) + b"".join(_u32(i) for i in (1, 2, 3, 4, 5))),
    ("v4_port_ext_small_id", b"\x83x" + _NODE + struct.pack(">Q", 5) + _u32(2)),
    ("v4_port_ext_big_id", b"\x83x" + _NODE + struct.pack(">Q", (1 << 64) - 1) + _u32(2)),
    ("new_port_ext_creation_0", b"\x83Y" + _NODE + _u32(5) + _u32(0)),
    # non-canonical but valid encodings
    ("integer_ext_small_value", b"\x83b" + _u32(5)),
    ("small_big_small_value", b"\x83n\x02\x00\x01\x00"),
    ("small_big_zero_digits", b"\x83n\x00\x00"),
    ("large_big_small_value", b"\x83o" + _u32(1) + b"\x01\x07"),
    ("list_tail_is_list", b"\x83l" + _u32(1) + b"a\x01" + b"l" + _u32(1) + b"a\x02j"),
    ("list_tail_is_string", b"\x83l" + _u32(1) + b"a\x01" + b"k\x00\x02ab"),
    ("list_zero_elements_with_tail", b"\x83l" + _u32(0) + b"a\x01"),
    ("string_ext_empty", b"\x83k\x00\x00"),
    ("atom_ext_true", b"\x83d\x00\x04true"),
    ("small_atom_ext_latin1", b"\x83s\x03\xe5\xe4\xf6"),
    ("atom_utf8_ext_short", b"\x83v\x00\x02hi"),
    ("bit_binary_empty", b"\x83M" + _u32(0) + b"\x00"),
    ("bit_binary_8_bits", b"\x83M" + _u32(2) + b"\x08\x01\x02"),
    ("bit_binary_garbage_bits", b"\x83M" + _u32(1) + b"\x03\xff"),
    ("float_ext_plain", _float_ext(b"1.5")),
    ("float_ext_signs", _float_ext(b"+1.5e+00")),
    ("float_ext_capital_e", _float_ext(b"-1.5E3")),
    ("float_ext_junk_after_nul", _float_ext(b"2.5\x00xyz")),
    ("map_ext_unsorted_small", b"\x83t" + _u32(2) + b"a\x02a\x00a\x01a\x00"),
    ("export_latin1_atoms", b"\x83q" + b"d\x00\x05lists" + b"s\x03map" + b"a\x02"),
]

RAW_REFUSED: list[tuple[str, bytes]] = [
    ("nan", b"\x83F\x7f\xf8" + b"\x00" * 6),
    ("inf", b"\x83F\x7f\xf0" + b"\x00" * 6),
    ("float_ext_nan", _float_ext(b"nan")),
    ("float_ext_no_dot", _float_ext(b"15")),
    ("float_ext_exp_no_dot", _float_ext(b"1e3")),
    ("float_ext_overflow", _float_ext(b"1.0e400")),
    ("float_ext_space", _float_ext(b" 1.5")),
    ("float_ext_underscore", _float_ext(b"1_0.5")),
    ("bits_0_nonempty", b"\x83M" + _u32(2) + b"\x00\x01\x02"),
    ("bits_8_empty", b"\x83M" + _u32(0) + b"\x08"),
    ("bits_9", b"\x83M" + _u32(1) + b"\x09\x01"),
    ("atom_256_latin1", b"\x83d\x01\x00" + b"a" * 256),
    ("atom_bad_utf8", b"\x83v\x00\x02\xff\xff"),
    ("atom_utf8_surrogate", b"\x83w\x03\xed\xa0\x80"),
    ("ref_6_words", b"\x83Z\x00\x06" + _NODE + _u32(1) + _u32(0) * 6),
    ("fun_ext_117", b"\x83u" + _u32(0) + b"X" + _NODE + _u32(0) + _u32(0) + _u32(0) + b"a\x01a\x01a\x01"),
    ("map_duplicate_key", b"\x83t" + _u32(2) + b"a\x01a\x01a\x01a\x02"),
    ("map_zero_twice", b"\x83t" + _u32(2) + b"F" + b"\x00" * 8 + b"a\x01" + b"F" + b"\x00" * 8 + b"a\x02"),
    ("map_neg_zero_twice", b"\x83t" + _u32(2) + b"F\x80" + b"\x00" * 7 + b"a\x01" + b"F\x80" + b"\x00" * 7 + b"a\x02"),
    ("map_duplicate_list_key", b"\x83t" + _u32(2) + b"k\x00\x01a" + b"a\x01" + b"l" + _u32(1) + b"a\x61j" + b"a\x02"),
    ("unknown_tag", b"\x83\x01"),
    ("version_inside", b"\x83h\x01\x83a\x01"),
    ("truncated", b"\x83m" + _u32(10) + b"abc"),
    ("compressed_size_lie", b"\x83P" + _u32(3) + __import__("zlib").compress(b"a\x01")),
    ("compressed_claims_0", b"\x83P" + _u32(0) + __import__("zlib").compress(b"")),
    ("local_ext_otp26", b"\x83y" + b"a\x01"),
]


def _erl_binaries(items: list[bytes]) -> str:
    return "[" + ", ".join(f'base64:decode(<<"{base64.b64encode(b).decode()}">>)' for b in items) + "]"


#: (id, bytes, first release that accepts them): OTP 27 keeps 0.0 and -0.0 apart as map keys
#: (erts commit e3e6efef, "+0.0 will now be considered distinct from -0.0"); older releases
#: refuse such a map as a duplicate key. We decode it as OTP 27 does, on every release.
RAW_BY_RELEASE: list[tuple[str, bytes, int]] = [
    ("map_zero_and_neg_zero", b"\x83t" + _u32(2) + b"F" + b"\x00" * 8 + b"a\x01" + b"F\x80" + b"\x00" * 7 + b"a\x02", 27),
    ("map_zero_neg_zero_and_more", b"\x83t" + _u32(3) + b"F\x80" + b"\x00" * 7 + b"a\x01" + b"a\x00a\x03"
     + b"F" + b"\x00" * 8 + b"a\x02", 27),
]


@pytest.fixture(scope="module")
def raw_results(erl: BeamNode) -> dict[str, object]:
    items = RAW_ACCEPTED + RAW_REFUSED + [(n, b) for n, b, _ in RAW_BY_RELEASE]
    src = (
        "[try term_to_binary(binary_to_term(B), [{minor_version, 2}]) catch error:badarg -> badarg end"
        " || B <- " + _erl_binaries([b for _, b in items]) + "]."
    )
    return dict(zip((n for n, _ in items), erl.eval(src, timeout=60)))


#: forms OTP 25 accepts and later releases refuse (obs: binary_to_term gives badarg on 27 and
#: 29): name -> the first release that refuses it. The decoder keeps reading them (older forms
#: are still decoded) and never writes them.
REFUSED_SINCE = {"bit_binary_empty": 26}


@pytest.mark.parametrize("name,raw", RAW_ACCEPTED, ids=[n for n, _ in RAW_ACCEPTED])
def test_raw_forms_otp_accepts(raw_results: dict[str, object], otp: int, name: str, raw: bytes) -> None:
    canonical = raw_results[name]
    if otp >= REFUSED_SINCE.get(name, 1 << 30):
        assert canonical == Atom("badarg"), f"OTP {otp} accepted {name}"
        decode(raw)  # still read, as from an OTP 25 peer
        return
    assert isinstance(canonical, bytes), f"OTP {otp} refused {name}"
    ours = decode(raw)
    assert exact_equal(ours, decode(canonical))
    if name == "map_ext_unsorted_small":
        # Key order is kept as received (a dict is ordered); the bytes are still a term
        # binary_to_term reads as the same map.
        assert decode(encode(ours)) == decode(canonical)
    else:
        assert encode(ours) == ours_for(canonical, otp)


@pytest.mark.parametrize("name,raw", RAW_REFUSED, ids=[n for n, _ in RAW_REFUSED])
def test_raw_forms_otp_refuses(raw_results: dict[str, object], otp: int, name: str, raw: bytes) -> None:
    assert raw_results[name] == Atom("badarg"), f"OTP {otp} accepted {name}"
    with pytest.raises(DecodeError) as ei:
        decode(raw)
    assert 0 <= ei.value.offset <= len(raw)


@pytest.mark.parametrize("name,raw,since", RAW_BY_RELEASE, ids=[n for n, *_ in RAW_BY_RELEASE])
def test_raw_forms_by_release(raw_results: dict[str, object], otp: int, name: str, raw: bytes, since: int) -> None:
    ours = decode(raw)
    assert type(ours) is Map and len(ours) == raw[5]  # 0.0 and -0.0 are two keys: a Map, not a dict
    assert not exact_equal(0.0, -0.0) and exact_equal(-0.0, -0.0)
    assert ours[-0.0] != ours[0.0]
    theirs = raw_results[name]
    if otp >= since:
        assert isinstance(theirs, bytes), f"OTP {otp} refused {name}"
        assert exact_equal(decode(theirs), ours)
        assert exact_equal(decode(encode(ours)), ours)
    else:
        assert theirs == Atom("badarg"), f"OTP {otp} accepted {name}"


# --- reverse direction: Python-built terms read by binary_to_term/1 ------------------------

_V = "persistent_term:get(codec_vals)"

# (id, python term or a callable of the BEAM-made values, Erlang expression it must equal,
#  whether our bytes must equal term_to_binary(T, [{minor_version, 2}]) exactly).
REVERSE: list[tuple[str, object, str, bool]] = [
    ("str", "hello", '<<"hello">>', True),
    ("str_unicode", "åäö中", '<<"åäö中"/utf8>>', True),
    ("str_empty", "", "<<>>", True),
    ("bytes", b"\x00\xff", "<<0, 255>>", True),
    ("bytearray", bytearray(b"ab"), '<<"ab">>', True),
    ("memoryview", memoryview(b"ab"), '<<"ab">>', True),
    ("atom", Atom("ok"), "ok", True),
    ("atom_latin1", Atom("åäö"), "'åäö'", True),
    ("atom_long_utf8", Atom("中" * 255), "list_to_atom(lists:duplicate(255, 16#4e2d))", True),
    ("atom_empty", Atom(""), "''", True),
    ("true", True, "true", True),
    ("false", False, "false", True),
    ("none", None, "nil", True),
    *[(f"int_{v}", v, str(v), True) for v in (0, 255, 256, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**64, -(2**64))],
    ("int_255_bytes", (1 << 2040) - 1, "(1 bsl 2040) - 1", True),
    ("int_large_big", -(1 << 2040), "-(1 bsl 2040)", True),
    ("float", 1.5, "1.5", True),
    ("float_neg_zero", -0.0, "-0.0", True),
    ("float_denormal", 5e-324, "5.0e-324", True),
    ("float_max", 1.7976931348623157e308, "1.7976931348623157e308", True),
    ("bitbinary", BitBinary(b"\x01\x40", 3), "<<1, 2:3>>", True),
    ("bitbinary_1", BitBinary(b"\x80", 1), "<<1:1>>", True),
    ("tuple_empty", (), "{}", True),
    ("tuple", (1, Atom("a"), "b"), '{1, a, <<"b">>}', True),
    ("tuple_large", tuple(range(300)), "list_to_tuple(lists:seq(0, 299))", True),
    ("list_empty", [], "[]", True),
    ("list_bytes_string", [104, 105], '"hi"', True),
    ("list_bools_not_string", [True, False, True], "[true, false, true]", True),
    ("list_mixed", [1, 256, Atom("a"), [], "s"], '[1, 256, a, [], <<"s">>]', True),
    ("list_65535", [97] * 65535, "lists:duplicate(65535, $a)", True),
    ("list_65536", [97] * 65536, "lists:duplicate(65536, $a)", True),
    ("improper", ImproperList((1, 2), Atom("t")), "[1, 2 | t]", True),
    ("improper_bin_tail", ImproperList((1,), "x"), '[1 | <<"x">>]', True),
    ("dict", {Atom("a"): 1, "k": [1]}, '#{a => 1, <<"k">> => [1]}', False),
    ("dict_large", {i: str(i) for i in range(100)}, "maps:from_list([{I, integer_to_binary(I)} || I <- lists:seq(0, 99)])", False),
    ("map_1_1.0_true", Map([(1, Atom("a")), (1.0, Atom("b")), (True, Atom("c"))]), "#{1 => a, 1.0 => b, true => c}", False),
    ("map_list_key", Map([([1, 2], Atom("x")), ({Atom("k"): 1}, Atom("y"))]), "#{[1, 2] => x, #{k => 1} => y}", False),
    ("export", Export(Atom("lists"), Atom("map"), 2), "fun lists:map/2", True),
    ("export_unicode", Export(Atom("åäö"), Atom("中"), 255), "fun 'åäö':'中'/255", True),
    ("pid_remote", Pid(Atom("a@b"), 5, 6, 0xFFFFFFFF), 'binary_to_term(<<131, 88, 119, 3, "a@b", 5:32, 6:32, 16#FFFFFFFF:32>>)', True),
    ("ref_remote_5", Reference(Atom("a@b"), 9, (1, 2, 3, 4, 5)), 'binary_to_term(<<131, 90, 5:16, 119, 3, "a@b", 9:32, 1:32, 2:32, 3:32, 4:32, 5:32>>)', True),
    ("port_remote", Port(Atom("a@b"), 7, 3), 'binary_to_term(<<131, 89, 119, 3, "a@b", 7:32, 3:32>>)', True),
    ("port_v4", Port(Atom("a@b"), 1 << 40, 3), 'binary_to_term(<<131, 120, 119, 3, "a@b", (1 bsl 40):64, 3:32>>)', True),
    # values the BEAM made, decoded by us, sent back
    ("pid_self", lambda v: v[0], f"element(1, {_V})", True),
    ("ref", lambda v: v[1], f"element(2, {_V})", True),
    ("alias_tag", lambda v: ImproperList((Atom("alias"),), v[2]), f"[alias | element(3, {_V})]", True),
    ("port", lambda v: v[3], f"element(4, {_V})", True),
    ("closure", lambda v: v[4], f"element(5, {_V})", True),
    ("closure_free_vars", lambda v: v[5], f"element(6, {_V})", True),
    ("everything", lambda v: {Atom("pids"): [v[0], v[1]], "fun": v[4], (1, 2.0): Map([(1, 1), (1.0, 2)])},
     f"#{{pids => [element(1, {_V}), element(2, {_V})], <<\"fun\">> => element(5, {_V}), {{1, 2.0}} => #{{1 => 1, 1.0 => 2}}}}", False),
]


@pytest.fixture(scope="module")
def reverse_results(erl: BeamNode) -> dict[str, tuple[object, bytes, bytes]]:
    values = erl.eval(f"{_V}.")
    terms = [t(values) if callable(t) else t for _, t, _, _ in REVERSE]
    ours = [encode(t) for t in terms]
    src = (
        "[begin T = binary_to_term(B), {T =:= E, term_to_binary(E, [{minor_version, 2}])} end"
        " || {B, E} <- lists:zip(" + _erl_binaries(ours) + ", [" + ",\n".join(e for _, _, e, _ in REVERSE) + "])]."
    )
    rows = erl.eval(src, timeout=60)
    return {name: (row[0], row[1], mine) for (name, _, _, _), row, mine in zip(REVERSE, rows, ours)}


@pytest.mark.parametrize("name,exact", [(n, x) for n, _, _, x in REVERSE], ids=[n for n, *_ in REVERSE])
def test_binary_to_term_reads_what_we_encode(
    reverse_results: dict[str, tuple[object, bytes, bytes]], otp: int, name: str, exact: bool
) -> None:
    same, theirs, ours = reverse_results[name]
    assert same is True, f"binary_to_term of our bytes is not =:= the expected term ({name})"
    if exact:
        assert ours == ours_for(theirs, otp)
    # Either way, our reading of their bytes re-encodes to a term equal to ours.
    assert exact_equal(decode(theirs), decode(ours)) or not exact
