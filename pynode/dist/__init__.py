"""Distribution: the node table and ``net_kernel``'s connection policy
(:mod:`~pynode.dist.distribution`), one link per peer (:mod:`~pynode.dist.link`), outgoing
signals as control messages for the negotiated flags (:mod:`~pynode.dist.outgoing`, one
table), incoming control messages dispatched into the core (:mod:`~pynode.dist.incoming`,
one table), and TLS distribution's contexts from an ``ssl_dist_optfile`` (:mod:`~pynode.dist.tls`).

Imports ``erl_interop``, :mod:`pynode.errors`, :mod:`pynode.config` and :mod:`pynode.core`. It implements the
core's :class:`~pynode.core.runtime.Transport`; what it does with an incoming
``SPAWN_REQUEST`` is a handler the composition root gives it (:mod:`pynode.otp.rpc`'s).
"""

from .distribution import Distribution, DistSettings, SpawnHandler
from .link import LinkState, PeerConnection
from .tls import DistTls, TlsConfigError

__all__ = ["Distribution", "DistSettings", "DistTls", "LinkState", "PeerConnection", "SpawnHandler", "TlsConfigError"]
