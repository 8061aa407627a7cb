"""Real BEAM peers for tests: start ``erl`` / ``elixir`` nodes, evaluate code on them, stop them.

Theory of operation: each node is started with ``-noshell`` and a small evaluation loop
passed through ``-eval`` (Erlang) or ``-e`` (Elixir). The loop reads one request per line
on stdin — base64 of the source text — evaluates it, and writes one line on stdout:
``@@`` + base64 of ``term_to_binary({ok, Value} | {error, {Class, Reason}}, [{minor_version, 2}])``.
Everything else a node prints (logs, ``io:format``) is kept in :attr:`BeamNode.output`.

No sleeps: :meth:`BeamNode.start` returns once the node has answered a first evaluation.
Nodes are stopped by their own pid (never ``pkill``).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import inspect
import itertools
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from erl_interop import decode

__all__ = ["BeamNode", "BeamError", "unique_name", "test_cookie", "read_until", "wait_until", "await_until", "require_erl", "compile_mix_project"]

_ERL_LOOP = (
    "fun Loop() ->"
    " case io:get_line('') of"
    "  eof -> erlang:halt(0);"
    "  Line ->"
    "   R = try"
    "     Src = unicode:characters_to_list(base64:decode(string:trim(Line))),"
    "     {ok, Toks, _} = erl_scan:string(Src),"
    "     {ok, Exprs} = erl_parse:parse_exprs(Toks),"
    "     {value, V, _} = erl_eval:exprs(Exprs, []),"
    "     {ok, V}"
    "   catch C:E -> {error, {C, E}} end,"
    "   io:put_chars([\"@@\", base64:encode(term_to_binary(R, [{minor_version, 2}])), $\\n]),"
    "   Loop()"
    " end"
    " end()"
)

_EX_LOOP = """
loop = fn loop ->
  case IO.gets("") do
    :eof -> System.halt(0)
    {:error, _} -> System.halt(0)
    line ->
      r =
        try do
          {v, _} = Code.eval_string(Base.decode64!(String.trim(line)))
          {:ok, v}
        catch
          c, e -> {:error, {c, e}}
        end
      IO.write(["@@", Base.encode64(:erlang.term_to_binary(r, minor_version: 2)), "\\n"])
      loop.(loop)
  end
end
loop.(loop)
"""


_counter = itertools.count()

#: the cookie of the running test; the pytest plugin sets a fresh one for every test
_cookie = "test"


def read_until(stream: Any, needle: str, max_lines: int = 500) -> tuple[str, list[str]]:
    """Read lines from a subprocess's output until one contains ``needle``; return it and
    every line read. Log lines may come first (a peer of another cluster knocking, say).
    Raises ``AssertionError`` with what was read when the output ends or ``max_lines`` pass."""
    seen: list[str] = []
    for _ in range(max_lines):
        raw = stream.readline()
        if not raw:
            break
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        seen.append(line)
        if needle in line:
            return line, seen
    raise AssertionError(f"{needle!r} never appeared; output was:\n{''.join(seen)}")


def test_cookie() -> str:
    """The cookie for the nodes of the running test: unique per test under the pytest plugin
    (``"test"`` elsewhere). Discovery connects every node of a host that shares a cookie
    (docs/DISCOVERY.md), so tests that run side by side must not share one, exactly as two
    clusters on one host would not."""
    return _cookie


test_cookie.__test__ = False  # type: ignore[attr-defined]  # not a test, though its name starts so


def unique_name(prefix: str = "n") -> str:
    """A node alive-name unique across processes and test runs (``prefix`` + random)."""
    return f"{prefix}{os.getpid()}x{next(_counter)}{uuid.uuid4().hex[:6]}"


def require_erl() -> str:
    """Path of ``erl``; raises (never skips) when it is missing, so CI cannot pass vacuously."""
    path = shutil.which("erl")
    if path is None:
        raise RuntimeError("erl is not installed: run the README's test command, which installs erlang-nox")
    return path


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *, interval: float = 0.01) -> Any:
    """Poll ``cond`` until it returns a truthy value; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *,
                      interval: float = 0.005) -> Any:
    """The async twin of :func:`wait_until`: poll ``cond()`` (a plain function, or one that
    returns an awaitable) until its value is truthy and return it, sleeping ``interval``
    between polls so that the event loop keeps running; raise ``TimeoutError`` naming
    ``what`` (with the last value) after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = cond()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last value {v!r})")
        await asyncio.sleep(interval)


def compile_mix_project(project: str, mix_env: str = "dev", timeout: float = 300.0) -> str:
    """``mix compile`` in ``project`` (for :meth:`BeamNode.start` with ``mix_project``).

    A file lock in the project's ``_build`` serializes concurrent compiles (pytest-xdist
    workers, benchmarks); a compile with nothing to do returns in about a second. Raises
    ``RuntimeError`` with mix's output when the compile fails. Returns ``project``.
    """
    lock_path = Path(project) / "_build" / ".pynode-compile.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MIX_ENV=mix_env)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            r = subprocess.run(["mix", "compile"], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if r.returncode != 0:
        raise RuntimeError(f"mix compile failed in {project}:\n{r.stdout}\n{r.stderr}")
    return project


class BeamError(Exception):
    """Code evaluated on a BEAM node raised; ``cls`` and ``reason`` are the Erlang class and reason."""

    def __init__(self, cls: Any, reason: Any) -> None:
        super().__init__(f"{cls}: {reason!r}")
        self.cls = cls
        self.reason = reason


class BeamNode:
    """A real ``erl`` (``lang="erlang"``) or ``elixir`` (``lang="elixir"``) node.

    >>> n = BeamNode.start("peer@localhost", cookie="test")   # doctest: +SKIP
    >>> n.eval("node().")                                     # doctest: +SKIP
    Atom('peer@localhost')
    """

    def __init__(self, proc: subprocess.Popen[bytes], name: str, cookie: str, lang: str) -> None:
        self.proc = proc
        self.name = name
        self.cookie = cookie
        self.lang = lang
        self.output: deque[str] = deque(maxlen=2000)
        self._results: deque[bytes] = deque()
        self._cv = threading.Condition()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> str:
        return self.name.split("@", 1)[0]

    @classmethod
    def start(
        cls,
        name: str,
        cookie: str | None = None,
        *,
        lang: str = "erlang",
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        hidden: bool = False,
        timeout: float = 30.0,
        name_flag: str | None = None,
        mix_project: str | None = None,
    ) -> "BeamNode":
        """Start a node called ``name`` (``alive@host``; ``-sname`` unless ``name_flag``).

        ``mix_project``: a mix project folder (``lang="elixir"`` only); the node then runs
        ``elixir -S mix run --no-compile`` there, so the project's application is started,
        as ``iex -S mix`` does. Compile the project first (``mix compile``)."""
        if cookie is None:
            cookie = test_cookie()
        flag = name_flag or ("-sname" if "." not in name.split("@")[-1] else "-name")
        full_env = dict(os.environ)
        full_env.update(env or {})
        if lang == "erlang":
            cmd = [require_erl(), flag, name, "-setcookie", cookie, "-noshell"]
            if hidden:
                cmd.append("-hidden")
            cmd += list(args)
            cmd += ["-eval", _ERL_LOOP]
        elif lang == "elixir":
            exe = shutil.which("elixir")
            if exe is None:
                raise RuntimeError("elixir is not installed: run the README's test command")
            cmd = [exe, "-" + flag.lstrip("-"), name, "--cookie", cookie]
            if hidden:
                cmd.append("--hidden")
            erl_args = list(args)
            if erl_args:
                cmd += ["--erl", " ".join(erl_args)]
            if mix_project is not None:
                cmd += ["-S", "mix", "run", "--no-compile", "-e", _EX_LOOP]
                cwd = mix_project
                full_env.setdefault("MIX_ENV", "dev")
            else:
                cmd += ["-e", _EX_LOOP]
            if flag == "-sname":
                cmd[1] = "--sname"
            else:
                cmd[1] = "--name"
        else:
            raise ValueError(f"unknown lang {lang!r}")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
        )
        node = cls(proc, name, cookie, lang)
        try:
            node.eval("ok." if lang == "erlang" else ":ok", timeout=timeout)
        except BaseException:
            node.kill()
            raise
        return node

    # -- output ---------------------------------------------------------------------------
    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            self._read_lines()
        except (ValueError, OSError):  # the pipe was closed by stop()/kill()
            pass
        with self._cv:
            self._cv.notify_all()

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip(b"\r\n")
            idx = line.find(b"@@")
            if idx >= 0:
                if idx > 0:
                    self.output.append(line[:idx].decode("utf-8", "replace"))
                with self._cv:
                    self._results.append(base64.b64decode(line[idx + 2 :]))
                    self._cv.notify_all()
            else:
                self.output.append(line.decode("utf-8", "replace"))
        with self._cv:
            self._cv.notify_all()

    # -- evaluation -----------------------------------------------------------------------
    def eval_raw(self, source: str, timeout: float = 30.0) -> bytes:
        """Evaluate ``source``; return the raw ``term_to_binary`` of ``{ok, V} | {error, E}``."""
        with self._lock:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(base64.b64encode(source.encode()) + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError) as e:
                raise RuntimeError(f"node {self.name} is not running: {self.tail()}") from e
            deadline = time.monotonic() + timeout
            with self._cv:
                while not self._results:
                    left = deadline - time.monotonic()
                    if self.proc.poll() is not None and not self._results:
                        raise RuntimeError(f"node {self.name} exited ({self.proc.returncode}): {self.tail()}")
                    if left <= 0:
                        raise TimeoutError(f"{self.name} did not answer {source!r} in {timeout}s: {self.tail()}")
                    self._cv.wait(min(left, 0.5))
                return self._results.popleft()

    def eval(self, source: str, timeout: float = 30.0) -> Any:
        """Evaluate Erlang (``lang="erlang"``, ending in ``.``) or Elixir source; return its value
        decoded with :func:`erl_interop.decode`, or raise :class:`BeamError`."""
        raw = self.eval_raw(source, timeout)
        tag, value = decode(raw)
        if tag == "ok":
            return value
        cls, reason = value
        raise BeamError(cls, reason)

    def tail(self, n: int = 20) -> str:
        return "\n".join(list(self.output)[-n:])

    # -- lifetime -------------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> int:
        """Stop the node gracefully (``init:stop()``) and wait for its exit code."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                src = "init:stop()." if self.lang == "erlang" else ":init.stop()"
                self.proc.stdin.write(base64.b64encode(src.encode()) + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        rc = self.proc.wait()
        self._close_pipes()
        return rc

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    def kill(self) -> int:
        """``kill -9`` this node (by its own pid) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait()
        self._close_pipes()
        return rc

    def __enter__(self) -> "BeamNode":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
