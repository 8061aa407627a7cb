"""Terms printed as Elixir's ``inspect`` prints them, for the CLI's output and the jobs' log
messages (an operator of a mixed cluster reads one notation).

Owns :func:`format_term` and :func:`format_short`. The bottom of :mod:`pynode.jobs`: it
imports only :mod:`erl_interop.terms`, nothing of ``pynode``.
"""

from __future__ import annotations

import re
from typing import Any

from erl_interop.terms import Atom, Pid, Reference

__all__ = ["format_term", "format_short"]

#: an atom iex writes bare (`:name`, and `name:` as a key)
_BARE_ATOM = re.compile(r"[A-Za-z_][A-Za-z0-9_@]*[?!]?")


def format_term(t: Any) -> str:
    """A term as Elixir's ``inspect`` prints it (for CLI output and messages)."""
    if t is None:
        return "nil"
    if t is True:
        return "true"
    if t is False:
        return "false"
    if type(t) is Atom:
        s = str(t)
        if s.startswith("Elixir."):
            return s[len("Elixir."):]
        if _BARE_ATOM.fullmatch(s):
            return ":" + s
        return ':"' + s.replace('"', '\\"') + '"'
    if isinstance(t, str):
        return '"' + t.replace('"', '\\"') + '"'
    if isinstance(t, (bytes, bytearray)):
        try:
            s = bytes(t).decode("utf-8")
            if s.isprintable():
                return '"' + s.replace('"', '\\"') + '"'
        except UnicodeDecodeError:
            pass
        return "<<" + ", ".join(str(b) for b in bytes(t)) + ">>"
    if isinstance(t, tuple):
        return "{" + ", ".join(format_term(x) for x in t) + "}"
    if isinstance(t, list):
        return "[" + ", ".join(format_term(x) for x in t) + "]"
    if isinstance(t, dict):
        if t and all(type(k) is Atom and not str(k).startswith("Elixir.") for k in t):
            # as iex prints a map of atom keys: keyword syntax, keys in order
            items = sorted(t.items(), key=lambda kv: str(kv[0]))
            return "%{" + ", ".join(f"{_key(k)} {format_term(v)}" for k, v in items) + "}"
        return "%{" + ", ".join(f"{format_term(k)} => {format_term(v)}" for k, v in t.items()) + "}"
    if type(t) is Pid:
        return f"#PID<{t.node}.{t.id}.{t.serial}>"
    if type(t) is Reference:
        return "#Reference<" + ".".join(str(i) for i in t.ids) + ">"
    return repr(t)


def _key(k: Atom) -> str:
    s = str(k)
    if _BARE_ATOM.fullmatch(s):
        return s + ":"
    return '"' + s.replace('"', '\\"') + '":'


def format_short(t: Any, limit: int = 200) -> str:
    """:func:`format_term`, cut after ``limit`` characters (for log lines about states)."""
    text = format_term(t)
    return text if len(text) <= limit else text[:limit] + "..."
