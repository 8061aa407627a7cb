"""External Term Format codec (erts/doc/src/erl_ext_dist.xml; docs/WIRE.md §5).

Theory of operation
-------------------
*Decoding* is a recursive descent over an immutable ``bytes`` object; each step returns
``(term, next_offset)``. Before anything is allocated for a length the input claims
(atoms, binaries, strings, lists, tuples, maps, bignums, reference words), the claim is
checked against the bytes that are actually left, so hostile input cannot make the
decoder allocate more than a small multiple of its own size. There is no nesting limit,
as in the BEAM: once containers nest :data:`RECURSION_DEPTH` levels, the rest of the term
is decoded with an explicit stack (:func:`_decode_deep`), so the Python stack a call uses
is bounded whatever the input, and the explicit stack by the input's size. A list whose
tail is another LIST_EXT is continued in place, never recursed into. Maps become a
``dict``, or a :class:`Map` when a dict cannot hold them exactly or cannot be built in
linear time and safely (:func:`_make_map`: duplicate keys are found through
:func:`~erl_interop.terms.exact_key` bytes, never through the keys' own hashes, which a
peer can make collide). Every failure, of whatever origin, surfaces as
:class:`~erl_interop.errors.DecodeError` with an offset.

*Encoding* produces the canonical bytes of ``term_to_binary(T, [{minor_version, 2}])`` of
the current OTP: UTF-8 atoms (``SMALL_ATOM_UTF8_EXT`` / ``ATOM_UTF8_EXT``),
``NEW_FLOAT_EXT``, ``NEW_PID_EXT``, ``NEWER_REFERENCE_EXT``, ``V4_PORT_EXT`` (what OTP 26
and later always write; OTP 24 and 25 decode it), the smallest integer form,
``STRING_EXT`` for short byte lists. Dispatch is on the exact ``type`` of a value through
a table, so ``bool`` (a subclass of ``int``) and :class:`Atom` (a subclass of ``str``)
take their own paths; other subclasses fall back to an ``isinstance`` walk and a
conversion. Like decoding, encoding recurses :data:`RECURSION_DEPTH` levels and then
continues with an explicit stack (:func:`_enc_deep`), so any depth encodes.

Atoms are interned: decoding keeps a bounded table from encoded bytes to :class:`Atom`,
encoding a bounded table from :class:`Atom` to its encoded bytes. Error messages show
terms through :func:`~erl_interop.bounded.bounded_repr`, so they are short and never fail.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections import Counter
from itertools import chain
from typing import Any, Callable, Iterator, Sequence

from .bounded import bounded_repr
from .errors import DecodeError, EncodeError
from .terms import Atom, BitBinary, Export, Fun, ImproperList, Map, Pid, Port, Reference, exact_key

__all__ = ["encode", "decode", "decode_term", "encode_term", "RECURSION_DEPTH", "MAX_HASHED_KEY_DEPTH",
           "MAP_HASH_CHECK", "MAX_UNCOMPRESSED_SIZE"]

VERSION = 131

# Tags (erl_ext_dist.xml).
NEW_FLOAT_EXT = 70
BIT_BINARY_EXT = 77
COMPRESSED = 80
ATOM_CACHE_REF = 82
NEW_PID_EXT = 88
NEW_PORT_EXT = 89
NEWER_REFERENCE_EXT = 90
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
FLOAT_EXT = 99
ATOM_EXT = 100
REFERENCE_EXT = 101
PORT_EXT = 102
PID_EXT = 103
SMALL_TUPLE_EXT = 104
LARGE_TUPLE_EXT = 105
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
NEW_FUN_EXT = 112
EXPORT_EXT = 113
NEW_REFERENCE_EXT = 114
SMALL_ATOM_EXT = 115
MAP_EXT = 116
FUN_EXT = 117
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119
V4_PORT_EXT = 120

#: Levels of nesting that decoding and encoding handle by plain recursion (one Python
#: frame, or one C frame in the accelerator, per level). Deeper containers continue on an
#: explicit stack (:func:`_decode_deep`, :func:`_enc_deep`). It is not a limit: terms of any
#: depth decode and encode, as on the BEAM (docs/WIRE.md §5.5); it only keeps the stack
#: used by a call small and fixed. Distribution traffic nests a handful of levels.
RECURSION_DEPTH = 64

#: A map key that nests tuples (improper lists, funs) deeper than this is never hashed:
#: CPython's tuple hash recurses on the C stack without a guard and crashes the process
#: at ~150,000 levels. Such a map decodes as a :class:`Map` (docs/WIRE.md §5.5).
MAX_HASHED_KEY_DEPTH = 64

#: Maps with more keys than this have their keys' Python hashes checked before a dict is
#: built: many keys sharing one hash make the dict quadratic to build (docs/WIRE.md §5.5).
MAP_HASH_CHECK = 32

#: Largest uncompressed size a ``compressed`` term (tag 80) may claim: zlib expands up to
#: ~1000x, so without a cap a small input could demand gigabytes. 64 MiB is far above any
#: message a node should accept in one piece.
MAX_UNCOMPRESSED_SIZE = 64 * 1024 * 1024

#: An atom is at most 255 characters (erl_ext_dist.xml, ATOM_UTF8_EXT).
MAX_ATOM_CHARS = 255

#: References carry at most 5 words with V4_NC (docs/WIRE.md §5.3, NEWER_REFERENCE_EXT).
MAX_REF_WORDS = 5

#: Bound on the atom intern tables; the BEAM's own atom table defaults to 1,048,576.
_ATOM_TABLE_LIMIT = 65536

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_f64 = struct.Struct(">d").unpack_from
_u32x2 = struct.Struct(">II").unpack_from
_u32x3 = struct.Struct(">III").unpack_from

_p_u16 = struct.Struct(">H").pack
_p_u32 = struct.Struct(">I").pack
_p_i32 = struct.Struct(">i").pack
_p_f64 = struct.Struct(">d").pack
_p_pid = struct.Struct(">III").pack
_p_u64 = struct.Struct(">Q").pack

# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

_SPECIAL_ATOMS: dict[str, Any] = {"true": True, "false": False, "nil": None}
_atoms_utf8: dict[bytes, Any] = {}
_atoms_latin1: dict[bytes, Any] = {}


def _make_atom(raw: bytes, pos: int, utf8: bool) -> Any:
    table = _atoms_utf8 if utf8 else _atoms_latin1
    a = table.get(raw)
    if a is not None or raw in table:
        return a
    try:
        text = raw.decode("utf-8" if utf8 else "latin-1")
    except UnicodeDecodeError:
        raise DecodeError(pos, "atom is not valid UTF-8") from None
    if len(text) > MAX_ATOM_CHARS:
        raise DecodeError(pos, f"atom longer than {MAX_ATOM_CHARS} characters")
    a = _SPECIAL_ATOMS.get(text, _SENTINEL)
    if a is _SENTINEL:
        a = Atom(text)
    if len(table) < _ATOM_TABLE_LIMIT:
        table[raw] = a
    return a


_SENTINEL = object()
_FLOAT_EXT_RE = re.compile(rb"([+-]?[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?)(?:\x00|\Z)")


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise DecodeError(pos, f"{what} claims {n} bytes but only {len(data) - pos} remain")


def _atom_at(data: bytes, pos: int, refs: Sequence[Any] | None) -> tuple[Any, int]:
    """Decode a term that must be an atom (node names, modules, functions)."""
    tag = data[pos]
    if tag == SMALL_ATOM_UTF8_EXT or tag == SMALL_ATOM_EXT:
        n = data[pos + 1]
        end = pos + 2 + n
        if end > len(data):
            _need(data, pos + 2, n, "atom")
        return _make_atom(data[pos + 2 : end], pos, tag == SMALL_ATOM_UTF8_EXT), end
    if tag == ATOM_UTF8_EXT or tag == ATOM_EXT:
        (n,) = _u16(data, pos + 1)
        end = pos + 3 + n
        if end > len(data):
            _need(data, pos + 3, n, "atom")
        return _make_atom(data[pos + 3 : end], pos, tag == ATOM_UTF8_EXT), end
    if tag == ATOM_CACHE_REF:
        return _cache_ref(data, pos, refs), pos + 2
    raise DecodeError(pos, f"expected an atom, found tag {tag}")


def _cache_ref(data: bytes, pos: int, refs: Sequence[Any] | None) -> Any:
    i = data[pos + 1]
    if refs is None or i >= len(refs):
        raise DecodeError(pos, f"ATOM_CACHE_REF {i} outside the distribution header's atom refs")
    return refs[i]


def _node_atom(data: bytes, pos: int, refs: Sequence[Any] | None) -> tuple[Atom, int]:
    node, pos2 = _atom_at(data, pos, refs)
    if type(node) is not Atom:  # true/false/nil as a node name: keep it an Atom
        node = Atom({True: "true", False: "false", None: "nil"}[node])
    return node, pos2


def _int_at(data: bytes, pos: int) -> tuple[int, int]:
    tag = data[pos]
    if tag == SMALL_INTEGER_EXT:
        return data[pos + 1], pos + 2
    if tag == INTEGER_EXT:
        return _i32(data, pos + 1)[0], pos + 5
    if tag == SMALL_BIG_EXT or tag == LARGE_BIG_EXT:
        v, end = _decode(data, pos, 0, None)
        return v, end
    raise DecodeError(pos, f"expected an integer, found tag {tag}")


def _tuple_head(data: bytes, pos: int, tag: int) -> tuple[int, int]:
    """At a SMALL_TUPLE_EXT or LARGE_TUPLE_EXT ``tag``: ``(arity, position of the first
    element)``, the arity checked against what is left."""
    if tag == SMALL_TUPLE_EXT:
        return data[pos + 1], pos + 2
    (n,) = _u32(data, pos + 1)
    pos += 5
    if n > len(data) - pos:
        _need(data, pos, n, "tuple")
    return n, pos


def _map_head(data: bytes, pos: int) -> tuple[int, int]:
    """At a MAP_EXT tag: ``(pairs, position of the first key)``, checked against what is left."""
    (n,) = _u32(data, pos + 1)
    pos += 5
    if n > (len(data) - pos) // 2:
        _need(data, pos, 2 * n, "map")
    return n, pos


def _decode(data: bytes, pos: int, depth: int, refs: Sequence[Any] | None) -> tuple[Any, int]:
    tag = data[pos]
    if tag == SMALL_ATOM_UTF8_EXT:
        n = data[pos + 1]
        end = pos + 2 + n
        if end > len(data):
            _need(data, pos + 2, n, "atom")
        raw = data[pos + 2 : end]
        a = _atoms_utf8.get(raw, _SENTINEL)
        if a is _SENTINEL:
            a = _make_atom(raw, pos, True)
        return a, end
    if tag == SMALL_INTEGER_EXT:
        return data[pos + 1], pos + 2
    if tag == SMALL_TUPLE_EXT or tag == LARGE_TUPLE_EXT:
        if depth >= RECURSION_DEPTH:
            return _decode_deep(data, pos, refs)
        n, pos = _tuple_head(data, pos, tag)
        depth += 1
        items: list[Any] = []
        append = items.append
        for _ in range(n):
            v, pos = _decode(data, pos, depth, refs)
            append(v)
        return tuple(items), pos
    if tag == BINARY_EXT:
        (n,) = _u32(data, pos + 1)
        end = pos + 5 + n
        if end > len(data):
            _need(data, pos + 5, n, "binary")
        return data[pos + 5 : end], end
    if tag == NIL_EXT:
        return [], pos + 1
    if tag == LIST_EXT:
        if depth >= RECURSION_DEPTH:
            return _decode_deep(data, pos, refs)
        depth += 1
        items = []
        append = items.append
        while True:  # a tail that is itself a LIST_EXT continues this list: [a | [b | T]] is [a, b | T]
            (n,) = _u32(data, pos + 1)
            pos += 5
            if n > len(data) - pos:
                _need(data, pos, n, "list")
            for _ in range(n):
                v, pos = _decode(data, pos, depth, refs)
                append(v)
            tag = data[pos]
            if tag == NIL_EXT:
                return items, pos + 1
            if tag != LIST_EXT:
                break
        tail, pos = _decode(data, pos, depth, refs)
        return _list_with_tail(items, tail), pos
    if tag == INTEGER_EXT:
        return _i32(data, pos + 1)[0], pos + 5
    if tag == STRING_EXT:
        (n,) = _u16(data, pos + 1)
        end = pos + 3 + n
        if end > len(data):
            _need(data, pos + 3, n, "string")
        return list(data[pos + 3 : end]), end
    if tag == MAP_EXT:
        if depth >= RECURSION_DEPTH:
            return _decode_deep(data, pos, refs)
        n, pos = _map_head(data, pos)
        depth += 1
        keys: list[Any] = []
        values: list[Any] = []
        kappend = keys.append
        vappend = values.append
        for _ in range(n):
            k, pos = _decode(data, pos, depth, refs)
            kappend(k)
            v, pos = _decode(data, pos, depth, refs)
            vappend(v)
        return _make_map(keys, values, pos), pos
    if tag == NEW_PID_EXT:
        node, pos = _node_atom(data, pos + 1, refs)
        pid_id, serial, creation = _u32x3(data, pos)
        return Pid(node, pid_id, serial, creation), pos + 12
    if tag == NEWER_REFERENCE_EXT or tag == NEW_REFERENCE_EXT:
        (n,) = _u16(data, pos + 1)
        if n == 0 or n > MAX_REF_WORDS:
            raise DecodeError(pos, f"reference with {n} words (1..{MAX_REF_WORDS} allowed)")
        node, pos = _node_atom(data, pos + 3, refs)
        if tag == NEWER_REFERENCE_EXT:
            (creation,) = _u32(data, pos)
            pos += 4
        else:
            creation = data[pos]
            pos += 1
        _need(data, pos, 4 * n, "reference")
        ids = struct.unpack_from(f">{n}I", data, pos)
        return Reference(node, creation, ids), pos + 4 * n
    if tag == ATOM_CACHE_REF:
        return _cache_ref(data, pos, refs), pos + 2
    if tag == NEW_FLOAT_EXT:
        f = _f64(data, pos + 1)[0]
        if f - f != 0.0:  # inf or nan: binary_to_term refuses them, Erlang has no such float
            raise DecodeError(pos, "float is not finite")
        return f, pos + 9
    if tag in (ATOM_UTF8_EXT, ATOM_EXT, SMALL_ATOM_EXT):
        return _atom_at(data, pos, refs)
    if tag == SMALL_BIG_EXT or tag == LARGE_BIG_EXT:
        if tag == SMALL_BIG_EXT:
            n = data[pos + 1]
            pos += 2
        else:
            (n,) = _u32(data, pos + 1)
            pos += 5
        sign = data[pos]
        if sign > 1:
            raise DecodeError(pos, f"bignum sign byte {sign}")
        end = pos + 1 + n
        if end > len(data):
            _need(data, pos + 1, n, "bignum")
        v = int.from_bytes(data[pos + 1 : end], "little")
        return (-v if sign else v), end
    if tag == BIT_BINARY_EXT:
        (n,) = _u32(data, pos + 1)
        bits = data[pos + 5]
        end = pos + 6 + n
        if end > len(data):
            _need(data, pos + 6, n, "bitstring")
        # As binary_to_term: Bits is 1..8, or 0 exactly when Len is 0 (the empty bitstring).
        if bits > 8 or (bits == 0) != (n == 0):
            raise DecodeError(pos, f"bitstring with {bits} bits in a last byte of {n} bytes")
        if bits == 8 or n == 0:
            return data[pos + 6 : end], end
        raw = data[pos + 6 : end - 1] + bytes([data[end - 1] & (0xFF << (8 - bits)) & 0xFF])
        return BitBinary(raw, bits), end
    if tag == PID_EXT:
        node, pos = _node_atom(data, pos + 1, refs)
        pid_id, serial = _u32x2(data, pos)
        return Pid(node, pid_id, serial, data[pos + 8]), pos + 9
    if tag == NEW_PORT_EXT or tag == PORT_EXT or tag == V4_PORT_EXT:
        node, pos = _node_atom(data, pos + 1, refs)
        if tag == NEW_PORT_EXT:
            port_id, creation = _u32x2(data, pos)
            return Port(node, port_id, creation), pos + 8
        if tag == PORT_EXT:
            (port_id,) = _u32(data, pos)
            return Port(node, port_id, data[pos + 4]), pos + 5
        (port_id,) = _u64(data, pos)
        (creation,) = _u32(data, pos + 8)
        return Port(node, port_id, creation), pos + 12
    if tag == REFERENCE_EXT:
        node, pos = _node_atom(data, pos + 1, refs)
        (rid,) = _u32(data, pos)
        return Reference(node, data[pos + 4], (rid,)), pos + 5
    if tag == EXPORT_EXT:
        mod, pos = _atom_at(data, pos + 1, refs)
        fun, pos = _atom_at(data, pos, refs)
        if data[pos] != SMALL_INTEGER_EXT:
            raise DecodeError(pos, "export arity must be a small integer")
        return Export(_as_atom(mod), _as_atom(fun), data[pos + 1]), pos + 2
    if tag == NEW_FUN_EXT:
        if depth >= RECURSION_DEPTH:
            return _decode_deep(data, pos, refs)
        head, pos = _fun_head(data, pos, refs)
        depth += 1
        free = []
        for _ in range(head[9]):
            v, pos = _decode(data, pos, depth, refs)
            free.append(v)
        return _fun_done(head, free, pos), pos
    if tag == FLOAT_EXT:
        raw = data[pos + 1 : pos + 32]
        if len(raw) < 31:
            _need(data, pos + 1, 31, "float")
        # binary_to_term accepts [+-]digits.digits[(e|E)[+-]digits] up to a NUL and nothing
        # else (no "inf", "nan", "1e3", "15", spaces); Python's float() is laxer.
        m = _FLOAT_EXT_RE.match(raw)
        f = float(m.group(1)) if m is not None else 0.0
        if m is None or f - f != 0.0:
            raise DecodeError(pos, "FLOAT_EXT is not a finite number")
        return f, pos + 32
    if tag == COMPRESSED:
        raise DecodeError(pos, "compressed term below the top level")
    if tag == VERSION:
        raise DecodeError(pos, "version byte inside a term")
    if tag == FUN_EXT:
        raise DecodeError(pos, "FUN_EXT (117) was removed from OTP; refused")
    raise DecodeError(pos, f"unknown tag {tag}")


def _list_with_tail(items: list[Any], tail: Any) -> Any:
    """``[items... | tail]`` where ``tail`` is not a LIST_EXT (those extend ``items``)."""
    if type(tail) is list:  # STRING_EXT as a tail, or NIL_EXT: the same term as a longer list
        return items + tail
    if type(tail) is ImproperList:
        return ImproperList(tuple(items) + tail.elements, tail.tail)
    if not items:
        return tail
    return ImproperList(tuple(items), tail)


def _fun_head(data: bytes, pos: int, refs: Sequence[Any] | None) -> tuple[tuple[Any, ...], int]:
    """A NEW_FUN_EXT up to its free variables: ``((start, size, arity, uniq, index, module,
    old_index, old_uniq, pid, nfree), position of the first free variable)``."""
    start = pos
    (size,) = _u32(data, pos + 1)
    if size > len(data) - pos - 1:
        _need(data, pos + 1, size, "fun")
    arity = data[pos + 5]
    uniq = data[pos + 6 : pos + 22]
    index, nfree = _u32x2(data, pos + 22)
    pos += 30
    if nfree > len(data) - pos:
        _need(data, pos, nfree, "fun free variables")
    mod, pos = _atom_at(data, pos, refs)
    old_index, pos = _int_at(data, pos)
    old_uniq, pos = _int_at(data, pos)
    if data[pos] not in (NEW_PID_EXT, PID_EXT):
        raise DecodeError(pos, "fun pid must be a pid")
    pid, pos = _decode(data, pos, 0, refs)
    return (start, size, arity, uniq, index, mod, old_index, old_uniq, pid, nfree), pos


def _fun_done(head: tuple[Any, ...], free: list[Any], pos: int) -> Fun:
    start, size, arity, uniq, index, mod, old_index, old_uniq, pid, _ = head
    if pos - start - 1 != size:
        raise DecodeError(start, f"fun claims {size} bytes but holds {pos - start - 1}")
    return Fun(arity, uniq, index, _as_atom(mod), old_index, old_uniq, pid, tuple(free))


# Kinds of the containers _decode_deep has open.
_F_TUPLE, _F_LIST, _F_TAIL, _F_MAP, _F_FUN = range(5)


def _list_tail(data: bytes, pos: int) -> tuple[int, int, int]:
    """At a LIST_EXT tag, or where a list's elements end: read the list headers that follow
    (a tail that is a LIST_EXT continues the list). Returns ``(what, pos, n)``: ``what`` 0
    when the list ended with NIL_EXT (consumed), 1 when ``n`` more elements follow, 2 when a
    tail term follows."""
    while True:
        t = data[pos]
        if t == NIL_EXT:
            return 0, pos + 1, 0
        if t != LIST_EXT:
            return 2, pos, 0
        (n,) = _u32(data, pos + 1)
        pos += 5
        if n > len(data) - pos:
            _need(data, pos, n, "list")
        if n:
            return 1, pos, n


def _decode_deep(data: bytes, pos: int, refs: Sequence[Any] | None) -> tuple[Any, int]:
    """:func:`_decode` of a container, with an explicit stack instead of recursion: what
    ``_decode`` hands over once terms nest :data:`RECURSION_DEPTH` levels deep. The same
    checks in the same order, so the same term or the same error at the same offset.
    Scalars are left to ``_decode`` (they do not nest); every container is handled here,
    so the Python stack stays flat however deep the input nests.

    The values of the open containers wait on one list, ``vals``; each open container is
    its kind, where its values start in ``vals`` and how many it takes (plain ints: no
    object per level for the garbage collector to walk, which would cost more than the
    decoding itself)."""
    vals: list[Any] = []
    kinds: list[int] = []
    starts: list[int] = []
    wants: list[int] = []
    heads: list[tuple[Any, ...]] = []  # of the open funs
    while True:
        tag = data[pos]
        if tag == SMALL_TUPLE_EXT or tag == LARGE_TUPLE_EXT:
            n, pos = _tuple_head(data, pos, tag)
            if n:
                kinds.append(_F_TUPLE)
                starts.append(len(vals))
                wants.append(n)
                continue
            value: Any = ()
        elif tag == LIST_EXT:
            what, pos, n = _list_tail(data, pos)
            if what:
                kinds.append(_F_LIST if what == 1 else _F_TAIL)
                starts.append(len(vals))
                wants.append(n if what == 1 else 1)
                continue
            value = []
        elif tag == MAP_EXT:
            n, pos = _map_head(data, pos)
            if n:
                kinds.append(_F_MAP)
                starts.append(len(vals))
                wants.append(2 * n)
                continue
            value = _make_map([], [], pos)
        elif tag == NEW_FUN_EXT:
            head, pos = _fun_head(data, pos, refs)
            if head[9]:
                kinds.append(_F_FUN)
                starts.append(len(vals))
                wants.append(head[9])
                heads.append(head)
                continue
            value = _fun_done(head, [], pos)
        else:
            value, pos = _decode(data, pos, 0, refs)  # not a container: no recursion
        vals.append(value)
        # Complete the containers this value completes.
        while kinds and len(vals) - starts[-1] == wants[-1]:
            kind = kinds[-1]
            if kind == _F_LIST:
                what, pos, n = _list_tail(data, pos)
                if what == 1:
                    wants[-1] += n
                    break
                if what == 2:  # the tail term is the list's last value
                    kinds[-1] = _F_TAIL
                    wants[-1] += 1
                    break
            kinds.pop()
            wants.pop()
            start = starts.pop()
            if kind == _F_TUPLE:
                value = tuple(vals[start:])
            elif kind == _F_LIST:
                value = vals[start:]
            elif kind == _F_MAP:
                value = _make_map(vals[start::2], vals[start + 1 :: 2], pos)
            elif kind == _F_TAIL:
                value = _list_with_tail(vals[start:-1], vals[-1])
            else:
                value = _fun_done(heads.pop(), vals[start:], pos)
            del vals[start:]
            vals.append(value)
        if not kinds:
            return vals[0], pos


#: Key types whose Python ``hash`` recurses into their elements without a depth guard
#: (CPython's tuple hash; the dataclass hashes of these hash a tuple of their fields).
_HASH_NESTED = frozenset((tuple, ImproperList, Fun))


def _too_deep_to_hash(key: Any) -> bool:
    """True when ``key`` nests tuples (improper lists, funs) more than
    :data:`MAX_HASHED_KEY_DEPTH` levels: its ``hash`` would recurse that deep on the C stack
    (CPython 3.11 crashes at ~150,000 levels). Lists and maps end the walk: a list is not
    hashable (``hash`` fails at once) and a :class:`Map` hashes without recursion. So each
    node is walked for at most one key, and the check is linear in the input."""
    if type(key) not in _HASH_NESTED:
        return False
    stack = [(key, 1)]
    while stack:
        x, d = stack.pop()
        tp = type(x)
        if tp is tuple:
            items = x
        elif tp is ImproperList:
            items = (*x.elements, x.tail)
        else:
            items = x.free_vars
        for y in items:
            if type(y) in _HASH_NESTED:
                if d >= MAX_HASHED_KEY_DEPTH:
                    return True
                stack.append((y, d + 1))
    return False


def _hashes_spread(keys: list[Any]) -> bool:
    """False when so many keys share a Python hash that a dict of them would take more
    than linear time: the pairs of keys with equal hashes outnumber the keys (a peer can
    choose integers, floats or tuples that collide; docs/WIRE.md §5.5). Unhashable keys:
    False too (the map is a :class:`Map` anyway)."""
    try:
        hashes = list(map(hash, keys))
    except TypeError:
        return False
    n = len(hashes)
    if len(set(hashes)) == n:
        return True
    return sum(c * (c - 1) // 2 for c in Counter(hashes).values()) <= n


def _make_map(keys: list[Any], values: list[Any], pos: int) -> Any:
    """The decoded map: a dict when one holds it exactly and is safe to build, else a
    :class:`Map` (terms.py). Duplicate keys (binary_to_term refuses them) are found through
    :func:`exact_key` bytes, so this is linear whatever the keys' Python hashes."""
    n = len(keys)
    if _HASH_NESTED.isdisjoint(map(type, keys)) or not any(map(_too_deep_to_hash, keys)):
        if n <= MAP_HASH_CHECK or _hashes_spread(keys):
            try:
                d = dict(zip(keys, values))
            except TypeError:  # an unhashable key (list, dict): keep the pairs
                d = None
            if d is not None and len(d) == n:
                return d
    # Keys distinct in Erlang merged in Python (1, 1.0, true; 0.0, -0.0), unhashable keys,
    # keys that collide or nest too deep, or a duplicate key.
    if len(set(map(exact_key, keys))) != n:
        raise DecodeError(pos, "map has a duplicate key")
    return Map(zip(keys, values))


def _as_atom(v: Any) -> Atom:
    if type(v) is Atom:
        return v
    return Atom({True: "true", False: "false", None: "nil"}[v])


def decode_term(
    data: bytes | bytearray | memoryview, offset: int = 0, atom_refs: Sequence[Any] | None = None
) -> tuple[Any, int]:
    """Decode one term (no version byte) starting at ``offset``; return ``(term, end)``.

    ``atom_refs`` resolves ``ATOM_CACHE_REF`` indexes (the atoms of a distribution
    header, in order). Raises :class:`DecodeError` on any malformed input.
    """
    if type(data) is not bytes:
        data = bytes(data)
    try:
        return _decode(data, offset, 0, atom_refs)
    except DecodeError:
        raise
    except (IndexError, struct.error):
        raise DecodeError(len(data), "input ends in the middle of a term") from None
    except RecursionError:  # only if the caller's own stack is already nearly exhausted
        raise DecodeError(offset, "terms nested too deeply for the current stack") from None


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode a whole external-format term (starting with the version byte 131).

    The input must hold exactly one term; trailing bytes are a :class:`DecodeError`.
    ``compressed`` terms (tag 80) are inflated, bounded by :data:`MAX_UNCOMPRESSED_SIZE`.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise DecodeError(0, "empty input")
    if data[0] != VERSION:
        raise DecodeError(0, f"expected version byte 131, found {data[0]}")
    if len(data) > 1 and data[1] == COMPRESSED:
        inflated = _inflate(data)
        try:
            term, end = decode_term(inflated, 1)
            if end != len(inflated):
                raise DecodeError(end, f"{len(inflated) - end} trailing bytes after the term")
        except DecodeError as e:
            # Offsets index the caller's input: report the compressed payload's start.
            raise DecodeError(6, f"{e.message} (at offset {e.offset} of the inflated term)") from None
        return term
    term, end = decode_term(data, 1)
    if end != len(data):
        raise DecodeError(end, f"{len(data) - end} trailing bytes after the term")
    return term


def _inflate(data: bytes) -> bytes:
    if len(data) < 6:
        raise DecodeError(len(data), "input ends in the middle of a compressed header")
    (size,) = _u32(data, 2)
    if size > MAX_UNCOMPRESSED_SIZE:
        raise DecodeError(2, f"compressed term claims {size} bytes (limit {MAX_UNCOMPRESSED_SIZE})")
    if size == 0:  # no term is empty; and max_length=0 would mean "unlimited" to zlib
        raise DecodeError(2, "compressed term claims 0 bytes")
    z = zlib.decompressobj()
    try:
        out = z.decompress(data[6:], size)
        if len(out) == size and not z.eof:
            # All output produced; the stream must end here (nothing beyond `size`).
            # Never flush(): it inflates the rest without bound (a zlib bomb).
            out += z.decompress(z.unconsumed_tail, 1)
    except zlib.error as e:
        raise DecodeError(6, f"compressed term does not inflate: {e}") from None
    if len(out) != size or not z.eof:
        raise DecodeError(6, f"compressed term inflates to {len(out)} bytes, not the {size} it claims")
    if z.unused_data:
        raise DecodeError(len(data) - len(z.unused_data), "trailing bytes after the compressed term")
    return b"\x83" + out


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------

_atom_bytes: dict[str, bytes] = {}


def _atom_enc(a: str) -> bytes:
    b = _atom_bytes.get(a)
    if b is not None:
        return b
    if len(a) > MAX_ATOM_CHARS:
        raise EncodeError(f"atom longer than {MAX_ATOM_CHARS} characters: {a[:20]!r}...")
    raw = a.encode("utf-8")
    if len(raw) < 256:
        b = bytes((SMALL_ATOM_UTF8_EXT, len(raw))) + raw
    else:
        b = bytes((ATOM_UTF8_EXT,)) + _p_u16(len(raw)) + raw
    if len(_atom_bytes) < _ATOM_TABLE_LIMIT:
        _atom_bytes[str(a)] = b
    return b


_TRUE = _atom_enc("true")
_FALSE = _atom_enc("false")
_NIL = _atom_enc("nil")


def _int_enc(v: int) -> bytes:
    if 0 <= v < 256:
        return bytes((SMALL_INTEGER_EXT, v))
    if -2147483648 <= v <= 2147483647:
        return b"b" + _p_i32(v)
    mag = -v if v < 0 else v
    n = (mag.bit_length() + 7) // 8
    digits = mag.to_bytes(n, "little")
    if n < 256:
        return bytes((SMALL_BIG_EXT, n, 1 if v < 0 else 0)) + digits
    return bytes((LARGE_BIG_EXT,)) + _p_u32(n) + bytes((1 if v < 0 else 0,)) + digits


_SMALL_INTS = [bytes((SMALL_INTEGER_EXT, i)) for i in range(256)]


def _enc(t: Any, out: bytearray, depth: int = 0) -> None:
    tp = type(t)
    if tp is Atom:
        b = _atom_bytes.get(t)
        out += b if b is not None else _atom_enc(t)
    elif tp is int:
        if 0 <= t < 256:
            out += _SMALL_INTS[t]
        else:
            out += _int_enc(t)
    elif tp is tuple:
        if depth >= RECURSION_DEPTH:
            return _enc_deep(t, out)
        _enc_tuple_head(len(t), out)
        depth += 1
        for x in t:
            _enc(x, out, depth)
    elif tp is bytes:
        out.append(BINARY_EXT)
        out += _p_u32(len(t))
        out += t
    elif tp is list:
        if _enc_flat_list(t, out):
            pass
        elif depth >= RECURSION_DEPTH:
            return _enc_deep(t, out)
        else:
            out.append(LIST_EXT)
            out += _p_u32(len(t))
            depth += 1
            for x in t:
                _enc(x, out, depth)
            out.append(NIL_EXT)
    elif tp is str:
        raw = t.encode("utf-8")
        out.append(BINARY_EXT)
        out += _p_u32(len(raw))
        out += raw
    elif tp is dict:
        if depth >= RECURSION_DEPTH:
            return _enc_deep(t, out)
        out.append(MAP_EXT)
        out += _p_u32(len(t))
        depth += 1
        for k, v in t.items():
            _enc(k, out, depth)
            _enc(v, out, depth)
    else:
        enc = _LEAF_ENCODERS.get(tp)
        if enc is not None:
            enc(t, out)
        elif tp is ImproperList or tp is Map or tp is Fun:
            if depth >= RECURSION_DEPTH:
                return _enc_deep(t, out)
            _NESTED_ENCODERS[tp](t, out, depth + 1)
        else:
            _fallback_encoder(t)(t, out)
    return None


_INT_ONLY = {int}


def _enc_tuple_head(n: int, out: bytearray) -> None:
    """SMALL_TUPLE_EXT or LARGE_TUPLE_EXT with the arity ``n``; the elements follow."""
    if n < 256:
        out.append(SMALL_TUPLE_EXT)
        out.append(n)
    else:
        out.append(LARGE_TUPLE_EXT)
        out += _p_u32(n)


def _enc_flat_list(t: list[Any], out: bytearray) -> bool:
    """Write the list ``t`` when it takes no LIST_EXT: NIL_EXT when empty, STRING_EXT when
    it is all exact ints 0..255 (bools are not) and short enough. False (nothing written)
    otherwise."""
    n = len(t)
    if n == 0:
        out.append(NIL_EXT)
        return True
    if n < 65536 and type(t[0]) is int and set(map(type, t)) == _INT_ONLY and min(t) >= 0 and max(t) < 256:
        out.append(STRING_EXT)
        out += _p_u16(n)
        out += bytes(t)
        return True
    return False


_DONE = object()


# What _enc_deep iterates for each open container.
_E_SEQ, _E_PAIRS, _E_ITER = range(3)
#: The end of an open container that has nothing after its elements
_NO_END = object()
#: The end of a list: NIL_EXT
_NIL_END = object()


class _Tail:
    """The end of an improper list: its tail, a term still to write."""

    __slots__ = ("term",)

    def __init__(self, term: Any) -> None:
        self.term = term


def _enc_deep(t: Any, out: bytearray) -> None:
    """:func:`_enc` of a container, with an explicit stack instead of recursion (what
    ``_enc`` hands over at :data:`RECURSION_DEPTH` levels). The same bytes and the same
    errors: containers are iterated as ``_enc`` iterates them (a list by index with its
    length read at each step, as a list iterator does; a dict through ``items()``); a fun
    is written in place and its size patched in when its free variables are done. Values
    that are not containers of the exact types go to ``_enc`` (subclasses through their
    conversion, which recurses on its own account).

    Each open container is four entries of parallel lists (what it is, the sequence, the
    next index, what ends it): no object per level for the garbage collector to walk."""
    kinds: list[int] = []
    seqs: list[Any] = []
    idxs: list[int] = []
    ends: list[Any] = []
    x = t
    while True:
        tp = type(x)
        if tp is tuple:
            n = len(x)
            _enc_tuple_head(n, out)
            if n:
                kinds.append(_E_SEQ)
                seqs.append(x)
                idxs.append(0)
                ends.append(_NO_END)
        elif tp is list:
            if not _enc_flat_list(x, out):
                out.append(LIST_EXT)
                out += _p_u32(len(x))
                kinds.append(_E_SEQ)
                seqs.append(x)
                idxs.append(0)
                ends.append(_NIL_END)
        elif tp is dict:
            out.append(MAP_EXT)
            out += _p_u32(len(x))
            kinds.append(_E_ITER)
            seqs.append(chain.from_iterable(x.items()))
            idxs.append(0)
            ends.append(_NO_END)
        elif tp is Map:
            items = x.items()
            if type(items) is tuple and all(type(kv) is tuple and len(kv) == 2 for kv in items):
                out.append(MAP_EXT)
                out += _p_u32(len(items))
                kinds.append(_E_PAIRS)
                seqs.append(items)
                idxs.append(0)
                ends.append(_NO_END)
            else:  # hand-made odd items: whatever _enc_map makes of them
                _enc_map(x, out)
        elif tp is ImproperList:
            els = x.elements
            out.append(LIST_EXT)
            out += _p_u32(len(els))
            kinds.append(_E_SEQ if type(els) is tuple else _E_ITER)
            seqs.append(els if type(els) is tuple else iter(els))
            idxs.append(0)
            ends.append(_Tail(x.tail))
        elif tp is Fun:
            body = _fun_prefix(x)
            out.append(NEW_FUN_EXT)
            at = len(out)
            out += b"\0\0\0\0"
            out += body
            free = x.free_vars
            kinds.append(_E_SEQ if type(free) is tuple else _E_ITER)
            seqs.append(free if type(free) is tuple else iter(free))
            idxs.append(0)
            ends.append(at)
        else:
            _enc(x, out)
        # The next value to write, closing the containers that are done.
        while kinds:
            kind = kinds[-1]
            i = idxs[-1]
            seq = seqs[-1]
            if kind == _E_SEQ:
                if i < len(seq):
                    idxs[-1] = i + 1
                    x = seq[i]
                    break
            elif kind == _E_PAIRS:
                if i < 2 * len(seq):
                    idxs[-1] = i + 1
                    x = seq[i >> 1][i & 1]
                    break
            else:
                x = next(seq, _DONE)
                if x is not _DONE:
                    break
            end = ends[-1]
            kinds.pop()
            seqs.pop()
            idxs.pop()
            ends.pop()
            if end is _NIL_END:
                out.append(NIL_EXT)
            elif type(end) is int:
                out[end : end + 4] = _p_u32(len(out) - end)
            elif end is not _NO_END:  # an improper list's tail: written next
                x = end.term
                break
        else:
            return


def _enc_bool(t: bool, out: bytearray) -> None:
    out += _TRUE if t else _FALSE


def _enc_none(t: None, out: bytearray) -> None:
    out += _NIL


def _enc_float(t: float, out: bytearray) -> None:
    if t - t != 0.0:
        raise EncodeError(f"Erlang has no float {t!r}")
    out.append(NEW_FLOAT_EXT)
    out += _p_f64(t)


def _enc_binary(t: bytes | bytearray | memoryview, out: bytearray) -> None:
    raw = bytes(t)
    out.append(BINARY_EXT)
    out += _p_u32(len(raw))
    out += raw


def _enc_bitbinary(t: BitBinary, out: bytearray) -> None:
    if t.bits == 8:
        _enc_binary(t.data, out)
        return
    out.append(BIT_BINARY_EXT)
    out += _p_u32(len(t.data))
    out.append(t.bits)
    out += t.data[:-1]
    out.append(t.data[-1] & (0xFF << (8 - t.bits)) & 0xFF)


def _enc_pid(t: Pid, out: bytearray) -> None:
    out.append(NEW_PID_EXT)
    out += _atom_enc(t.node)
    try:
        out += _p_pid(t.id, t.serial, t.creation)
    except struct.error:
        raise EncodeError(f"pid fields out of range: {bounded_repr(t, 200)}") from None


def _enc_ref(t: Reference, out: bytearray) -> None:
    n = len(t.ids)
    if not 1 <= n <= MAX_REF_WORDS:
        raise EncodeError(f"reference with {n} words: {bounded_repr(t, 200)}")
    out.append(NEWER_REFERENCE_EXT)
    out += _p_u16(n)
    out += _atom_enc(t.node)
    try:
        out += _p_u32(t.creation)
        out += struct.pack(f">{n}I", *t.ids)
    except struct.error:
        raise EncodeError(f"reference fields out of range: {bounded_repr(t, 200)}") from None


def _enc_port(t: Port, out: bytearray) -> None:
    # V4_PORT_EXT whatever the id: what OTP 26 and later always write (docs/WIRE.md §5.3).
    out.append(V4_PORT_EXT)
    out += _atom_enc(t.node)
    try:
        out += _p_u64(t.id) + _p_u32(t.creation)
    except struct.error:
        raise EncodeError(f"port fields out of range: {bounded_repr(t, 200)}") from None


def _enc_export(t: Export, out: bytearray) -> None:
    if not 0 <= t.arity < 256:
        raise EncodeError(f"export arity out of range: {bounded_repr(t, 200)}")
    out.append(EXPORT_EXT)
    out += _atom_enc(t.module)
    out += _atom_enc(t.function)
    out.append(SMALL_INTEGER_EXT)
    out.append(t.arity)


def _fun_prefix(t: Fun) -> bytearray:
    """A NEW_FUN_EXT's body up to its free variables (after the tag and the size)."""
    body = bytearray()
    if len(t.uniq) != 16:
        raise EncodeError("fun uniq must be 16 bytes")
    try:
        body.append(t.arity)
        body += t.uniq
        body += _p_u32(t.index) + _p_u32(len(t.free_vars))
    except (ValueError, struct.error):
        raise EncodeError(f"fun fields out of range: {bounded_repr(t, 80)}") from None
    body += _atom_enc(t.module)
    body += _int_enc(t.old_index)
    body += _int_enc(t.old_uniq)
    _enc_pid(t.pid, body)
    return body


def _enc_fun(t: Fun, out: bytearray, depth: int = 0) -> None:
    body = _fun_prefix(t)
    for v in t.free_vars:
        _enc(v, body, depth)
    out.append(NEW_FUN_EXT)
    out += _p_u32(len(body) + 4)
    out += body


def _enc_improper(t: ImproperList, out: bytearray, depth: int = 0) -> None:
    out.append(LIST_EXT)
    out += _p_u32(len(t.elements))
    for x in t.elements:
        _enc(x, out, depth)
    _enc(t.tail, out, depth)


def _enc_map(t: Map, out: bytearray, depth: int = 0) -> None:
    items = t.items()
    out.append(MAP_EXT)
    out += _p_u32(len(items))
    for k, v in items:
        _enc(k, out, depth)
        _enc(v, out, depth)


#: The containers among the classes of the mapping: encoded with the nesting depth.
_NESTED_ENCODERS: dict[type, Callable[[Any, bytearray, int], None]] = {
    ImproperList: _enc_improper,
    Map: _enc_map,
    Fun: _enc_fun,
}

#: The other classes of the mapping (and ``bool``, ``None``, ``float``, buffers).
_LEAF_ENCODERS: dict[type, Callable[[Any, bytearray], None]] = {
    bool: _enc_bool,
    type(None): _enc_none,
    float: _enc_float,
    bytearray: _enc_binary,
    memoryview: _enc_binary,
    BitBinary: _enc_bitbinary,
    Pid: _enc_pid,
    Reference: _enc_ref,
    Port: _enc_port,
    Export: _enc_export,
}

#: Every class's encoder by exact type (the C accelerator hands odd values to these).
_ENCODERS: dict[type, Callable[..., None]] = {**_LEAF_ENCODERS, **_NESTED_ENCODERS}


def _fallback_encoder(t: Any) -> Callable[[Any, bytearray], None]:
    """Subclasses of the supported types (IntEnum, OrderedDict, namedtuple, ...)."""
    if isinstance(t, Atom):
        return lambda v, out: _enc(Atom(str(v)), out)
    if isinstance(t, bool):
        return _enc_bool
    if isinstance(t, int):
        return lambda v, out: _enc(int(v), out)
    if isinstance(t, float):
        return lambda v, out: _enc_float(float(v), out)
    if isinstance(t, str):
        return lambda v, out: _enc(str(v), out)
    if isinstance(t, (bytes, bytearray, memoryview)):
        return _enc_binary
    if isinstance(t, tuple):
        return lambda v, out: _enc(tuple(v), out)
    if isinstance(t, list):
        return lambda v, out: _enc(list(v), out)
    if isinstance(t, dict):
        return lambda v, out: _enc(dict(v), out)
    raise EncodeError(f"cannot encode {type(t).__name__} as an Erlang term: {bounded_repr(t, 80)}")


def encode_term(term: Any) -> bytes:
    """Encode ``term`` without the version byte (for distribution headers)."""
    out = bytearray()
    try:
        _enc(term, out)
    except RecursionError:  # only through subclasses' conversions (namedtuple in namedtuple ...)
        raise EncodeError("term nested too deeply to encode (through conversions of subclasses)") from None
    except UnicodeEncodeError as e:  # lone surrogates in a str or Atom
        raise EncodeError(f"text is not encodable as UTF-8: {e}") from None
    return bytes(out)


def encode(term: Any) -> bytes:
    """Encode ``term`` as the canonical bytes of ``term_to_binary(T, [{minor_version, 2}])``."""
    out = bytearray(b"\x83")
    try:
        _enc(term, out)
    except RecursionError:  # only through subclasses' conversions (namedtuple in namedtuple ...)
        raise EncodeError("term nested too deeply to encode (through conversions of subclasses)") from None
    except UnicodeEncodeError as e:  # lone surrogates in a str or Atom
        raise EncodeError(f"text is not encodable as UTF-8: {e}") from None
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Optional C accelerator (erl_interop/_speedups.c). Added by the codec-speedups helper;
# keep this block last: it rebinds the recursive cores that every entry point above (and
# erl_interop.connection, which imports them by name after this module has run) call.
# ---------------------------------------------------------------------------------------

#: The pure-Python cores, always available (the C module falls back to them for inputs it
#: does not take, and tests compare against them).
_py_decode = _decode
_py_enc = _enc

#: True when ``_decode``/``_enc`` are the C versions from ``erl_interop._speedups``. Set
#: ``ERL_INTEROP_PURE=1`` (any value but empty or ``0``) to keep the pure-Python codec.
ACCELERATED = False


try:
    from . import _speedups  # typed by _speedups.pyi
except ImportError:  # not built (optional extension): pure Python
    _SPEEDUPS_BUILT = False
else:
    _SPEEDUPS_BUILT = True


def _accelerate() -> bool:
    if not _SPEEDUPS_BUILT or os.environ.get("ERL_INTEROP_PURE", "") not in ("", "0"):
        return False
    _speedups.init(globals())
    globals().update(_decode=_speedups.decode_at, _enc=_speedups.encode_into)
    return True


ACCELERATED = _accelerate()
