"""The mirror: every registration this node knows of, and the conflict rule. Pure data, no
I/O and no processes, so it can be tested and benchmarked alone.

Owns: :class:`Mirror` (the table, by key bytes, by pid, by node) and :func:`winner` (which
holder keeps a unique name both claim, protocol "Conflicts"). May import:
:mod:`erl_interop.terms` and :mod:`pynode.registry.protocol`.

For unique names the mirror keeps every *claim* it has been told about and shows only the
winner; a losing claim is hidden at once and disappears when its owner sends ``unreg``
(which the owner always does after losing). Keeping it rather than dropping it changes
nothing visible while both holders live, and means that if the winner's node dies before
the loser's node has heard of the winner, every mirror falls back to the same surviving
holder.
"""

from __future__ import annotations

from typing import Any

from erl_interop.terms import Atom, Pid

from .protocol import N

__all__ = ["Mirror", "winner"]


# -- the conflict rule ---------------------------------------------------------------------
def _rank(pid: Pid) -> tuple[bytes, int, int, int]:
    # Node name first (atom text, byte-wise UTF-8: protocol, "Conflicts"); on one node the
    # smaller pid, ordered as OTP orders local pids (serial, then number).
    return (pid.node.encode("utf-8"), pid.serial, pid.id, pid.creation)


def winner(a: Pid, b: Pid) -> Pid:
    """The holder that keeps a unique name both ``a`` and ``b`` claim (protocol, "Conflicts")."""
    return a if _rank(a) <= _rank(b) else b


# -- the table -----------------------------------------------------------------------------
class Mirror:
    """All entries this node knows of, keyed by the bytes of their key. No I/O.

    ``claims[kb]`` maps each holder pid to ``(Key, Value)`` in insertion order. For a
    property every claim is visible; for a unique name only :func:`winner` of the claims is.
    """

    def __init__(self) -> None:
        self.claims: dict[bytes, dict[Pid, tuple[Any, Any]]] = {}
        self.by_pid: dict[Pid, dict[bytes, None]] = {}
        self.by_node: dict[Atom, set[Pid]] = {}

    # -- reading --------------------------------------------------------------------------
    def holder(self, kb: bytes) -> tuple[Pid, Any, Any] | None:
        """``(Pid, Key, Value)`` of the visible holder (first holder for a property)."""
        c = self.claims.get(kb)
        if not c:
            return None
        it = iter(c.items())
        pid, (key, value) = next(it)
        if key[0] == N and len(c) > 1:
            for p, (k, v) in it:
                if _rank(p) < _rank(pid):
                    pid, key, value = p, k, v
        return pid, key, value

    def visible(self, kb: bytes) -> list[tuple[Pid, Any]]:
        """``[(Pid, Value)]`` of the visible holders of ``kb``."""
        c = self.claims.get(kb)
        if not c:
            return []
        pid, (key, _v) = next(iter(c.items()))
        if key[0] == N:
            h = self.holder(kb)
            assert h is not None
            return [(h[0], h[2])]
        return [(p, v) for p, (_k, v) in c.items()]

    def entries(self) -> list[tuple[Any, Pid, Any]]:
        """Every visible entry, ``(Key, Pid, Value)``."""
        out: list[tuple[Any, Pid, Any]] = []
        for kb, c in self.claims.items():
            if not c:
                continue
            key = next(iter(c.values()))[0]
            out.extend((key, p, v) for p, v in self.visible(kb))
        return out

    def entries_of_node(self, node: Atom) -> list[tuple[Any, Pid, Any]]:
        """Every claim held by a process of ``node`` (visible or not), ``(Key, Pid, Value)``."""
        out = []
        for pid in self.by_node.get(node, ()):
            for kb in self.by_pid.get(pid, ()):
                key, value = self.claims[kb][pid]
                out.append((key, pid, value))
        return out

    def keys_of(self, pid: Pid) -> list[bytes]:
        return list(self.by_pid.get(pid, ()))

    def claim(self, kb: bytes, pid: Pid) -> tuple[Any, Any] | None:
        c = self.claims.get(kb)
        return None if c is None else c.get(pid)

    def losers(self, kb: bytes) -> list[Pid]:
        """Claims of a unique name that are not its winner."""
        c = self.claims.get(kb)
        if not c or len(c) < 2 or next(iter(c.values()))[0][0] != N:
            return []  # a property has no losers
        h = self.holder(kb)
        assert h is not None
        return [p for p in c if p != h[0]]

    # -- writing --------------------------------------------------------------------------
    def put(self, kb: bytes, key: Any, pid: Pid, value: Any) -> None:
        self.claims.setdefault(kb, {})[pid] = (key, value)
        self.by_pid.setdefault(pid, {})[kb] = None
        self.by_node.setdefault(pid.node, set()).add(pid)

    def remove(self, kb: bytes, pid: Pid) -> bool:
        c = self.claims.get(kb)
        if c is None or pid not in c:
            return False
        del c[pid]
        if not c:
            del self.claims[kb]
        ks = self.by_pid[pid]
        del ks[kb]
        if not ks:
            del self.by_pid[pid]
            s = self.by_node[pid.node]
            s.discard(pid)
            if not s:
                del self.by_node[pid.node]
        return True

    def remove_pid(self, pid: Pid) -> list[tuple[bytes, Any]]:
        """Drop every claim of ``pid``; return ``[(kb, Key)]`` dropped."""
        out = []
        for kb in self.keys_of(pid):
            key = self.claims[kb][pid][0]
            self.remove(kb, pid)
            out.append((kb, key))
        return out

    def drop_node(self, node: Atom) -> set[bytes]:
        """Purge every claim held on ``node``; return the keys touched."""
        touched: set[bytes] = set()
        for pid in list(self.by_node.get(node, ())):
            touched.update(kb for kb, _k in self.remove_pid(pid))
        return touched

    def replace_node(self, node: Atom, entries: list[tuple[bytes, Any, Pid, Any]]) -> set[bytes]:
        """Make ``node``'s claims exactly ``entries`` (``(kb, Key, Pid, Value)``); return keys touched."""
        new = {(kb, pid): (key, value) for kb, key, pid, value in entries}
        touched: set[bytes] = set()
        for pid in list(self.by_node.get(node, ())):
            for kb in self.keys_of(pid):
                if (kb, pid) not in new:
                    self.remove(kb, pid)
                    touched.add(kb)
        for (kb, pid), (key, value) in new.items():
            if self.claim(kb, pid) != (key, value):
                self.put(kb, key, pid, value)
                touched.add(kb)
        return touched
