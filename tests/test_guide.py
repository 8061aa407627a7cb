"""docs/GUIDE.md, "Python workers in your Elixir cluster", run as written (harness: tests/literate.py).

The scenario is the guide's reader: a directory (in tmp) with the clone beside the application
as ``pynode/`` (a symlink to this checkout), a HOME and MIX_HOME of its own (no hex: nothing can
be fetched), ``mix new my_app --sup``, the ``mix.exs`` edit, ``mix compile``, a venv and ``pip
install pynode-erlang`` as written (``PIP_FIND_LINKS``: a wheel of this checkout, since the package
is not on an index yet; uvloop comes from PyPI), ``workers.py`` saved as shown, then the three
terminals (iex -S mix and two ``pynode`` workers), every iex transcript typed into that iex, the
redeploy of the worker that runs the job (SIGTERM, as a deploy tool stops it; started again with
the same command), the shell commands and ``curl`` of the operator page's JSON, and the results.
Node names and the cookie are the scenario's own (so runs can meet no other), the port 8080 a
free one. A block of the guide that this test does not run fails it (the harness checks).
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

import literate
from literate import Scenario, readme_blocks

pytestmark = [pytest.mark.interop, pytest.mark.slow]

GUIDE = literate.ROOT / "docs" / "GUIDE.md"
STATUS = 'Pynode.Jobs.status("batch-1")'


def _status(sc: Scenario) -> tuple[str, int]:
    """The job's node and how many images it reports done (0 before its first report)."""
    assert sc.session is not None
    got = sc.session.show(STATUS)
    node = re.search(r"node: :\"?([\w@.-]+?)\"?[,}]", got)
    assert node, got
    done = re.search(r"done: (\d+)", got)
    return node.group(1), int(done.group(1)) if done else 0


def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    t0 = time.monotonic()
    wheels = literate.pynode_wheel()
    (tmp_path / "pynode").symlink_to(literate.ROOT)  # "a clone of this repository, pynode/, next to your application"
    home = tmp_path / "home"
    home.mkdir()
    sections = tuple(dict.fromkeys(b.section for b in readme_blocks(GUIDE)))
    env: dict[str, str | None] = {
        "HOME": str(home), "MIX_HOME": str(home / ".mix"), "MIX_ARCHIVES": str(home / ".mix" / "archives"),
        "HEX_HOME": str(home / ".hex"), "HEX_OFFLINE": "1", "MIX_ENV": None, "MIX_BUILD_PATH": None,
        "MIX_BUILD_ROOT": None, "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        # the reader's shell: nothing points Python at this checkout or its venv
        "PYTHONPATH": None, "VIRTUAL_ENV": None, "PYTHONHOME": None, "PIP_REQUIRE_VIRTUALENV": None,
    }
    port = literate.free_port()
    with Scenario(sections, tmp_path, doc=GUIDE, doc_cookie="secret", cwd=tmp_path, env=env,
                  extra={"8080": str(port)}) as sc:
        blocks = iter(sc.blocks)

        def step(what: str) -> literate.Block:
            b = next(blocks)
            assert what in b.text, f"{b}: the guide's blocks are not in the order this test knows ({what!r})"
            sc.run(b)
            return b

        step("mix new my_app --sup")  # and cd my_app: the terminals are in my_app/ from here on
        assert sc.cwd == (tmp_path / "my_app").resolve()
        step("defp deps do")
        step("mix compile")
        assert (sc.cwd / "_build" / "dev" / "lib" / "pynode" / "ebin").is_dir() or \
            list(sc.cwd.glob("_build/*/dev/lib/pynode/ebin")), "mix compile did not build the pynode dependency"
        assert not (sc.cwd / "deps").exists(), "a path dependency: nothing fetched"
        step("pip install pynode-erlang")
        assert (sc.cwd / ".venv" / "bin" / "pynode").is_file()
        step("# workers.py")
        t_setup = time.monotonic() - t0

        step("iex --sname app@localhost")
        workers = step("--import workers")  # worker1 (with --http) and worker2, in the background
        step("Pynode.Registry.members()")
        step("Pynode.Jobs.start(:thumbnails")

        # 5. redeploy "that worker": the one status names, once it has checkpointed two images
        literate.wait_until(lambda: _status(sc)[1] >= 2, 30, "two images done", interval=0.1)
        owner, done_before = _status(sc)
        names = [sc.name(f"worker{i}@localhost") for i in (1, 2)]
        assert owner in names, (owner, names)
        other = names[1 - names.index(owner)]
        running = sc.nodes[owner]
        line = running.line
        assert line in {sc.map(s) for s in workers.lines}
        running.stop_signal = signal.SIGTERM  # `kill PID`, as a deploy tool does
        assert running.stop() == 0, running.out.tail()
        assert f"handed off to {other}" in running.out.tail(), running.out.tail()
        sc.command(line)  # "then start it again with the same command"
        # on the other worker, from the checkpoint: the first report there is not below the last one here
        def reported_there() -> bool:
            node, done = _status(sc)
            return node == other and done > 0
        literate.wait_until(reported_there, 30, f"the job reporting on {other}", interval=0.05)
        moved_to, done_after = _status(sc)
        assert moved_to == other and done_after >= done_before, (moved_to, done_after, done_before)
        step(STATUS)  # the transcript: on the other worker, running

        # the shell commands, while it runs (the restarted worker a member again first, as a reader sees)
        assert sc.session is not None
        sc.session.true(f'Enum.member?(Pynode.Registry.members(), :"{owner}")', 30, f"{owner} back in the registry")
        jobs_members = step("pynode jobs")
        jobs_out, members_out = (sc.outputs[sc.map(s)].stdout for s in jobs_members.lines)
        assert re.search(r"^ID\s+KIND\s+NODE\s+PID$", jobs_out, re.M), jobs_out
        assert re.search(rf'^"batch-1"\s+thumbnails\s+{re.escape(other)}\s+#PID<', jobs_out, re.M), jobs_out
        for name, runtime in ((sc.name("app@localhost"), "beam"), (names[0], "python"), (names[1], "python")):
            assert re.search(rf"^{re.escape(name)}\s+{runtime}\s+yes$", members_out, re.M), members_out
        curl = step("curl -s")
        cluster = json.loads(sc.outputs[sc.map(curl.lines[0])].stdout)
        job = [j for j in cluster["jobs"] if j["id"] == '"batch-1"']
        assert len(job) == 1 and job[0]["kind"] == "thumbnails" and job[0]["node"] == other, cluster["jobs"]
        assert {n["name"] for n in cluster["nodes"] if n["up"]} >= {sc.name("app@localhost"), *names}, cluster["nodes"]

        step("Pynode.Jobs.results(")
        t_run = time.monotonic() - t0 - t_setup
    print(f"guide: setup (mix new, compile, venv, pip install) {t_setup:.1f} s, cluster and job {t_run:.1f} s")
