"""Read ``sys.config``, the cluster configuration both sides share.

The file is Erlang term text: ``[{App, [{Key, Value}, ...]}, ...].`` pynode reads the
``available_processes`` application's environment (the OTP application of ``mix_compat``)
and returns it as a ``dict`` with ``str`` keys, e.g. ``{"connect": [...], "result_ttl": ...}``.
Nodes to connect to at start may be given as ``{connect, [n1@localhost, ...]}`` there, or as
kernel's ``sync_nodes_optional``.

The parser handles what config files contain: atoms (bare and quoted), integers (with
``_`` and ``Base#Digits``), floats, strings, binaries of strings, tuples, lists, maps,
comments. It is not an Erlang evaluator: no expressions, no records.
"""

from __future__ import annotations

import re
from typing import Any

from erl_interop.terms import Atom

__all__ = ["load_config", "parse_terms", "ConfigError", "APP"]

APP = "available_processes"


class ConfigError(ValueError):
    """The file is not valid term text; the message names line and column."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|%[^\n]*)
  | (?P<float>-?\d[\d_]*\.\d[\d_]*(?:[eE][+-]?\d+)?)
  | (?P<int>-?\d+\#[0-9a-zA-Z_]+|-?\d[\d_]*)
  | (?P<char>\$(?:\\.|.))
  | (?P<string>"(?:\\.|[^"\\])*")
  | (?P<qatom>'(?:\\.|[^'\\])*')
  | (?P<atom>[a-z][A-Za-z0-9_@.]*)
  | (?P<punct><<|>>|=>|[{}\[\],|.#])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESC = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "e": "\x1b", "0": "\0", "\\": "\\", '"': '"', "'": "'", "b": "\b", "f": "\f", "v": "\v", "d": "\x7f"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), m.group(1)), s)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ConfigError(f"unexpected {text[pos]!r} at line {line}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, m.group(), pos))
        pos = m.end()
    return out


def parse_terms(text: str) -> list[Any]:
    """Parse ``Term. Term. ...`` (a ``file:consult/1`` file) into Python terms."""
    toks = _tokens(text)
    i = 0
    result = []

    def where(k: int) -> str:
        p = toks[k][2] if k < len(toks) else len(text)
        return f"line {text.count(chr(10), 0, p) + 1}"

    def expect(v: str) -> None:
        nonlocal i
        if i >= len(toks) or toks[i][1] != v:
            raise ConfigError(f"expected {v!r} at {where(i)}")
        i += 1

    def seq(close: str) -> list[Any]:
        nonlocal i
        items: list[Any] = []
        if i < len(toks) and toks[i][1] == close:
            i += 1
            return items
        while True:
            items.append(term())
            if i < len(toks) and toks[i][1] == ",":
                i += 1
                continue
            expect(close)
            return items

    def term() -> Any:
        nonlocal i
        if i >= len(toks):
            raise ConfigError("unexpected end of file")
        kind, v, _ = toks[i]
        i += 1
        if kind == "int":
            if "#" in v:
                base, digits = v.split("#", 1)
                neg = base.startswith("-")
                n = int(digits.replace("_", ""), int(base.lstrip("-")))
                return -n if neg else n
            return int(v.replace("_", ""))
        if kind == "float":
            return float(v.replace("_", ""))
        if kind == "char":
            return ord(_unescape(v[1:]))
        if kind == "string":
            s = _unescape(v[1:-1])
            while i < len(toks) and toks[i][0] == "string":  # adjacent strings concatenate
                s += _unescape(toks[i][1][1:-1])
                i += 1
            return [ord(c) for c in s]
        if kind in ("atom", "qatom"):
            a = v if kind == "atom" else _unescape(v[1:-1])
            return {"true": True, "false": False, "nil": None}.get(a, Atom(a)) if kind == "atom" else Atom(a)
        if v == "{":
            return tuple(seq("}"))
        if v == "[":
            if i < len(toks) and toks[i][1] == "]":
                i += 1
                return []
            items = [term()]
            while i < len(toks) and toks[i][1] == ",":
                i += 1
                items.append(term())
            if i < len(toks) and toks[i][1] == "|":
                raise ConfigError(f"improper lists are not supported in config ({where(i)})")
            expect("]")
            return items
        if v == "<<":
            if i < len(toks) and toks[i][1] == ">>":
                i += 1
                return b""
            parts = seq(">>")
            out = b""
            for p in parts:
                out += bytes(p) if isinstance(p, list) else bytes([p])
            return out
        if v == "#":
            expect("{")
            d: dict[Any, Any] = {}
            if i < len(toks) and toks[i][1] == "}":
                i += 1
                return d
            while True:
                k = term()
                expect("=>")
                d[k] = term()
                if i < len(toks) and toks[i][1] == ",":
                    i += 1
                    continue
                expect("}")
                return d
        raise ConfigError(f"unexpected {v!r} at {where(i - 1)}")

    while i < len(toks):
        result.append(term())
        expect(".")
    return result


def load_config(path: str) -> dict[str, Any]:
    """The ``available_processes`` environment from a ``sys.config`` file, as a dict."""
    with open(path, encoding="utf-8") as f:
        terms = parse_terms(f.read())
    if len(terms) != 1 or not isinstance(terms[0], list):
        raise ConfigError(f"{path}: a sys.config holds one list of {{App, Env}} tuples")
    env: dict[str, Any] = {}
    for entry in terms[0]:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], list)):
            continue
        app, kv = entry
        for item in kv:
            if isinstance(item, tuple) and len(item) == 2:
                if app == APP:
                    env[str(item[0])] = item[1]
                elif app == "kernel" and item[0] in ("sync_nodes_optional", "sync_nodes_mandatory"):
                    env.setdefault("connect", []).extend(item[1])
    return env
