"""What the three sans-IO machines of :mod:`erl_interop` share.

The EPMD parsers (:mod:`erl_interop.epmd.proto`), the handshake
(:class:`~erl_interop.handshake.Handshake`) and the connected phase
(:class:`~erl_interop.connection.Connection`) speak one vocabulary:

- ``receive_data(data)`` hands the machine the bytes just read; ``receive_data(b"")`` says
  the peer closed its side (end of input);
- ``next_event()`` returns the next event, or :data:`NEED_DATA` when the machine cannot say
  anything more until it is given more bytes. A malformed input raises the layer's
  :class:`~erl_interop.errors.ProtocolError`; misuse of the machine raises
  :class:`~erl_interop.errors.LocalProtocolError`.

:data:`NEED_DATA` is defined here, once, and re-exported by each machine's module. It is the
only member of the enum :class:`NeedData`, so ``event is NEED_DATA`` is the test, and a type
checker narrows ``Event | NeedData`` to ``Event`` after it.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["NeedData", "NEED_DATA"]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`: the machine needs more bytes before its next event."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    __str__ = __repr__


#: Returned by ``next_event()`` when the machine needs more bytes. Compare with ``is``.
NEED_DATA: Final = NeedData.NEED_DATA
