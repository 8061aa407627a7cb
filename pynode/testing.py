"""Real BEAM peers for tests: start ``erl`` / ``elixir`` nodes, evaluate code on them, stop them.

Theory of operation: each node is started with ``-noshell`` and a small evaluation loop
passed through ``-eval`` (Erlang) or ``-e`` (Elixir). The loop reads one request per line
on stdin — base64 of the source text — evaluates it, and writes one line on stdout:
``@@`` + base64 of ``term_to_binary({ok, Value} | {error, {Class, Reason}}, [{minor_version, 2}])``.
Everything else a node prints (logs, ``io:format``) is kept in :attr:`BeamNode.output`.

No sleeps: :meth:`BeamNode.start` returns once the node has answered a first evaluation.
Nodes are stopped by their own pid (never ``pkill``).

Other OTP releases: the BEAM programs (``erl``, ``elixir``, ``iex``, ``mix``, ...) come from the
host, or from the root of another Debian system holding another release, named by
``$PYNODE_OTP_ROOT`` (``./dev.sh test`` builds and caches them: ``/var/cache/pynode/otp-trixie``
is OTP 27, ``/var/cache/pynode/otp-sid`` OTP 29) or by the ``otp_root`` argument of
:meth:`BeamNode.start`. :func:`beam_program` gives the command for one of them: for a root, a
small shell script (written once into the temporary directory) that runs the program there with
``chroot``, from the caller's working directory, in a mount namespace of its own (``unshare``,
root only) in which the temporary directory, this checkout and ``$HOME`` (the same user: its
``.erlang.cookie``) are bind-mounted at their own paths, so that the paths a test passes (``-pa``, ``-config``, its ``tmp_path``) mean the same
inside, and so are the host's ``/etc/hosts`` and ``/etc/resolv.conf``; the mounts end with the command and never show on the host. The program keeps the
caller's pid (each step execs the next), its pipes and environment, with ``PATH`` reset
to the root's own and ``MIX_BUILD_ROOT=_build/otp<N>`` so that mix builds each release apart
from the host's ``_build/<env>`` (:func:`mix_build_root`). The peers share the host's loopback
and its EPMD. :func:`activate_release` puts those scripts first on ``PATH`` (the pytest plugin
does it for a whole run), so that commands started by name run the release's programs too.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import glob
import hashlib
import inspect
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from erl_interop import decode

__all__ = ["BeamNode", "BeamError", "unique_name", "test_cookie", "read_until", "wait_until", "await_until", "require_erl",
           "compile_mix_project", "OTP_ROOT_ENV", "BEAM_PROGRAMS", "otp_root", "otp_version", "release_label", "beam_program",
           "activate_release", "mix_build_root"]

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


#: the environment variable naming the root of the OTP release the BEAM peers run from
OTP_ROOT_ENV = "PYNODE_OTP_ROOT"
#: the programs of an Erlang/Elixir installation that :func:`beam_program` can run from a root
BEAM_PROGRAMS = ("erl", "erlc", "escript", "epmd", "erl_call", "run_erl", "to_erl", "elixir", "elixirc", "iex", "mix")


def otp_root(root: str | None = None) -> str | None:
    """The root of the OTP release to run: ``root`` when given, else ``$PYNODE_OTP_ROOT``;
    resolved, and ``None`` for the host's own (unset, empty or ``/``)."""
    r = root if root is not None else os.environ.get(OTP_ROOT_ENV, "")
    if not r.strip():
        return None
    resolved = os.path.realpath(r)
    return None if resolved == "/" else resolved


_resolve_root = otp_root  # for the functions whose argument of that name hides it


def _otp_version_at(erlang_dir: str) -> str | None:
    found = sorted(glob.glob(os.path.join(erlang_dir, "releases", "*", "OTP_VERSION")))
    if not found:
        return None
    with open(found[-1], encoding="ascii") as f:
        return f.read().strip()


def otp_version(root: str | None = None) -> str:
    """The full OTP version (``"29.1.2"``) of the release :func:`otp_root` names."""
    r = otp_root(root)
    if r is None:
        erl = os.path.realpath(beam_program("erl", "/"))  # <erlang root>/bin/erl
        v = _otp_version_at(os.path.dirname(os.path.dirname(erl)))
        if v is None:
            raise RuntimeError(f"no releases/*/OTP_VERSION beside {erl}")
        return v
    v = _otp_version_at(os.path.join(r, "usr", "lib", "erlang"))
    if v is None:
        raise RuntimeError(f"{r} (${OTP_ROOT_ENV}) holds no OTP release (no usr/lib/erlang/releases/*/OTP_VERSION): "
                           "build one with ./dev.sh otp-root trixie|sid")
    return v


def release_label(root: str | None = None) -> str:
    """``"OTP 29.1.2 from /var/cache/pynode/otp-sid"``, or ``"OTP 25.2.3 (host)"``."""
    r = otp_root(root)
    return f"OTP {otp_version(r)} " + (f"from {r}" if r else "(host)")


def mix_build_root(project: str | os.PathLike[str], root: str | None = None) -> Path:
    """The ``_build`` directory mix uses in ``project`` for the release :func:`otp_root` names:
    ``_build`` for the host's, ``_build/otp<N>`` for another (``<env>/lib/<app>/ebin`` below it)."""
    r = otp_root(root)
    base = Path(project) / "_build"
    return base if r is None else base / _build_name(r)


def _build_name(root: str) -> str:
    return "otp" + otp_version(root).split(".")[0]


_SHIM = """#!/bin/sh
# Written by pynode.testing: {prog} of {label}, run there (chroot) from this directory, with
# {shared} bind-mounted at the same paths (and the host's /etc/hosts: "localhost" resolves as
# on the host) in a mount namespace of the command's own.
exec unshare --mount --propagation private -- /bin/sh -ec {script} pynode-otp {args} -- "$@"
"""

#: ``$1`` root, ``$2`` MIX_BUILD_ROOT, ``$3`` program, then the shared directories up to ``--``
_SHIM_SCRIPT = """root=$1 build=$2 prog=$3; shift 3
cwd=$(pwd -P)
while [ "$1" != -- ]; do mkdir -p "$root$1"; mount --bind "$1" "$root$1"; shift; done; shift
for f in /etc/hosts /etc/resolv.conf; do
  if [ -f "$f" ] && [ ! -L "$root$f" ]; then [ -e "$root$f" ] || : >"$root$f"; mount --bind "$f" "$root$f"; fi
done
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
exec chroot "$root" /usr/bin/env -C "$cwd" PATH=/usr/local/bin:/usr/bin:/bin MIX_BUILD_ROOT="$build" "$prog" "$@"
"""


def _shared_dirs(root: str) -> list[str]:
    """The host directories a command in ``root`` sees: the temporary directory, this checkout
    (where pynode is installed from), the working directory and ``$HOME`` (the user's
    ``.erlang.cookie``: a node started without ``-setcookie`` has the cookie a Python node
    reads); nested ones once."""
    checkout = Path(__file__).resolve().parent.parent
    cands = ["/tmp", tempfile.gettempdir(), os.getcwd()]
    home = os.environ.get("HOME", "")
    if home and os.path.isdir(home):
        cands.append(home)
    if (checkout / "pyproject.toml").is_file():
        cands.append(str(checkout))
    out: list[str] = []
    for d in sorted({os.path.realpath(c) for c in cands}, key=len):
        # never "/" or anything holding the root (that would mount the host over it) or in it
        if d == "/" or (root + "/").startswith(d + "/") or d.startswith(root + "/") \
                or any(d == o or d.startswith(o + "/") for o in out):
            continue
        out.append(d)
    return out


_shim_dirs: dict[str, str] = {}


def _release_bin(root: str) -> str:
    """The directory of :data:`BEAM_PROGRAMS` scripts for ``root`` (see the module docstring).
    Written once per content, atomically (a rename), so concurrent workers agree."""
    cached = _shim_dirs.get(root)
    if cached is not None and os.path.isdir(cached):
        return cached
    if not os.path.isfile(os.path.join(root, "usr", "bin", "erl")):
        raise RuntimeError(f"{root} (${OTP_ROOT_ENV}) has no usr/bin/erl: build it with ./dev.sh otp-root trixie|sid")
    if os.geteuid() != 0:
        raise RuntimeError(f"running the BEAM programs of {root} needs root (chroot, unshare, mount)")
    shared = _shared_dirs(root)
    build = "_build/" + _build_name(root)
    label = release_label(root)
    texts = {
        prog: _SHIM.format(prog=prog, label=label, shared=", ".join(shared), script=shlex.quote(_SHIM_SCRIPT),
                           args=" ".join(shlex.quote(a) for a in (root, build, prog, *shared)))
        for prog in BEAM_PROGRAMS
    }
    digest = hashlib.sha256(repr(sorted(texts.items())).encode()).hexdigest()[:16]
    final = os.path.join(tempfile.gettempdir(), f"pynode-otp-{digest}")
    if not all(os.path.isfile(os.path.join(final, p)) for p in BEAM_PROGRAMS):
        tmp = tempfile.mkdtemp(prefix=f"pynode-otp-{digest}.", dir=tempfile.gettempdir())
        for prog, text in texts.items():
            path = os.path.join(tmp, prog)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:  # another process wrote the same directory first
            shutil.rmtree(tmp, ignore_errors=True)
    _shim_dirs[root] = final
    return final


def _is_release_bin(d: str) -> bool:
    return os.path.dirname(d) == tempfile.gettempdir() and os.path.basename(d).startswith("pynode-otp-")


def beam_program(name: str, root: str | None = None) -> str:
    """The command that runs BEAM program ``name`` (``erl``, ``elixir``, ``iex``, ``mix``...)
    of the release :func:`otp_root` names: the host's on ``PATH``, or a script running it in
    the root. Raises (never skips) when it is missing, so CI cannot pass vacuously."""
    r = otp_root(root)
    if r is not None:
        if name not in BEAM_PROGRAMS:
            raise ValueError(f"{name!r} is not one of {BEAM_PROGRAMS}")
        return os.path.join(_release_bin(r), name)
    path = os.pathsep.join(d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if not _is_release_bin(d))
    exe = shutil.which(name, path=path)
    if exe is None:
        pkg = "elixir" if name in ("elixir", "elixirc", "iex", "mix") else "erlang-nox"
        raise RuntimeError(f"{name} is not installed: run the README's test command, which installs {pkg}")
    return exe


def activate_release(root: str | None = None) -> str | None:
    """Put the scripts of the release :func:`otp_root` names first on this process's ``PATH``
    (inherited by every command it starts), so that ``erl``, ``elixir``, ``iex``, ``mix``
    started by name are that release's. Idempotent; nothing for the host's. Returns the root."""
    r = otp_root(root)
    if r is None:
        return None
    d = _release_bin(r)
    parts = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p != d]
    os.environ["PATH"] = os.pathsep.join([d, *parts])
    return r


def require_erl(root: str | None = None) -> str:
    """The ``erl`` command (see :func:`beam_program`); raises (never skips) when it is missing."""
    return beam_program("erl", root)


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


def compile_mix_project(project: str, mix_env: str = "dev", timeout: float = 300.0, otp_root: str | None = None) -> str:
    """``mix compile`` in ``project`` (for :meth:`BeamNode.start` with ``mix_project``), with the
    mix of the release :func:`otp_root` names, into :func:`mix_build_root`.

    A file lock in that build directory serializes concurrent compiles (pytest-xdist
    workers, benchmarks); a compile with nothing to do returns in about a second. Raises
    ``RuntimeError`` with mix's output when the compile fails. Returns ``project``.
    """
    lock_path = mix_build_root(project, otp_root) / ".pynode-compile.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MIX_ENV=mix_env)
    mix = beam_program("mix", otp_root)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            r = subprocess.run([mix, "compile"], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
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
        #: the root of the release it runs from (None: the host's)
        self.otp_root: str | None = None
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
        otp_root: str | None = None,
    ) -> "BeamNode":
        """Start a node called ``name`` (``alive@host``; ``-sname`` unless ``name_flag``).

        ``mix_project``: a mix project folder (``lang="elixir"`` only); the node then runs
        ``elixir -S mix run --no-compile`` there, so the project's application is started,
        as ``iex -S mix`` does. Compile the project first (:func:`compile_mix_project`).
        ``otp_root``: the release to run (see :func:`otp_root`: ``$PYNODE_OTP_ROOT`` by
        default, ``"/"`` for the host's)."""
        if cookie is None:
            cookie = test_cookie()
        flag = name_flag or ("-sname" if "." not in name.split("@")[-1] else "-name")
        full_env = dict(os.environ)
        full_env.update(env or {})
        if lang == "erlang":
            cmd = [beam_program("erl", otp_root), flag, name, "-setcookie", cookie, "-noshell"]
            if hidden:
                cmd.append("-hidden")
            cmd += list(args)
            cmd += ["-eval", _ERL_LOOP]
        elif lang == "elixir":
            cmd = [beam_program("elixir", otp_root), "-" + flag.lstrip("-"), name, "--cookie", cookie]
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
        node.otp_root = _resolve_root(otp_root)
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


def main(argv: Sequence[str]) -> int:
    """``python -m pynode.testing PROGRAM [ARGS...]``: run a BEAM program (``erl``, ``iex``,
    ``mix test``...) of the release ``$PYNODE_OTP_ROOT`` names, as the tests do (the host's
    when it is unset); ``--release`` prints which release that is."""
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__, file=sys.stderr)
        return 2
    if argv[0] == "--release":
        print(release_label())
        return 0
    activate_release()
    prog = beam_program(argv[0])
    os.execv(prog, [prog, *argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
