"""The replicated, gproc-style cluster registry (the Python half of ``pynode_registry``).

The protocol is docs/REGISTRY_PROTOCOL.md, repeated verbatim in the header of
:mod:`pynode.registry.protocol`. Each module imports only the ones listed before it:

- ``protocol``: the names, atoms and message tags, what a key is (:func:`check_key`) and
  its bytes in the mirror (:func:`key_bytes`).
- ``mirror``: :class:`Mirror`, the table and the conflict rule (:func:`winner`), no I/O.
- ``server`` (Elixir: ``Pynode.Registry.Impl``): :class:`Registry`, the GenServer that
  speaks the protocol.
- ``api`` (Elixir: ``Pynode.Registry``): :class:`RegistryAPI`, the public API
  (``node.registry``), reading the mirror directly.

Outside the package they import :mod:`erl_interop` and the runtime (:mod:`pynode.errors`,
:mod:`pynode.core.process`, :mod:`pynode.otp.gen_server`); :mod:`pynode.jobs` is built on it.
"""

from .api import RegistryAPI
from .mirror import Mirror, winner
from .protocol import PROTOCOL_VERSION, REGISTRY_NAME, check_key, key_bytes
from .server import Registry

__all__ = [
    "Registry",
    "RegistryAPI",
    "Mirror",
    "REGISTRY_NAME",
    "PROTOCOL_VERSION",
    "winner",
    "key_bytes",
    "check_key",
]
