"""One error taxonomy for the wire layer.

Every error :mod:`erl_interop` raises is an :class:`ErlInteropError`, and each one says on
which side of the connection the fault lies. The two families below are disjoint and,
between them, cover every class here.

**The other end's fault** — :class:`ProtocolError` and its subclasses. What came from the
peer cannot be used: its bytes break the protocol, it refused the request, it closed the
connection mid-exchange or could not be reached. The local program did nothing wrong;
the same peer may well fail the same way again.

- :class:`DecodeError` — bytes are not a valid External Term Format term; carries the
  ``offset`` at which decoding failed. Also a :class:`ValueError`, as it always was.
- :class:`EpmdError` — the EPMD we asked refused (a name already registered there), could
  not be reached, closed early or answered something malformed; in our EPMD server, a
  client sent a malformed request.
- :class:`HandshakeError` — the distribution handshake failed (``step``, ``reason``).
- :class:`DistProtocolError` — a connected-phase packet could not be understood.

**This side's fault** — :class:`LocalProtocolError` and its subclasses. The caller asked for
something the protocol cannot express, used a machine in a state that does not allow it, or
this machine's own environment failed. Retrying unchanged will fail the same way.

- :class:`LocalProtocolError` — the caller misused the API.
- :class:`EncodeError` — a Python value has no Erlang form. Also a :class:`TypeError`.
- :class:`EpmdLocalError` — the EPMD layer's local failures: a request EPMD cannot carry
  (an alive name with ``@``, too long), ``$ERL_EPMD_PORT`` that is not a port number, the
  EPMD server :func:`~erl_interop.epmd.client.ensure_epmd` started exiting or never
  answering.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ErlInteropError",
    "DecodeError",
    "EncodeError",
    "ProtocolError",
    "LocalProtocolError",
    "EpmdError",
    "EpmdLocalError",
    "HandshakeError",
    "DistProtocolError",
]


class ErlInteropError(Exception):
    """Base class of every error raised by :mod:`erl_interop`."""


class ProtocolError(ErlInteropError):
    """The other end's fault: the peer broke the protocol, refused, or went away."""


class LocalProtocolError(ErlInteropError):
    """This side's fault: the caller used the API in a way the protocol does not allow, or
    this machine's environment failed."""


class DecodeError(ProtocolError, ValueError):
    """Input is not a valid External Term Format term.

    ``offset`` is the byte offset (from the start of the input) where decoding failed.
    """

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset
        self.message = message


class EncodeError(LocalProtocolError, TypeError):
    """A Python value has no Erlang representation."""


class EpmdError(ProtocolError):
    """The EPMD at the other end refused a request, could not be reached, closed early or
    answered something malformed (in the server: a client sent a malformed request)."""


class EpmdLocalError(LocalProtocolError):
    """A local failure in the EPMD layer: a request EPMD cannot carry, a bad
    ``$ERL_EPMD_PORT``, or the EPMD server this process started did not come up."""


class HandshakeError(ProtocolError):
    """The distribution handshake failed.

    ``step`` names the failing step as ``dist_util.erl`` does (``recv_status``,
    ``recv_challenge``, ``recv_challenge_reply``, ``recv_challenge_ack``, ...);
    ``reason`` is a short machine-readable reason (``bad_cookie``, ``not_allowed``, ...).
    """

    def __init__(self, step: str, reason: Any, detail: str = "") -> None:
        text = f"handshake failed at {step}: {reason}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)
        self.step = step
        self.reason = reason
        self.detail = detail


class DistProtocolError(ProtocolError):
    """A connected-phase packet could not be understood."""
