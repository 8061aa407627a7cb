"""Bounded text for terms that came off the wire: error messages and log lines.

A peer decides how big and how deep the terms it sends are (an 8 MB binary, a 5000-digit
integer, a tuple nested a million levels). Python's ``repr`` of such a term is as big as
the term, raises ``ValueError`` beyond 4300 digits (``sys.set_int_max_str_digits``) and
``RecursionError`` beyond about a thousand levels. Nothing the node writes about a term may
depend on that (docs/WIRE.md §5.5):

- :func:`bounded_repr` renders at most ``limit`` characters of any value, walking
  containers with an explicit stack and stopping as soon as the budget is spent, so its
  cost is bounded by the limit, not by the term. It never raises.
- :class:`BoundedArgs`, a :class:`logging.Filter`, replaces the ``%``-arguments of every
  record with bounded stand-ins (and truncates an exception's traceback text); every
  logger of ``erl_interop`` and ``pynode`` carries it (:func:`bounded_logger`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Iterator

from .terms import ImproperList, Map

__all__ = ["bounded_repr", "bounded_text", "BoundedArgs", "bounded_logger", "ARG_LIMIT", "TRACEBACK_LIMIT"]

#: Characters of one ``%``-argument of a log record, at most (then a marker).
ARG_LIMIT = 4000
#: Characters of a record's traceback text, at most.
TRACEBACK_LIMIT = 16000

#: What ends a cut text.
MARKER = "...<truncated>"

#: Integers with more bits than this are described, not written out (Python refuses to
#: write one of more than 4300 digits, about 14000 bits).
_INT_BITS = 4000


class _Raw(str):
    """A piece of punctuation to emit as it is (a plain ``str`` is a term: it gets a repr)."""

    __slots__ = ()


_OPEN_T, _CLOSE_T, _CLOSE_T1 = _Raw("("), _Raw(")"), _Raw(",)")
_OPEN_L, _CLOSE_L = _Raw("["), _Raw("]")
_OPEN_D, _CLOSE_D = _Raw("{"), _Raw("}")
_SEP, _COLON = _Raw(", "), _Raw(": ")


def _seq(items: Any, open_: str, close: str) -> Iterator[Any]:
    yield open_
    for i, x in enumerate(items):
        if i:
            yield _SEP
        yield x
    yield close


def _pairs(items: Any, open_: str, close: str, pair_open: str = "", pair_sep: str = ": ", pair_close: str = "") -> Iterator[Any]:
    yield _Raw(open_)
    for i, kv in enumerate(items):
        if i:
            yield _SEP
        try:
            k, v = kv
        except (TypeError, ValueError):
            yield kv
            continue
        if pair_open:
            yield _Raw(pair_open)
        yield k
        yield _Raw(pair_sep)
        yield v
        if pair_close:
            yield _Raw(pair_close)
    yield _Raw(close)


def _fields(obj: Any) -> Iterator[Any]:
    yield _Raw(type(obj).__name__ + "(")
    first = True
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        if not first:
            yield _SEP
        first = False
        yield _Raw(f.name + "=")
        yield getattr(obj, f.name, None)
    yield _Raw(")")


def _dataclass_repr(obj: Any) -> bool:
    """True for an instance whose class uses the repr dataclasses generated (fields shown
    one by one), False for one with a repr of its own (Pid, Reference, Atom, ...)."""
    cls = type(obj)
    return dataclasses.is_dataclass(cls) and hasattr(cls.__repr__, "__wrapped__")


def _leaf(x: Any, room: int) -> str:
    """The repr of a value that is not walked, cut to about ``room`` characters."""
    tp = type(x)
    if tp is int or tp is bool:
        if x.bit_length() > _INT_BITS:
            return f"<{'-' if x < 0 else ''}integer of {x.bit_length()} bits>"
        return repr(x)
    if isinstance(x, (str, bytes, bytearray)):
        if len(x) > room:
            # the repr of a prefix: at most 4 characters per character or byte
            return repr(x[: max(room, 1)]) + f"<{len(x)} {'bytes' if not isinstance(x, str) else 'chars'} in all>"
        return repr(x)
    if tp is memoryview:
        return _leaf(x.tobytes()[: room + 1], room)
    try:
        r = repr(x)
    except Exception as e:  # ValueError for huge ints in a custom repr, RecursionError, ...
        r = f"<{tp.__name__} whose repr raised {type(e).__name__}>"
    return r


def bounded_repr(obj: Any, limit: int = ARG_LIMIT) -> str:
    """``repr(obj)`` cut to at most ``limit`` characters (plus :data:`MARKER` when cut).

    Tuples, lists, dicts, :class:`~erl_interop.terms.Map`, :class:`ImproperList` and
    dataclass instances (control messages, :class:`~erl_interop.terms.Fun`, ...) are walked
    lazily; strings and binaries are sliced before they are repr'd; integers too long to
    write are described by their size. Never raises, whatever ``obj`` is."""
    out: list[str] = []
    size = 0
    stack: list[Iterator[Any]] = [iter((obj,))]
    try:
        while stack:
            if size > limit:
                break
            x: Any = next(stack[-1], _END)
            if x is _END:
                stack.pop()
                continue
            tp = type(x)
            if tp is _Raw:
                piece: str = x
            elif tp is tuple:
                stack.append(_seq(x, _OPEN_T, _CLOSE_T1 if len(x) == 1 else _CLOSE_T))
                continue
            elif tp is list:
                stack.append(_seq(x, _OPEN_L, _CLOSE_L))
                continue
            elif tp is dict:
                stack.append(_pairs(x.items(), "{", "}"))
                continue
            elif tp is Map:
                stack.append(_pairs(x.items(), "Map([", "])", "(", ", ", ")"))
                continue
            elif tp is ImproperList:
                stack.append(_improper(x))
                continue
            elif _dataclass_repr(x):
                stack.append(_fields(x))
                continue
            else:
                piece = _leaf(x, limit - size)
            out.append(piece)
            size += len(piece)
    except Exception as e:  # a container whose iteration fails (mutated, odd subclass)
        out.append(f"<repr failed: {type(e).__name__}>")
        size = sum(map(len, out))
    text = "".join(out)
    if size > limit or stack:
        return text[:limit] + MARKER
    return text


def _improper(x: ImproperList) -> Iterator[Any]:
    yield _Raw("ImproperList(")
    yield x.elements
    yield _SEP
    yield x.tail
    yield _Raw(")")


_END = object()


def bounded_text(text: str, limit: int) -> str:
    """``text`` when it is at most ``limit`` characters; else its head and its tail (three
    quarters and one quarter of ``limit``) around a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    return f"{text[:head]}...<{len(text) - head - tail} characters left out>...{text[len(text) - tail:]}"


class _Bounded:
    """A log argument's stand-in: ``%r`` and ``%s`` give bounded text, computed only when
    the record is formatted."""

    __slots__ = ("obj", "limit")

    def __init__(self, obj: Any, limit: int) -> None:
        self.obj = obj
        self.limit = limit

    def __repr__(self) -> str:
        return bounded_repr(self.obj, self.limit)

    def __str__(self) -> str:
        obj = self.obj
        tp = type(obj)
        if isinstance(obj, str):
            return bounded_text(str.__str__(obj), self.limit)
        own_str: Any = tp.__str__
        if tp in _WALKED or own_str is object.__str__ or _dataclass_repr(obj):
            return bounded_repr(obj, self.limit)
        try:
            return bounded_text(str(obj), self.limit)
        except Exception as e:
            return f"<{tp.__name__} whose str raised {type(e).__name__}>"


_WALKED = (tuple, list, dict, Map, ImproperList, bytes, bytearray)  # str() of these is (like) their repr


def _bound(arg: Any, limit: int) -> Any:
    tp = type(arg)
    if tp is float or arg is None or tp is bool:
        return arg
    if tp is int:
        return arg if arg.bit_length() <= _INT_BITS else _Bounded(arg, limit)
    if isinstance(arg, str) and len(arg) <= limit:
        return arg
    return _Bounded(arg, limit)


class BoundedArgs(logging.Filter):
    """Bounds what a record can write: each ``%``-argument is replaced by a stand-in whose
    ``%r``/``%s`` is at most ``arg_limit`` characters (numbers and short strings are kept
    as they are, so ``%d`` still works), a message that is not a string is bounded the same
    way, and the traceback text of ``exc_info`` is cut to ``traceback_limit`` characters
    (head and tail). Records are never dropped."""

    _formatter = logging.Formatter()

    def __init__(self, arg_limit: int = ARG_LIMIT, traceback_limit: int = TRACEBACK_LIMIT) -> None:
        super().__init__()
        self.arg_limit = arg_limit
        self.traceback_limit = traceback_limit

    def filter(self, record: logging.LogRecord) -> bool:
        limit = self.arg_limit
        args = record.args
        if args:
            if isinstance(args, tuple):
                record.args = tuple(_bound(a, limit) for a in args)
            elif isinstance(args, Mapping):
                record.args = {k: _bound(v, limit) for k, v in args.items()}
        msg = record.msg
        if not isinstance(msg, str):
            record.msg = _Bounded(msg, limit)
        elif not args and len(msg) > limit:
            record.msg = bounded_text(msg, limit)
        if record.exc_info and not record.exc_text:
            try:
                text = self._formatter.formatException(record.exc_info)
            except Exception as e:  # the exception's own __str__ failed
                text = f"<traceback could not be formatted: {type(e).__name__}>"
            record.exc_text = bounded_text(text, self.traceback_limit)
        return True


_FILTER = BoundedArgs()


def bounded_logger(logger: logging.Logger) -> logging.Logger:
    """``logger`` with :class:`BoundedArgs` attached (once): how every module of
    ``erl_interop`` and ``pynode`` makes its ``log``."""
    if not any(isinstance(f, BoundedArgs) for f in logger.filters):
        logger.addFilter(_FILTER)
    return logger
