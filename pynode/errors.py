"""Errors raised by the runtime. Exit reasons and error reasons are Erlang terms."""

from __future__ import annotations

from typing import Any

from erl_interop.terms import Atom

__all__ = ["ErlangError", "Throw", "CallError", "RpcError", "NodeDown"]


class ErlangError(Exception):
    """``erlang:error(Reason)`` from Python: an exposed function or a process raising it
    produces exactly ``Reason`` on the BEAM side (e.g. ``ErlangError(Atom('badarg'))``)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class Throw(Exception):
    """``throw(Term)`` from an exposed function: ``erpc`` reports class ``throw``."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


class CallError(Exception):
    """A ``gen_server:call`` failed. ``reason`` is what ``gen:call`` would exit with:
    ``noproc``, ``{nodedown, Node}``, ``timeout``, ``normal``/``shutdown`` or the callee's exit reason.
    ``exit_reason`` is the full ``{Reason, {gen_server, call, [Dest, Request, Timeout]}}``."""

    def __init__(self, reason: Any, dest: Any = None, request: Any = None, timeout: Any = None) -> None:
        super().__init__(f"call to {dest!r} failed: {reason!r}")
        self.reason = reason
        self.dest = dest
        self.request = request
        self.timeout = timeout

    @property
    def exit_reason(self) -> Any:
        t = Atom("infinity") if self.timeout is None else int(self.timeout * 1000)
        return (self.reason, (Atom("gen_server"), Atom("call"), [self.dest, self.request, t]))


class RpcError(Exception):
    """An rpc into another node failed; ``reason`` is the ``{badrpc, Reason}`` reason, or for
    erpc the ``(Class, Reason)`` pair."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class NodeDown(ConnectionError):
    """No connection to the node could be set up."""
