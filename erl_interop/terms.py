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
                       (``1``/``1.0``/``true``) or are unhashable (lists, maps)
pid / ref / port       :class:`Pid` / :class:`Reference` / :class:`Port`
``fun M:F/A``          :class:`Export`
closure                :class:`Fun` (opaque, re-encodes byte-exact)
=====================  ==========================================================

A Python ``str`` encodes as a UTF-8 binary (an Elixir string); it never decodes back as
``str``. Term types are frozen and slotted; they compare and hash by value.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    Decoding yields a ``dict`` whenever one represents the map exactly. ``Map`` is used
    instead when the keys would collide in a ``dict`` (``1``, ``1.0`` and ``true`` are
    three keys in Erlang, one in Python) or cannot be hashed (lists, maps as keys).
    Lookups use exact Erlang equality (type-aware), not Python's.
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
        # Consistent with exact_equal; a constant hash made a map keyed by many Maps
        # quadratic to build (a hang on hostile input).
        return hash(exact_key(self))

    def __repr__(self) -> str:
        return f"Map({list(self._items)!r})"


def exact_equal(a: Any, b: Any) -> bool:
    """Erlang's ``=:=``: like ``==`` but ``1 != 1.0 != true`` and a tuple is not a list."""
    ta, tb = type(a), type(b)
    if ta is not tb:
        # Atom and str are both str subclasses: an Atom equals only an Atom.
        return False
    if ta is tuple or ta is list:
        return len(a) == len(b) and all(exact_equal(x, y) for x, y in zip(a, b))
    if ta is dict:
        if len(a) != len(b):
            return False
        for (ka, va), (kb, vb) in zip(sorted_items(a), sorted_items(b)):
            if not (exact_equal(ka, kb) and exact_equal(va, vb)):
                return False
        return True
    if ta is Map:
        if len(a) != len(b):
            return False
        rest = list(b.items())
        for ka, va in a.items():
            for i, (kb, vb) in enumerate(rest):
                if exact_equal(ka, kb) and exact_equal(va, vb):
                    del rest[i]
                    break
            else:
                return False
        return True
    if ta is ImproperList:
        return exact_equal(a.elements, b.elements) and exact_equal(a.tail, b.tail)
    if ta is float:
        # -0.0 and 0.0 are distinct terms in OTP 27+, equal in 25; keep Python's view.
        return bool(a == b)
    return bool(a == b)


def exact_key(t: Any) -> Any:
    """A hashable key such that ``exact_equal(a, b)`` implies ``exact_key(a) == exact_key(b)``
    and distinct Erlang terms (``1``, ``1.0``, ``true``; tuple vs list) get distinct keys.
    Used to find duplicate map keys and to hash :class:`Map` in linear time."""
    tp = type(t)
    if tp is tuple or tp is list:
        return (tp.__name__, tuple(map(exact_key, t)))
    if tp is dict or tp is Map:
        return ("map", frozenset((exact_key(k), exact_key(v)) for k, v in t.items()))
    if tp is ImproperList:
        return ("improper", exact_key(t.elements), exact_key(t.tail))
    if tp is Fun:
        return ("fun", t.arity, t.uniq, t.index, t.module, t.old_index, t.old_uniq, t.pid,
                exact_key(t.free_vars))
    if tp is bytearray or tp is memoryview:
        return ("bytes", bytes(t))
    # Scalars (int, float, bool, Atom, bytes, pids, ...): tagging with the type keeps
    # 1, 1.0 and True apart; 0.0 and -0.0 share a key, as they are =:= in OTP 25.
    return (tp.__name__, t)


def sorted_items(d: dict[Any, Any]) -> list[tuple[Any, Any]]:
    # Order by (type name, repr) so that maps with equal keys line up; only used by
    # exact_equal, never on a hot path.
    return sorted(d.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))


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
