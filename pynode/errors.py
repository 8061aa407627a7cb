"""The runtime's errors: one taxonomy, Erlang meanings kept.

Every error the runtime raises on purpose is a :class:`PynodeError`; reasons are Erlang
terms, never strings:

- :class:`ErlangError` — ``erlang:error(Reason)``: raised by an exposed function or a
  process, it produces exactly ``Reason`` on the BEAM side. :class:`BadArg` is its
  ``badarg`` case, raised where a BIF would raise ``badarg`` (a send to a name nobody holds,
  ``register/2`` of a taken name, a destination that is not one); it is also a
  ``ValueError``.
- :class:`CallError` — a ``gen_server:call`` failed, with the reason ``gen:call`` exits
  with: ``noproc``, ``{nodedown, Node}``, ``timeout``, or the callee's exit reason.
- :class:`RpcError` — an ``rpc``/``erpc`` into another node failed.
- :class:`Throw` — ``throw(Term)`` from an exposed function.
- :class:`NotStarted` — the node was used before ``await node.start()`` (a ``RuntimeError``).

Timeouts of a local wait are Python's ``TimeoutError`` (``Process.receive`` raises its
subclass ``ReceiveTimeout``, Erlang's ``after``; ``registry.wait_for`` raises it as
``gproc:await`` exits with ``timeout``). A kill is not an error: it reaches a process as
:class:`pynode.core.Exit`, a ``BaseException``, so ``except Exception`` cannot swallow it.
The wire layer has its own taxonomy (:mod:`erl_interop.errors`).
"""

from __future__ import annotations

from typing import Any

from erl_interop.terms import Atom

__all__ = ["PynodeError", "ErlangError", "BadArg", "Throw", "CallError", "RpcError", "NotStarted", "BADARG"]

BADARG = Atom("badarg")


class PynodeError(Exception):
    """The base of every error the runtime raises on purpose."""


class ErlangError(PynodeError):
    """``erlang:error(Reason)`` from Python: an exposed function or a process raising it
    produces exactly ``Reason`` on the BEAM side (e.g. ``ErlangError(Atom('badarg'))``)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class BadArg(ErlangError, ValueError):
    """``badarg``, where the BIF would raise it; ``detail`` says what was wrong."""

    def __init__(self, detail: str = "") -> None:
        ErlangError.__init__(self, BADARG)
        self.detail = detail

    def __str__(self) -> str:
        return f"badarg: {self.detail}" if self.detail else "badarg"


class Throw(PynodeError):
    """``throw(Term)`` from an exposed function: ``erpc`` reports class ``throw``."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


class CallError(PynodeError):
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


class RpcError(PynodeError):
    """An rpc into another node failed; ``reason`` is the ``{badrpc, Reason}`` reason, or for
    erpc the ``(Class, Reason)`` pair."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class NotStarted(PynodeError, RuntimeError):
    """The node was used before ``await node.start()`` (or after ``stop()``)."""
