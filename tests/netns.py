"""Two hosts on one machine: a pair of network namespaces joined by a veth pair.

``Hosts`` creates ``<tag>a`` and ``<tag>b`` with the addresses ``10.99.0.1`` and ``10.99.0.2``
(inside the namespaces only: each namespace has its own network stack, so two pairs never
clash and the machine's own network is never a target), brings their loopbacks up, and on
exit stops every process left in them (by pid: ``ip netns pids``) and deletes them.
:meth:`Hosts.split` and :meth:`Hosts.heal` take the link down and up: a real partition, in
which packets are lost, not refused. Needs root; a machine where the namespaces cannot be
made fails the test (it is never skipped).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

ADDR_A = "10.99.0.1"
ADDR_B = "10.99.0.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()} "
                           "(network namespaces need root: the test cannot run here)")
    return r


class Hosts:
    def __init__(self) -> None:
        tag = "pyn" + uuid.uuid4().hex[:8]
        self.a, self.b = tag + "a", tag + "b"
        self._veth_a, self._veth_b = tag + "va", tag + "vb"

    def __enter__(self) -> "Hosts":
        try:
            _ip("netns", "add", self.a)
            _ip("netns", "add", self.b)
            _ip("link", "add", self._veth_a, "type", "veth", "peer", "name", self._veth_b)
            _ip("link", "set", self._veth_a, "netns", self.a)
            _ip("link", "set", self._veth_b, "netns", self.b)
            for ns, dev, addr in ((self.a, self._veth_a, ADDR_A), (self.b, self._veth_b, ADDR_B)):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def prefix(self, side: str) -> list[str]:
        """The command prefix that runs a program on host ``"a"`` or ``"b"``."""
        return ["ip", "netns", "exec", self.a if side == "a" else self.b]

    def split(self) -> None:
        _ip("-n", self.a, "link", "set", self._veth_a, "down")

    def heal(self) -> None:
        _ip("-n", self.a, "link", "set", self._veth_a, "up")

    def _pids(self, ns: str) -> list[int]:
        r = _ip("netns", "pids", ns, check=False)
        return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []

    def __exit__(self, *exc: object) -> None:
        for ns in (self.a, self.b):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self._pids(ns)
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 5
                while pids and time.monotonic() < deadline:
                    pids = self._pids(ns)
                    if pids:
                        time.sleep(0.05)
                if not pids:
                    break
            _ip("netns", "del", ns, check=False)
