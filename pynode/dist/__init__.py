"""Distribution: the node table and ``net_kernel``'s connection policy, one connection per
peer with its reader, ticker and coalescing writer, outgoing signals as control messages for
the negotiated flags, incoming control messages dispatched into the core, and the erpc client
side of ``SPAWN_REQUEST``.

Imports ``erl_interop``, :mod:`pynode.errors` and :mod:`pynode.core`. It implements the
core's :class:`~pynode.core.runtime.Transport`; what it does with an incoming
``SPAWN_REQUEST`` is a handler the composition root gives it (:mod:`pynode.otp.rpc`'s).
"""

from .distribution import Distribution, LinkState, PeerConnection, SpawnHandler

__all__ = ["Distribution", "LinkState", "PeerConnection", "SpawnHandler"]
