"""One error taxonomy for the wire layer.

- :class:`DecodeError` — bytes from a peer (or a caller) are not a valid term; carries the
  offset at which decoding failed.
- :class:`EncodeError` — the caller asked to encode something that has no Erlang form.
- :class:`ProtocolError` — the peer broke the protocol (a *remote* fault). Subclasses name
  the layer: :class:`EpmdError`, :class:`HandshakeError`, :class:`DistProtocolError`.
- :class:`LocalProtocolError` — the caller misused the API (a *local* fault).
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
    "HandshakeError",
    "DistProtocolError",
]


class ErlInteropError(Exception):
    """Base class of every error raised by :mod:`erl_interop`."""


class DecodeError(ErlInteropError, ValueError):
    """Input is not a valid External Term Format term.

    ``offset`` is the byte offset (from the start of the input) where decoding failed.
    """

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset
        self.message = message


class EncodeError(ErlInteropError, TypeError):
    """A Python value has no Erlang representation."""


class ProtocolError(ErlInteropError):
    """The peer violated the protocol."""


class LocalProtocolError(ErlInteropError):
    """The caller used the API in a way the protocol does not allow."""


class EpmdError(ProtocolError):
    """EPMD refused a request or answered something malformed."""


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
