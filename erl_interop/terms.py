"""Python types for Erlang terms that have no exact Python counterpart.

The mapping (README.md, "Terms") is injective: two distinct Erlang terms never decode to
the same Python value, so ``encode(decode(b)) == b`` for canonical bytes ``b``.

=====================  ==========================================================
Erlang                 Python
=====================  ==========================================================
atom                   :class:`Atom` (a ``str`` subclass); ``true``/``false`` -> ``bool``;
                       ``nil`` -> ``None``
integer                ``int``
float                  ``float``
binary                 ``bytes`` (``bytearray``/``memoryview`` also encode as binaries)
bitstring              :class:`BitBinary` when the last byte is partial
tuple                  ``tuple``
proper list            ``list`` (``STRING_EXT`` decodes to a list of ints)
improper list          :class:`ImproperList`
map                    ``dict``; :class:`Map` when keys would merge in a dict
                       (``1``/``1.0``/``true``, ``0.0``/``-0.0``), are unhashable (lists,
                       maps), or a dict would be slow or unsafe to build (many keys
                       sharing one Python hash; keys nested too deep to hash), see
                       ``docs/WIRE.md`` §5.5
pid / ref / port       :class:`Pid` / :class:`Reference` / :class:`Port`
``fun M:F/A``          :class:`Export`
closure                :class:`Fun` (opaque, re-encodes byte-exact)
=====================  ==========================================================

A Python ``str`` encodes as a UTF-8 binary (an Elixir string); it never decodes back as
``str``. Term types are frozen and slotted; they compare and hash by value.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Iterable, Iterator

__all__ = [
    "Atom",
    "BitBinary",
    "ImproperList",
    "Map",
    "Pid",
    "Reference",
    "Port",
    "Export",
    "Fun",
]


class Atom(str):
    """An Erlang atom. Compares equal to the ``str`` of its text (it *is* a ``str``),
    but encodes as an atom, while a plain ``str`` encodes as a binary."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose last byte is partial: ``bits`` (1..7) high bits of the last byte
    of ``data`` are used. ``<<1, 2:3>>`` is ``BitBinary(b"\\x01\\x40", 3)``."""

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError("bits must be 1..8")
        if not self.data:
            raise ValueError("a BitBinary needs at least one byte")


@dataclass(frozen=True, slots=True)
class ImproperList:
    """A list whose tail is not ``[]``: ``[a, b | tail]`` is
    ``ImproperList((Atom('a'), Atom('b')), tail)``. ``[alias | Ref]`` reply tags use it."""

    elements: tuple[Any, ...]
    tail: Any

    def __post_init__(self) -> None:
        if not isinstance(self.elements, tuple):
            object.__setattr__(self, "elements", tuple(self.elements))
        if not self.elements:
            raise ValueError("an improper list needs at least one element")
        if isinstance(self.tail, list):
            raise ValueError("the tail of an ImproperList must not be a list")

    def __iter__(self) -> Iterator[Any]:
        return iter(self.elements)

    def __len__(self) -> int:
        return len(self.elements)


class Map:
    """An Erlang map kept as ordered (key, value) pairs.

    Decoding yields a ``dict`` whenever one represents the map exactly and can be built
    safely. ``Map`` is used instead when the keys would collide in a ``dict`` (``1``,
    ``1.0`` and ``true`` are three keys in Erlang, one in Python; so are ``0.0`` and
    ``-0.0`` since OTP 27), cannot be hashed (lists, maps as keys), share one Python hash
    in large numbers (building the dict would take quadratic time), or nest tuples too
    deep for Python's ``hash`` (which recurses on the C stack). Lookups use exact Erlang
    equality (type-aware), not Python's, and are linear.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[Any, Any]] = ()) -> None:
        self._items: tuple[tuple[Any, Any], ...] = tuple((k, v) for k, v in items)

    def items(self) -> tuple[tuple[Any, Any], ...]:
        return self._items

    def keys(self) -> list[Any]:
        return [k for k, _ in self._items]

    def values(self) -> list[Any]:
        return [v for _, v in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return (k for k, _ in self._items)

    def __getitem__(self, key: Any) -> Any:
        for k, v in self._items:
            if exact_equal(k, key):
                return v
        raise KeyError(key)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: Any) -> bool:
        return any(exact_equal(k, key) for k, _ in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Map):
            return NotImplemented
        return exact_equal(self, other)

    def __hash__(self) -> int:
        # Consistent with exact_equal. exact_key is bytes (hashed with the randomized
        # bytes hash, built without recursion): a constant hash, or one a peer can make
        # collide, made a map keyed by many Maps quadratic to build (a hang on hostile input).
        return hash(exact_key(self))

    def __repr__(self) -> str:
        return f"Map({list(self._items)!r})"


def exact_equal(a: Any, b: Any) -> bool:
    """Erlang's ``=:=``: like ``==`` but ``1 != 1.0 != true``, a tuple is not a list, and
    ``0.0`` is not ``-0.0`` (as in OTP 27 and later; docs/WIRE.md §5.5). Types are compared
    exactly (an :class:`Atom` never equals a ``str``, a ``dict`` never a :class:`Map`).

    Iterative, so terms of any depth compare; maps are matched through :func:`exact_key`."""
    stack = [(a, b)]
    pop = stack.pop
    push = stack.append
    while stack:
        a, b = pop()
        ta = type(a)
        if ta is not type(b):
            # Atom and str are both str subclasses: an Atom equals only an Atom.
            return False
        if ta is tuple or ta is list:
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b))
        elif ta is dict or ta is Map:
            if len(a) != len(b):
                return False
            pairs = _match_items(a, b)
            if pairs is None:
                return False
            stack.extend(pairs)
        elif ta is ImproperList:
            push((a.tail, b.tail))
            push((a.elements, b.elements))
        elif ta is Fun:
            stack.extend(zip(_fun_fields(a), _fun_fields(b)))
        elif ta is float:
            if not (a == b and (a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b))):
                return False
        elif not a == b:
            return False
    return True


def _fun_fields(f: Any) -> tuple[Any, ...]:
    return (f.arity, f.uniq, f.index, f.module, f.old_index, f.old_uniq, f.pid, f.free_vars)


def _match_items(a: Any, b: Any) -> list[tuple[Any, Any]] | None:
    """The (value of a, value of b) pairs under equal keys, or None when the keys differ.
    Linear through :func:`exact_key`; maps with a repeated key (only a hand-built
    :class:`Map` can hold one) or keys that have no :func:`exact_key` bytes are matched
    pair by pair instead."""
    try:
        index: dict[Any, Any] = {}
        for k, v in b.items():
            ek = exact_key(k)
            if ek in index:
                return _match_items_slowly(a, b)
            index[ek] = v
        out = []
        for k, v in a.items():
            vb = index.pop(exact_key(k), _NO_VALUE)
            if vb is _NO_VALUE:
                return None  # a key b lacks (or a key repeated in a: unequal too)
            out.append((v, vb))
        return out
    except TypeError:  # a key whose fallback exact_key is unhashable
        return _match_items_slowly(a, b)


def _match_items_slowly(a: Any, b: Any) -> list[tuple[Any, Any]] | None:
    rest = list(b.items())
    for ka, va in a.items():
        for i, (kb, vb) in enumerate(rest):
            if exact_equal(ka, kb) and exact_equal(va, vb):
                del rest[i]
                break
        else:
            return None
    return []


_NO_VALUE = object()


def exact_key(t: Any) -> Any:
    """A hashable key such that ``exact_equal(a, b)`` implies ``exact_key(a) == exact_key(b)``
    and distinct Erlang terms (``1``, ``1.0``, ``true``; ``0.0`` and ``-0.0``; a tuple and a
    list) get distinct keys. Used to find duplicate map keys and to hash :class:`Map`.

    For values of the mapping's types it is ``bytes``: a type-tagged serialization in which
    each map contributes the sorted BLAKE2b digests of its items, so it is built in one
    iterative pass (any depth, linear time) and hashes with Python's randomized ``bytes``
    hash, which a peer cannot make collide (the keys' own hashes it can: docs/WIRE.md §5.5).
    Values of other types (subclasses, arbitrary objects) get a nested tuple instead."""
    tp = type(t)
    if tp is Atom:  # the common map keys, without the walk below
        raw = t.encode("utf-8", "surrogatepass")
        return b"a" + _p_u32(len(raw)) + raw
    if tp is bytes:
        return b"b" + _p_u32(len(t)) + t
    if tp is int:
        raw = t.to_bytes((t.bit_length() + 8) // 8, "little", signed=True)
        return b"i" + _p_u32(len(raw)) + raw
    try:
        return _key_bytes(t)
    except _Opaque:
        return _key_tuple(t)


class _Opaque(Exception):
    """A value outside the mapping's types: :func:`exact_key` falls back to tuples."""


_p_u32 = struct.Struct(">I").pack
_p_f64 = struct.Struct(">d").pack
_ITEM = object()  # markers on the walk's stack (never terms)
_ITEM_END = object()
_MAP_END = object()
_SCALAR_TAGS = {True: b"T", False: b"F", None: b"N"}


def _key_bytes(t: Any) -> bytes:
    out = bytearray()
    sinks = [out]  # where bytes go: the output, or the item of a map being serialized
    digests: list[list[bytes]] = []  # per map in progress, its items' digests
    todo = [t]
    pop = todo.pop
    push = todo.append
    while todo:
        x = pop()
        tp = type(x)
        sink = sinks[-1]
        if tp is Atom or tp is str:
            raw = x.encode("utf-8", "surrogatepass")
            sink += (b"a" if tp is Atom else b"s") + _p_u32(len(raw))
            sink += raw
        elif tp is int:
            raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
            sink += b"i" + _p_u32(len(raw))
            sink += raw
        elif tp is bytes or tp is bytearray or tp is memoryview:
            raw = bytes(x)
            sink += b"b" + _p_u32(len(raw))
            sink += raw
        elif tp is tuple or tp is list:
            sink += (b"(" if tp is tuple else b"[") + _p_u32(len(x))
            todo.extend(reversed(x))
        elif tp is float:
            sink += b"f" + _p_f64(x)
        elif tp is bool or x is None:
            sink += _SCALAR_TAGS[x]
        elif tp is dict or tp is Map:
            items = x.items()
            sink += (b"{" if tp is dict else b"M") + _p_u32(len(items))
            push(_MAP_END)
            digests.append([])
            for kv in items:
                if type(kv) is not tuple or len(kv) != 2:
                    raise _Opaque
                todo += (_ITEM_END, kv[1], kv[0], _ITEM)
        elif tp is object:  # one of the markers
            if x is _ITEM:
                sinks.append(bytearray())
            elif x is _ITEM_END:
                digests[-1].append(hashlib.blake2b(sinks.pop(), digest_size=16).digest())
            else:
                ds = digests.pop()
                ds.sort()
                sink += b"".join(ds)
        elif tp is ImproperList:
            els = x.elements
            if type(els) is not tuple:
                raise _Opaque
            sink += b"|" + _p_u32(len(els))
            push(x.tail)
            todo.extend(reversed(els))
        elif tp in _RECORD_TAGS:
            sink += _RECORD_TAGS[tp]
            todo.extend(reversed(_RECORD_FIELDS[tp](x)))
        else:
            raise _Opaque
    return bytes(out)


def _key_tuple(t: Any) -> Any:
    """The fallback of :func:`exact_key` for values outside the mapping (recursive)."""
    tp = type(t)
    if tp is tuple or tp is list:
        return (tp.__name__, tuple(map(_key_tuple, t)))
    if tp is dict or tp is Map:
        return ("map", frozenset((_key_tuple(k), _key_tuple(v)) for k, v in t.items()))
    if tp is ImproperList:
        return ("improper", _key_tuple(t.elements), _key_tuple(t.tail))
    if tp is Fun:
        return ("fun", t.arity, t.uniq, t.index, t.module, t.old_index, t.old_uniq, t.pid,
                _key_tuple(t.free_vars))
    if tp is bytearray or tp is memoryview:
        return ("bytes", bytes(t))
    if tp is float:  # 0.0 and -0.0 are distinct terms (OTP 27+)
        return ("float", _p_f64(t))
    # Other scalars (int, bool, Atom, bytes, pids, subclasses, ...): tagging with the type
    # keeps 1, 1.0 and True apart.
    return (tp.__name__, t)


@dataclass(frozen=True, slots=True)
class Pid:
    """An Erlang pid: ``<node.id.serial>`` with the node's 32-bit creation."""

    node: Atom
    id: int
    serial: int
    creation: int

    def __repr__(self) -> str:
        return f"Pid({self.node!s}, {self.id}, {self.serial}, creation={self.creation})"

    def __str__(self) -> str:
        return f"<{self.node}.{self.id}.{self.serial}>"


@dataclass(frozen=True, slots=True)
class Reference:
    """An Erlang reference: up to 5 32-bit words (``ids``, as on the wire) plus node and creation."""

    node: Atom
    creation: int
    ids: tuple[int, ...]

    def __repr__(self) -> str:
        return f"Reference({self.node!s}, {self.creation}, {self.ids})"

    def __str__(self) -> str:
        return "#Ref<" + self.node + "." + ".".join(str(i) for i in reversed(self.ids)) + ">"


@dataclass(frozen=True, slots=True)
class Port:
    """An Erlang port identifier."""

    node: Atom
    id: int
    creation: int


@dataclass(frozen=True, slots=True)
class Export:
    """``fun Module:Function/Arity``."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True)
class Fun:
    """A closure (``NEW_FUN_EXT``). Opaque to Python: it can be passed back to the BEAM
    unchanged, and re-encodes to the bytes it was decoded from."""

    arity: int
    uniq: bytes
    index: int
    module: Atom
    old_index: int
    old_uniq: int
    pid: Pid
    free_vars: tuple[Any, ...]


#: :func:`exact_key`'s tags for the record-like term types, and how to read their fields
_RECORD_TAGS: dict[type, bytes] = {Pid: b"P", Reference: b"R", Port: b"O", Export: b"E", BitBinary: b"B", Fun: b"U"}
_RECORD_FIELDS: dict[type, Any] = {
    Pid: attrgetter("node", "id", "serial", "creation"),
    Reference: attrgetter("node", "creation", "ids"),
    Port: attrgetter("node", "id", "creation"),
    Export: attrgetter("module", "function", "arity"),
    BitBinary: attrgetter("data", "bits"),
    Fun: _fun_fields,
}
