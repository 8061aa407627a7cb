"""OTP behaviours on the core: ``gen`` calls and ``gen_server`` (:mod:`pynode.otp.gen_server`),
rpc — the erpc server behind ``SPAWN_REQUEST``, ``rex``, and the rpc client
(:mod:`pynode.otp.rpc`) —, and ``net_kernel`` with the ``pynode`` info server
(:mod:`pynode.otp.net_kernel`).

Imports ``erl_interop``, :mod:`pynode.errors`, :mod:`pynode.core` and :mod:`pynode.dist`.
Importing it plugs ``gen_server:call`` into :meth:`pynode.core.Process.call`.
"""

from . import gen_server, net_kernel, rpc
from .gen_server import NOREPLY, GenServer, Stop, call, cast, reply
from .rpc import erpc_call, rpc_call

__all__ = ["gen_server", "net_kernel", "rpc", "GenServer", "NOREPLY", "Stop", "call", "cast", "reply",
           "erpc_call", "rpc_call"]
