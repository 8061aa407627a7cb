"""Run the README's fenced code blocks as a user would (tests/test_readme_examples.py; the
guide's, docs/GUIDE.md, in tests/test_guide.py: ``Scenario(doc=...)``).

Theory of operation
-------------------
:func:`readme_blocks` cuts README.md into its fenced blocks, each with the section (``##`` or
``###`` heading) it stands in. A *scenario* (tests/test_readme_examples.py, one per section or
group of sections) owns the blocks of its sections: it starts what they need that the README
starts in prose (a server, a node a snippet talks to) and runs every one of its blocks with
:meth:`Scenario.run`, which knows these kinds (:func:`kind`), and fails on any other:

``transcript``
    An ``elixir`` or ``sh`` block with ``iex>`` prompts. Its session is the ``iex ...``
    command of its first line (a bare line, or ``(iex ...)`` in a ``#`` comment), else the
    scenario's (the ``iex`` an earlier ``sh`` block of it started, or one it names). Each
    expression (``...>`` lines continue it) is typed into that real iex, and its value, as iex
    prints it (``inspect`` with iex's options, on one line), must match the lines after it:
    whitespace runs count as one space, ``...`` matches anything, ``#PID<0.1.0>`` any pid,
    a charlist is ``~c"..."`` and a map's keys are sorted on every release (as OTP 25 and
    Elixir 1.15+ print them; OTP 26+ prints a small map in its own order). An expression with no lines after it is only
    checked not to raise. An expression starting with one of :data:`POLLED` (a read whose value
    changes with time, which a user asks again) is typed again until it matches.
``file``
    A ``python`` block whose first line is ``# examples/NAME.py``: byte-identical to that file
    (a trailing newline aside). Running it is up to the scenario (:meth:`Scenario.start_file`).
``newfile``
    A ``python`` block whose first line is ``# NAME.py``: a file the reader saves; written,
    exactly as shown, into the terminals' directory.
``deps``
    An ``elixir`` block that is a ``defp deps do ... end``: the reader's edit of ``mix.exs`` (in
    the terminals' directory), whose own ``defp deps`` it replaces.
``excerpt``
    A ``python`` block whose first line is ``# from examples/NAME.py...``: its other lines
    appear, in one piece, in that file (which a scenario runs).
``snippet``
    Any other ``python`` block: executed in a real Python process (tests/literate_host.py)
    whose namespace holds a started ``node`` (and what the scenario's ``setup`` adds: the
    names the README implies); the scenario then calls its functions and checks the results
    with ``after`` code run in the same namespace.
``sh``
    Each line is a command typed into a terminal of its own in the scenario's directory (the
    repository root unless the scenario says otherwise; ``cd DIR && ...`` as written; ``A && B``
    one after the other; a bare ``cd DIR`` line moves every later terminal to DIR, as the
    guide's ``cd my_app``), with the scenario's environment (:attr:`Scenario.env`).
    Long-running commands (``iex``, a ``python -m pynode`` node or the ``pynode`` script's,
    ``./dev.sh node``, ``python3 -m http.server``, ``python examples/NAME.py``) start in the
    background, are awaited until they serve (iex: it evaluates; a node: its `` up: `` line; an
    example: the scenario's ``sc.ready[path]``), and are stopped at the end of the scenario by
    their pid, as a user would (Ctrl-C: a Python program must then exit with status 0 and
    print no traceback). ``./dev.sh node`` runs as written when its venv is installed for the
    current pyproject.toml; otherwise (it would pip-install first, which a test must not do
    in a shared venv) the harness runs what it then execs, ``.venv/bin/python -m pynode``; ``./dev.sh docs``
    likewise (what it runs is checked against dev.sh's text). Any other command runs to completion
    and must exit with status 0; its output is kept for the scenario to check
    (:attr:`Scenario.outputs`). A command that cannot run inside a test (``./dev.sh test``,
    which runs this test) is named in :data:`NOT_RUN` with the check that replaces it.
``config``
    An ``erlang`` block whose first line is ``%% PATH: ...``: written to PATH (mapped, below)
    for the nodes of the scenario to read; those nodes are its check.

Mapping. Before anything runs, :meth:`Scenario.map` rewrites a block's text (commands,
expressions and expected output alike): every node name ``NAME@localhost`` (or
``@127.0.0.1``) becomes ``NAME_<scenario token>@localhost`` (the order of the names is kept),
and the cookie ``test`` (the guide's ``secret``: ``Scenario(doc_cookie=...)``; ``--cookie test``,
``-c test``, ``cookie="test"``, ``Node("...", "test"``) the scenario's own, so that scenarios run side by side (pytest-xdist) without
meeting. ``Scenario(fixed_names=True)`` keeps both as written (for the seed's clients, whose
node names are built in) and holds :func:`use_case.seed_names_lock` instead. A scenario may map
more (``extra={"/etc/pynode/": str(tmp) + "/"}``, a free port for ``8000``).

Installing. The documents' ``pip install pynode-erlang`` runs as written with ``PIP_FIND_LINKS``
pointing at :func:`pynode_wheel` (a wheel of this checkout, built once per content and shared
by every test process), since the package is not on an index yet.

Adding a block: write it in README.md under a section a scenario covers (the coverage test
fails for a block no scenario owns, and a scenario fails for a block it did not run). If
it is of a kind above, nothing else is needed beyond what it talks to (start it in the
scenario) and the checks of a snippet (``after=``). A new kind: a branch in :func:`kind` and a
``_run_<kind>`` method. A new section: a function decorated ``@scenario("Heading", ...)`` in
tests/test_readme_examples.py that starts its servers and calls ``sc.run(...)`` for each block
(``sc.run_rest()`` for the rest, in order).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from pynode.testing import beam_program, compile_mix_project, wait_until

from use_case import MIX_PROJECT, ROOT, Iex, _Output, _Server, seed_names_lock

README = ROOT / "README.md"
HOST = Path(__file__).resolve().parent / "literate_host.py"

#: expressions whose value changes with time (a user asks again): typed again until they match
POLLED = ("Pynode.Jobs.status(", "Pynode.Jobs.results(", "Job.Otp.check_results(", "Pynode.Registry.members(",
          "Node.list(")

_tags = itertools.count(1)


# -- the README's blocks -----------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    index: int  # 0-based, in README order
    lang: str
    text: str  # without the fences
    line: int  # README line of the opening fence
    section: str  # the nearest ## or ### heading, without the #s
    source: str = "README.md"  # the markdown file, relative to the repository root

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def __str__(self) -> str:
        return f"{self.source}:{self.line} ({self.lang}, in {self.section!r})"


def readme_blocks(path: Path = README) -> list[Block]:
    """Every fenced block of ``path``, in order. An unclosed fence is an error."""
    blocks: list[Block] = []
    section = ""
    lines = path.read_text(encoding="utf-8").splitlines()
    source = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"^(#{1,3}) (.*)", line):
            section = m.group(2).strip()
        elif line.startswith("```"):
            lang, start = line[3:].strip(), i
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise AssertionError(f"{source}:{start + 1}: unclosed ``` fence")
            blocks.append(Block(len(blocks), lang, "\n".join(body) + "\n", start + 1, section, source))
        i += 1
    return blocks


def kind(b: Block) -> str:
    """The kind of a block (module docstring); raises for a block the harness cannot run."""
    first = b.lines[0] if b.lines else ""
    if b.lang in ("elixir", "sh") and any(s.startswith("iex>") for s in b.lines):
        return "transcript"
    if b.lang == "python":
        if re.fullmatch(r"# examples/[\w/]+\.py", first):
            return "file"
        if re.match(r"# from examples/[\w/]+\.py", first):
            return "excerpt"
        if re.fullmatch(r"# [\w-]+\.py", first):
            return "newfile"
        return "snippet"
    if b.lang == "elixir" and first.strip() == "defp deps do":
        return "deps"
    if b.lang == "sh":
        return "sh"
    if b.lang == "erlang" and re.match(r"%% /\S+:", first):
        return "config"
    raise AssertionError(f"{b}: no kind of block the README harness (tests/literate.py) knows how to run")


# -- iex transcripts ---------------------------------------------------------------------------
def parse_transcript(b: Block) -> tuple[str | None, list[tuple[str, list[str]]]]:
    """The block's own iex command (or None) and its ``(expression, expected lines)`` pairs."""
    command = None
    steps: list[tuple[str, list[str]]] = []
    for s in b.lines:
        if s.startswith("iex>"):
            steps.append((s[4:].strip(), []))
        elif s.startswith("...>") and steps:
            steps[-1] = (steps[-1][0] + "\n" + s[4:].strip(), steps[-1][1])
        elif steps:
            if s.strip():
                steps[-1][1].append(s)
        elif re.match(r"(cd \S+ && )?iex ", s):
            command = s.strip()
        elif (m := re.search(r"\((iex [^)]*)\)", s)) and s.lstrip().startswith("#"):
            command = m.group(1)
        elif s.strip():
            raise AssertionError(f"{b}: {s!r} is neither an iex command nor an iex> line")
    return command, steps


def _charlists_as_sigils(text: str) -> str:
    """Elixir < 1.15 prints a charlist as ``'ls'``; later ones (and the README) as ``~c"ls"``."""
    def sub(m: re.Match[str]) -> str:
        return m.group(0) if m.group(0).startswith('"') else '~c"' + m.group(1) + '"'
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'((?:[^\'\\]|\\.)*)\'', sub, text)


def expected_pattern(expected: list[str]) -> re.Pattern[str]:
    """The lines after an ``iex>`` expression as a pattern for the printed value."""
    text = " ".join(" ".join(expected).split())
    out = []
    for tok in re.split(r"(#PID<[\d.]+>|#PID<\.\.\.>|#Reference<[\d.]+>|#Reference<\.\.\.>|\.\.\.)", text):
        if tok.startswith("#PID<"):
            out.append(r"#PID<[\d.]+>")
        elif tok.startswith("#Reference<"):
            out.append(r"#Reference<[\d.]+>")
        elif tok == "...":
            out.append(".*?")
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out), re.S)


class IexSession(Iex):
    """A real ``iex`` (from a README command line) that shows values as iex prints them."""

    #: the (mapped) command line it was started from
    command: str = ""

    @classmethod
    def from_command(cls, command: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> "IexSession":
        """``cwd``: the directory of the terminal it is typed in (``cd DIR && iex ...``: DIR in it)."""
        argv = shlex.split(command, comments=True)
        if argv[:1] == ["cd"] and argv[2:3] == ["&&"]:
            cwd, argv = (cwd / argv[1]).resolve(), argv[3:]
        assert argv[0] == "iex", command
        args = argv[1:]
        mix = args[-2:] == ["-S", "mix"]
        if mix:
            args = args[:-2]
            if cwd == ROOT:  # the README's "(iex ... -S mix)" is in mix_compat/
                cwd = MIX_PROJECT
            if cwd == MIX_PROJECT:  # the seed; another project (the guide's) its document's `mix compile` built
                compile_mix_project(str(MIX_PROJECT))
        s = cls(args, env=env, cwd=cwd, mix=mix)
        s.command = command
        return s

    def show(self, expr: str, timeout: float = 30.0) -> str:
        """Type ``expr`` at the prompt; its value as iex prints it (one line). Raises when
        iex prints an error (``** (...)``) instead."""
        tag = f"@@{next(_tags)} "
        start = len(self.out.lines)
        # the expression on lines of its own: a trailing # comment stays a comment
        self.type(f'IO.puts("{tag}" <> Base.encode64(inspect((\n{expr}\n), pretty: true, width: :infinity, custom_options: [sort_maps: true])))')
        line = self.out.wait_for(lambda s: tag in s or s.lstrip(" .>0123456789()iex").startswith("** ("), timeout,
                                 f"{self.name}: {expr}", start)
        if tag not in line:
            raise AssertionError(f"{self.name}: iex> {expr}\nraised:\n{self.out.tail(20)}")
        return _charlists_as_sigils(base64.b64decode(line.split(tag, 1)[1].strip()).decode())

    def true(self, expr: str, timeout: float = 60.0, what: str = "") -> None:
        """Until ``expr`` (typed here) is ``true``."""
        wait_until(lambda: self.show(expr) == "true", timeout, what or f"{self.name}: {expr}", interval=0.1)


# -- the Python snippets' process --------------------------------------------------------------
class PythonHost:
    """tests/literate_host.py: a real node (or none: ``name=None``) whose namespace runs snippets."""

    def __init__(self, name: str | None, cookie: str, cwd: Path = ROOT) -> None:
        self.name = name or "(no node)"
        self.proc = subprocess.Popen([sys.executable, str(HOST), name or "-", cookie if name else "-"], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
        self.out = _Output(self.proc)
        try:
            self.out.wait_for(lambda s: s == "@@ready", 60, f"{self.name} start")
        except BaseException:
            self.kill()
            raise

    def exec(self, src: str, what: str = "snippet", timeout: float = 60.0) -> str:
        """Run ``src`` in the namespace; the repr of its last expression's value. Raises with
        the traceback when it raises."""
        assert self.proc.stdin is not None
        start = len(self.out.lines)
        self.proc.stdin.write(base64.b64encode(json.dumps({"src": src}).encode()) + b"\n")
        self.proc.stdin.flush()
        line = self.out.wait_for(lambda s: s.startswith("@@") and s != "@@ready", timeout, f"{self.name}: {what}", start)
        reply = json.loads(base64.b64decode(line[2:]))
        if not reply["ok"]:
            raise AssertionError(f"{what} on {self.name} raised:\n{reply['error']}\n--- source:\n{src}")
        return reply["value"]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Background(_Server):
    """A long-running command of an ``sh`` block, started by its own pid."""

    def __init__(self, argv: list[str], cwd: Path, name: str, ready: Callable[["Background"], Any],
                 stop_signal: int = signal.SIGINT, status: int | None = 0, env: dict[str, str | None] | None = None) -> None:
        """``env``: changes to this process's environment (a ``None`` value removes the variable)."""
        self.name, self.stop_signal, self.status = name, stop_signal, status
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=environ(env))
        self.out = _Output(self.proc)
        try:
            ready(self)
        except BaseException:
            self.kill()
            raise

    def _ask_to_stop(self) -> None:
        self.proc.send_signal(self.stop_signal)


def environ(changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with ``changes`` (a ``None`` value removes the variable)."""
    env = dict(os.environ)
    for k, v in (changes or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def pynode_wheel() -> Path:
    """A directory holding a wheel of this checkout (for ``PIP_FIND_LINKS``: the documents'
    ``pip install pynode-erlang`` as written, before the package is on an index). Built once per
    content of the files git knows (tracked, and new ones not ignored), from a copy of them,
    under a machine-wide lock (pytest-xdist workers, the README's and the guide's tests share it)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    files = sorted(rel for rel in listed if rel and (ROOT / rel).is_file() and not (ROOT / rel).is_symlink())
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    out = Path(tempfile.gettempdir()) / f"pynode-wheel-{h.hexdigest()[:16]}"
    with open(Path(tempfile.gettempdir()) / "pynode-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (out / "built").is_file():
                work = Path(tempfile.mkdtemp(prefix="pynode-wheel-build."))
                try:
                    for rel in files:
                        (work / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(ROOT / rel, work / "src" / rel)
                    env = environ({k: None for k in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "CC")})
                    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                                        "-w", str(work / "dist"), str(work / "src")], env=env, capture_output=True, text=True,
                                       timeout=300)
                    assert r.returncode == 0, f"pip wheel of the checkout failed:\n{r.stdout}\n{r.stderr}"
                    shutil.rmtree(out, ignore_errors=True)
                    shutil.copytree(work / "dist", out)
                    (out / "built").write_text("\n".join(p.name for p in (work / "dist").iterdir()) + "\n")
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert list(out.glob("pynode_erlang-*.whl")), f"no wheel in {out}"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _venv_current() -> bool:
    """Whether ``./dev.sh node`` would only exec the venv's python (its install stamp is
    current), and not install anything first (which a test must not do, in a shared venv)."""
    stamp = ROOT / ".venv" / f".installed-{DEV_SH_EXTRAS}"
    want = hashlib.md5((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().strip() == want


def _ci_runs_dev_sh_test() -> None:
    """``./dev.sh test`` runs the whole suite (this test included): instead of running it, check
    what the README says of it, that CI runs exactly it and that dev.sh has the command."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./dev.sh test\n" in ci, ".ci/run does not run ./dev.sh test"
    assert re.search(r"^\s*test\)", (ROOT / "dev.sh").read_text(), re.M), "dev.sh has no test command"


#: the pip extras dev.sh installs (``ensure_venv "test,bench"``, one stamp for node, test and docs)
DEV_SH_EXTRAS = "test,bench"


def _dev_sh_docs(args: list[str]) -> list[str]:
    """What ``./dev.sh docs [OUT]`` runs after its venv install: checked against dev.sh's text."""
    m = re.search(r"^\s*docs\)[^\n]*\n\s*ensure_venv \"([^\"]+)\"[^\n]*\n\s*(.*?) ;;$", (ROOT / "dev.sh").read_text(), re.M)
    assert m and m.group(1) == DEV_SH_EXTRAS, "dev.sh docs: not ensure_venv, then one command"
    assert m.group(2) == '"$VENV/bin/python" scripts/api_docs.py "${1:-build/api}"', m.group(2)
    return [".venv/bin/python", "scripts/api_docs.py", *(args[:1] or ["build/api"])]


#: commands that a test cannot run, with the check that stands for each
NOT_RUN: dict[str, Callable[[], None]] = {"./dev.sh test": _ci_runs_dev_sh_test}


# -- scenarios ---------------------------------------------------------------------------------
ScenarioFn = Callable[["Scenario"], None]
_SCENARIOS: dict[str, tuple[tuple[str, ...], dict[str, Any], ScenarioFn]] = {}


def scenario(*sections: str, **options: Any) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register a scenario function for the blocks of these README sections; ``options`` are
    :class:`Scenario`'s (``fixed_names=True``)."""
    def deco(fn: ScenarioFn) -> ScenarioFn:
        _SCENARIOS[fn.__name__] = (sections, options, fn)
        return fn
    return deco


def scenarios() -> dict[str, tuple[tuple[str, ...], dict[str, Any], ScenarioFn]]:
    """Every registered scenario: name -> (sections, options, function)."""
    return dict(_SCENARIOS)


def run_scenario(name: str, tmp: Path) -> None:
    """Run scenario ``name``: its function, then the checks of the end (every block ran, every
    process stopped as the README says)."""
    sections, options, fn = _SCENARIOS[name]
    with Scenario(sections, tmp, **options) as sc:
        fn(sc)


@dataclass
class Scenario:
    """The nodes and processes of one group of README sections, stopped by pid at the end."""

    sections: tuple[str, ...]
    tmp: Path
    fixed_names: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    #: the markdown file whose blocks these are (README.md, or docs/GUIDE.md)
    doc: Path = README
    #: the cookie the document writes, mapped to the scenario's own
    doc_cookie: str = "test"
    #: the directory of the scenario's terminals (a bare ``cd DIR`` line changes it)
    cwd: Path = ROOT
    #: changes to the environment of every command (a ``None`` value removes the variable)
    env: dict[str, str | None] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    blocks: list[Block] = field(init=False)
    done: set[int] = field(default_factory=set)
    #: the output of each command run to completion, by its (mapped) command line
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    #: the sessions and servers started, by (mapped) node name
    nodes: dict[str, Any] = field(default_factory=dict)
    session: IexSession | None = None
    host: PythonHost | None = None
    #: how to know that an example file an ``sh`` line runs (``python examples/NAME.py``) serves
    ready: dict[str, Callable[[Background], Any]] = field(default_factory=dict)
    _started: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.blocks = [b for b in readme_blocks(self.doc) if b.section in self.sections]
        missing = set(self.sections) - {b.section for b in self.blocks}
        assert not missing, f"no block of {self.doc.name} in the sections {sorted(missing)}"
        self.cookie = self.doc_cookie if self.fixed_names else f"readme_{self.token}"

    # mapping
    def map(self, text: str) -> str:
        for k, v in self.extra.items():
            text = text.replace(k, v)
        if self.fixed_names:
            return text
        text = re.sub(r"\b([A-Za-z][\w-]*)@(localhost|127\.0\.0\.1)\b", rf"\1_{self.token}@\2", text)
        c = re.escape(self.doc_cookie)
        text = re.sub(rf"(--cookie\s+|-c\s+){c}\b", rf"\g<1>{self.cookie}", text)
        text = re.sub(rf'(cookie=|Node\("[^"]*",\s*)"{c}"', rf'\g<1>"{self.cookie}"', text)
        return text

    def name(self, readme_name: str) -> str:
        """The node name a README name stands for in this scenario."""
        return self.map(readme_name)

    # lifetime
    def __enter__(self) -> "Scenario":
        self._lock = contextlib.ExitStack()
        if self.fixed_names:
            self._lock.enter_context(seed_names_lock())
        return self

    def __exit__(self, *exc: Any) -> None:
        errors = []
        try:
            for p in reversed(self._started):  # last started first, each by its own pid
                try:
                    rc = p.stop()
                    want = getattr(p, "status", None)
                    if exc[0] is None and want is not None and rc != want:
                        errors.append(f"{p.name} exited with status {rc}, not {want}:\n{p.out.tail(30)}")
                    if exc[0] is None and isinstance(p, Background) and want == 0 and "Traceback" in p.out.tail(100000):
                        errors.append(f"{p.name} printed a traceback when stopped:\n{p.out.tail(40)}")
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{p.name}: {e}")
                finally:
                    p.kill()
        finally:
            self._lock.close()
        if exc[0] is None:
            left = [str(b) for b in self.blocks if b.index not in self.done]
            assert not left, "blocks of the scenario's sections that it did not run:\n" + "\n".join(left)
            assert not errors, "\n".join(errors)

    def started(self, p: Any) -> Any:
        self._started.append(p)
        return p

    # blocks
    def block(self, n: int) -> Block:
        """The scenario's ``n``-th block (0-based, in README order)."""
        return self.blocks[n]

    def find(self, needle: str) -> Block:
        """The one block of the scenario containing ``needle``."""
        found = [b for b in self.blocks if needle in b.text]
        assert len(found) == 1, f"{len(found)} blocks of {self.sections} contain {needle!r}"
        return found[0]

    def run(self, b: Block, **kw: Any) -> Any:
        """Run block ``b`` by its kind (module docstring)."""
        r = getattr(self, "_run_" + kind(b))(b, **kw)
        self.done.add(b.index)
        return r

    def run_rest(self) -> None:
        for b in self.blocks:
            if b.index not in self.done:
                self.run(b)

    # kinds
    def _run_file(self, b: Block) -> Path:
        path = ROOT / b.lines[0][2:]
        assert path.read_text() == b.text, f"{b} is not the content of {path.relative_to(ROOT)}"
        return path

    def _run_newfile(self, b: Block) -> Path:
        """A file the user saves (``# NAME.py`` first): written, exactly as shown, in the
        terminals' directory."""
        path = self.cwd / b.lines[0][2:]
        path.write_text(b.text)
        return path

    def _run_deps(self, b: Block) -> Path:
        """The user's edit of ``mix.exs`` (in the terminals' directory): its ``defp deps do ...
        end`` becomes the block's text."""
        path = self.cwd / "mix.exs"
        text, n = re.subn(r"^  defp deps do\n.*?^  end\n", lambda m: b.text, path.read_text(), count=1, flags=re.S | re.M)
        assert n == 1, f"{b}: no `defp deps do ... end` in {path}"
        path.write_text(text)
        return path

    def _run_excerpt(self, b: Block) -> None:
        path = ROOT / re.match(r"# from (examples/[\w/]+\.py)", b.lines[0]).group(1)  # type: ignore[union-attr]
        body = "\n".join(b.lines[1:]) + "\n"
        assert body in path.read_text(), f"{b}: its lines are not, in one piece, in {path.relative_to(ROOT)}"

    def _run_config(self, b: Block) -> Path:
        path = Path(self.map(b.lines[0][3:].split(":", 1)[0]))
        assert str(path).startswith(str(self.tmp)), f"{b}: the harness writes {path} only under the test's tmp dir (map it)"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.map(b.text))
        return path

    def _run_snippet(self, b: Block, after: str = "", host: PythonHost | None = None) -> str:
        h = host or self.host
        assert h is not None, f"{b}: the scenario started no Python host for its snippets"
        h.exec(self.map(b.text), str(b))
        return h.exec(after, f"the checks after {b}") if after else ""

    def _run_transcript(self, b: Block, session: IexSession | None = None) -> None:
        command, steps = parse_transcript(b)
        if command is not None and session is None:
            session = self.iex(command)
        s = session or self.session
        assert s is not None, f"{b}: no iex session (no iex line in the block and none in the scenario)"
        for expr, expected in steps:
            expr, expected = self.map(expr), [self.map(e) for e in expected]
            if not expected:
                s.show(expr)
                continue
            pat = expected_pattern(expected)
            polled = any(p in expr for p in POLLED)
            deadline = time.monotonic() + (60 if polled else 0)
            while True:
                got = s.show(expr)
                if pat.fullmatch(got):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{b}: iex> {expr}\nprinted  {got}\nexpected {' '.join(expected)}")
                time.sleep(0.1)  # a user asking again; the value changes with time

    def _run_sh(self, b: Block) -> None:
        for line in b.lines:
            if line.strip() and not line.lstrip().startswith("#"):
                self.command(self.map(line))

    # commands
    def iex(self, command: str, mapped: bool = False) -> IexSession:
        """The session for an iex command (mapped here, unless ``mapped``), started once per scenario."""
        if not mapped:
            command = self.map(command)
        command = shlex.join(shlex.split(command, comments=True))  # as typed: a trailing comment is no part of it
        for n in self.nodes.values():
            if isinstance(n, IexSession) and n.command == command:
                return n
        env = {k: v for k, v in self.env.items() if v is not None}
        s = self.started(IexSession.from_command(command, env=env, cwd=self.cwd))
        self.nodes[s.name] = s
        self.session = s
        return s

    def command(self, line: str) -> Any:
        """One (mapped) command line of an ``sh`` block: in the background or to completion.
        ``A && B``: A, then B (to completion each, but the last); ``cd DIR && ...``: the rest in
        DIR; a bare ``cd DIR``: the scenario's terminals are in DIR from then on."""
        bare = line.split("#", 1)[0].strip()
        if bare in NOT_RUN:
            NOT_RUN[bare]()
            return None
        argv = shlex.split(line, comments=True)
        parts: list[list[str]] = [[]]
        for a in argv:
            if a == "&&":
                parts.append([])
            else:
                parts[-1].append(a)
        cwd, r = self.cwd, None
        for part in parts:
            assert part, f"{line}: an empty command"
            if part[0] == "cd":
                cwd = (cwd / part[1]).resolve()
                if len(parts) == 1:
                    self.cwd = cwd
                continue
            r = self._command(part, cwd, line)
        return r

    def _command(self, argv: list[str], cwd: Path, line: str) -> Any:
        if argv[0] == "iex":
            saved, self.cwd = self.cwd, cwd
            try:
                return self.iex(shlex.join(argv), mapped=True)
            finally:
                self.cwd = saved
        pynode_script = Path(argv[0]).name == "pynode" and (len(argv) == 1 or argv[1] == "node" or argv[1].startswith("-"))
        if pynode_script or argv[:2] == ["./dev.sh", "node"] or (
                argv[0].endswith(("python", "python3")) and argv[1:3] == ["-m", "pynode"]
                and (len(argv) == 3 or argv[3].startswith("-"))):
            if argv[0] == "./dev.sh" and not _venv_current():
                # what dev.sh execs once its venv is installed (it would pip-install first: not in a test)
                argv = [".venv/bin/python", "-m", "pynode", *argv[2:]]
            name = argv[argv.index("--sname" if "--sname" in argv else "--name") + 1]
            p = self.started(Background(argv, cwd, name, lambda p: p.out.wait_for(lambda s: " up: " in s, 60, f"{name} start"),
                                        env=self.env))
            p.line = line
            self.nodes[name] = p
            return p
        if argv[:2] == ["./dev.sh", "docs"] and not _venv_current():
            # what dev.sh runs once its venv is installed (checked to be so)
            argv = _dev_sh_docs(argv[2:])
        if argv[0].endswith(("python", "python3")) and argv[1:2] and argv[1].startswith("examples/"):
            assert argv[1] in self.ready, f"{line}: the scenario does not say when {argv[1]} serves (sc.ready)"
            return self.start_file(ROOT / argv[1], self.ready[argv[1]], tuple(argv[2:]), python=argv[0], cwd=cwd)
        if argv[0] == "python3" and argv[1:3] == ["-m", "http.server"]:
            port = int(argv[3])
            return self.started(Background(argv, cwd, "http.server", lambda p: wait_until(lambda: _port_open(port), 30, "http.server"),
                                           status=None, env=self.env))
        if argv[0] in ("elixir", "mix", "erl") and "-S" in argv and "mix" in argv and cwd in (ROOT, MIX_PROJECT):
            compile_mix_project(str(MIX_PROJECT))
        if argv[0] in ("elixir", "mix", "erl", "erl_call", "epmd"):
            argv = [beam_program(argv[0]), *argv[1:]]
        r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=environ(self.env))
        assert r.returncode == 0, f"{line}\nexited with status {r.returncode}:\n{r.stdout}\n{r.stderr}"
        self.outputs[line] = r
        return r

    def start_host(self, readme_name: str | None, setup: str = "", cwd: Path = ROOT) -> PythonHost:
        """The Python process the scenario's snippets run in: a node named ``readme_name``
        (mapped; ``None``: no node), with ``setup`` run in its namespace."""
        h = self.started(PythonHost(self.name(readme_name) if readme_name else None, self.cookie, cwd))
        if setup:
            h.exec(setup, "the scenario's setup")
        self.host = h
        return h

    def start_file(self, path: Path, ready: Callable[[Background], Any], args: tuple[str, ...] = (),
                   python: str = sys.executable, cwd: Path = ROOT) -> Background:
        """Run an example file as ``python FILE`` (mapped: a copy of it in the tmp dir, importing
        pynode from this checkout); stopped with Ctrl-C, after which it must exit with status 0
        and no traceback."""
        copy = self.tmp / path.name
        copy.write_text(self.map(path.read_text()))
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        exe = str((cwd / python).resolve()) if "/" in python else python
        return self.started(Background([exe, str(copy), *args], cwd, str(path.relative_to(ROOT)), ready, env=env))


