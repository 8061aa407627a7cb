"""Run the use case's commands as a user types them (docs: ../shared/docs/USE_CASE.md).

``Iex`` is ``iex ... -S mix`` in ``mix_compat/`` with its standard input and output on pipes:
:meth:`Iex.ev` types one Elixir expression at the prompt, wrapped so that its value comes
back as ``@@<tag> <base64 term_to_binary>`` (the expression itself is what the user types).
``PyServer`` is ``python -m pynode ...``. Both are stopped by their own pid. ``iex``, ``mix`` and
``elixir`` are those of the OTP release the run uses (``$PYNODE_OTP_ROOT``, see pynode.testing).

The seed's commands use fixed node names (``n1@localhost`` .. ``n3@localhost``,
``c1@localhost``, ``n1@127.0.0.1``): :func:`seed_names_lock` serializes the tests that use
them across pytest-xdist workers, so that two never run at once.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from erl_interop import decode
from erl_interop.terms import Atom
from pynode.testing import BEAM_PROGRAMS, beam_program, mix_build_root

ROOT = Path(__file__).resolve().parent.parent
MIX_PROJECT = ROOT / "mix_compat"
#: the compiled project, for nodes that load its code without starting it (``-pa``): the build
#: of the run's OTP release (``_build/dev``, or ``_build/otp<N>/dev`` for another one)
EBIN = mix_build_root(MIX_PROJECT) / "dev" / "lib" / "available_processes" / "ebin"
#: the build of its dependency, the pynode library (elixir/: registry, job host, discovery),
#: which mix compiles into the same build directory; ``-pa`` takes both (``-pa EBIN PYNODE_EBIN``)
PYNODE_EBIN = mix_build_root(MIX_PROJECT) / "dev" / "lib" / "pynode" / "ebin"
_tags = itertools.count(1)


@contextlib.contextmanager
def seed_names_lock() -> Iterator[None]:
    """Hold the machine-wide lock of the seed's fixed node names."""
    with open("/tmp/pynode-seed-names.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Output:
    """A subprocess's merged output, drained by a thread; lines can be awaited."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._done = False
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cv:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._done = True
            self._cv.notify_all()

    def wait_for(self, pred: Any, timeout: float, what: str, start: int = 0) -> str:
        """The first line from index ``start`` on for which ``pred`` holds."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cv:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._done:
                    raise AssertionError(f"{what}: not seen in {timeout}s; output:\n{self.tail()}")
                self._cv.wait(min(left, 0.5))

    def tail(self, n: int = 80) -> str:
        with self._cv:
            return "\n".join(self.lines[-n:])


class _Server:
    """A node started from the command line: its process, name and output; stopped the way
    a user stops it (:meth:`stop`), or by its own pid (:meth:`kill`)."""

    proc: subprocess.Popen[bytes]
    name: str
    out: _Output

    def _ask_to_stop(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self._ask_to_stop()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop in {timeout}s:\n{self.out.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Iex(_Server):
    """``iex <args> -S mix`` in mix_compat/ (the command line as the use case writes it)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, cwd: Path = MIX_PROJECT,
                 prefix: Sequence[str] = (), mix: bool = True) -> None:
        """``mix=False``: a plain ``iex <args>`` (a driver or observer that runs no application)."""
        self.args = list(args)
        self.name = self.args[self.args.index("--sname" if "--sname" in self.args else "--name") + 1]
        self.proc = subprocess.Popen(
            [*prefix, beam_program("iex"), *self.args, *(["-S", "mix"] if mix else [])], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        self.out = _Output(self.proc)
        # The shell is up (and with it the application, started before the shell by -S mix)
        # once it evaluates what is typed.
        try:
            assert self.ev("Node.self()", timeout=120) == Atom(self.name)
        except BaseException:
            self.kill()
            raise

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def ev(self, expr: str, timeout: float = 30.0) -> Any:
        """Type ``expr`` at the prompt and return its value."""
        tag = f"@@{next(_tags)} "
        self.type(f'IO.puts("{tag}" <> Base.encode64(:erlang.term_to_binary(({expr}), minor_version: 2)))')
        line = self.out.wait_for(lambda s: tag in s, timeout, f"{self.name}: {expr}")
        return decode(base64.b64decode(line.split(tag, 1)[1].strip()))

    def _ask_to_stop(self) -> None:
        self.type(":init.stop()")  # as a user stops a node gracefully

    def wait_members(self, want: list[Any], timeout: float = 20.0) -> None:
        """Until this node's registry lists exactly ``want``, asked at its prompt."""
        deadline = time.monotonic() + timeout
        while (got := self.ev("Pynode.Registry.members()")) != want:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: members {got!r}, expected {want!r}")
            self.ev("Process.sleep(50)")  # the node waits, not the test


class PyServer(_Server):
    """``python -m pynode <args>`` (what ``./dev.sh node <args>`` runs)."""

    def __init__(self, args: Sequence[str], cwd: Path = ROOT, prefix: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.name = self.args[self.args.index("--sname" if "--sname" in self.args else "--name") + 1]
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "pynode", *self.args], cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = _Output(self.proc)
        try:
            self.out.wait_for(lambda s: " up: " in s, 60, f"{self.name} start")
        except BaseException:
            self.kill()
            raise

    def _ask_to_stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # as ``kill PID`` or Ctrl-C: a graceful shutdown


def run(cmd: Sequence[str], cwd: Path, timeout: float = 180.0, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``cmd`` as typed (a BEAM program is the run's release's: :func:`pynode.testing.beam_program`)."""
    exe = beam_program(cmd[0]) if cmd[0] in BEAM_PROGRAMS else cmd[0]
    return subprocess.run([*prefix, exe, *cmd[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def stop_all(nodes: Sequence[Any]) -> None:
    """Stop what is still running (by pid), last started first."""
    for n in reversed(nodes):
        try:
            if n.proc.poll() is None:
                n.kill()
        except Exception:
            pass
