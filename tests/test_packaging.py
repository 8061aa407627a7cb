"""The package as a user gets it (issue 13): ``python -m build`` makes an sdist and, from it,
a wheel with the compiled C accelerator; the wheel installs into a fresh virtualenv outside
the checkout, where a small project (tests/wheel_project/) runs the pytest plugin's fixtures
against real erl/elixir nodes and the ``pynode`` console script runs. The sdist builds on a
machine without a C compiler too, into a wheel with the pure-Python codec, and says so. The
Python API reference builds from the docstrings with no warning.

The build starts from a copy of the files git knows (tracked, and new ones not ignored), so
the checkout's build output (``*.so``, ``*.egg-info``, ``build/``) cannot leak into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "wheel_project"
DIST = "pynode_erlang-0.1.0"
NO_ACCELERATOR = "pynode-erlang: the C accelerator erl_interop._speedups did not build ("

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point a subprocess at the checkout or its venv,
    or choose the pure codec (``ERL_INTEROP_PURE``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "ERL_INTEROP_PURE", "PYTHONHOME", "CC", "PYTHONSAFEPATH")
           and not k.startswith(("PYTEST_", "PIP_REQUIRE"))}
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def copy_source(dest: Path) -> None:
    """The files git knows (tracked, and new ones .gitignore does not exclude), as they are
    in the work tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.skipif(os.environ.get("ERL_INTEROP_PURE", "") not in ("", "0"),
                    reason="builds and checks both codecs itself, in its own virtualenv: once per ./dev.sh test "
                    "is enough (the ERL_INTEROP_PURE=1 pass repeats the in-checkout suite)")
def test_build_install_and_run_outside_the_checkout(tmp_path):
    t0 = time.monotonic()
    src, dist, venv, proj = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "project"
    copy_source(src)
    # sdist, then the wheel from the sdist (python -m build's default): the sdist is complete
    run([sys.executable, "-m", "build", "--outdir", dist, src], tmp_path)
    sdist, wheel = dist / f"{DIST}.tar.gz", next(dist.glob(f"{DIST}-*.whl"))
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for need in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in", "erl_interop/_speedups.c",
                 "erl_interop/_speedups.pyi", "erl_interop/py.typed", "pynode/py.typed", "pynode/cli/__init__.py",
                 "pynode/pytest_plugin.py", "erl_interop/codec.py"):
        assert need in names, need
    assert not any(n.endswith((".so", ".pyc")) for n in names), names
    with zipfile.ZipFile(wheel) as z:
        wnames = set(z.namelist())
        meta = z.read(f"{DIST}.dist-info/METADATA").decode()
        entry_points = z.read(f"{DIST}.dist-info/entry_points.txt").decode()
    assert any(n.startswith("erl_interop/_speedups") and n.endswith(".so") for n in wnames), wnames
    assert "erl_interop/_speedups.c" not in wnames
    assert {"erl_interop/_speedups.pyi", "erl_interop/py.typed", "pynode/py.typed"} <= wnames
    assert f"{DIST}.dist-info/licenses/LICENSE" in wnames
    for line in ("Name: pynode-erlang", "License-Expression: Apache-2.0", "Requires-Python: >=3.11",
                 "Project-URL: Source, ", "Classifier: Typing :: Typed", "Description-Content-Type: text/markdown"):
        assert line in meta, line
    assert "pynode = pynode.cli:main" in entry_points and "pynode = pynode.pytest_plugin" in entry_points
    t_build = time.monotonic() - t0

    # a fresh virtualenv outside the checkout, the wheel and pytest in it (from PyPI)
    run([sys.executable, "-m", "venv", venv], tmp_path)
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, "pytest>=8"], tmp_path)
    shutil.copytree(PROJECT, proj)
    r = run([py, "-m", "pytest", "-p", "no:xdist"], proj, PATH=path, PYNODE_CHECKOUT=str(ROOT),
            EXPECT_ACCELERATED="1")
    assert "6 passed" in r.stdout, r.stdout
    assert "pynode: BEAM peers" in r.stdout, r.stdout  # the plugin came in by its entry point
    r = run([bin_dir / "pynode", "--help"], tmp_path, PATH=path)
    assert r.stdout.startswith("usage: pynode ") and "run_job" in r.stdout, r.stdout
    r = run([bin_dir / "pynode", "--version"], tmp_path, PATH=path)
    assert r.stdout == "pynode-erlang 0.1.0; codec: C accelerator\n", r.stdout
    t_install = time.monotonic() - t0 - t_build

    # no C compiler: the sdist still builds, says why the accelerator is missing, and the
    # wheel it makes has the pure-Python codec
    nocc = tmp_path / "nocc"
    r = run([py, "-m", "pip", "wheel", "-v", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
             "-w", nocc, sdist], tmp_path, PATH=path, CC="/bin/false")
    assert NO_ACCELERATOR in r.stdout + r.stderr, r.stdout[-3000:]
    assert "installing the pure-Python codec" in r.stdout + r.stderr
    with zipfile.ZipFile(next(nocc.glob(f"{DIST}-*.whl"))) as z:
        assert not any(n.endswith(".so") for n in z.namelist()), z.namelist()
    # a plain `pip install` from the sdist: pip shows a build backend's output only with -v
    # or on failure, so the installed package says it (pynode --version, the node's log)
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-cache-dir", "--force-reinstall",
         "--disable-pip-version-check", sdist], tmp_path, PATH=path, CC="/bin/false")
    r = run([bin_dir / "pynode", "--version"], tmp_path, PATH=path)
    assert "codec: the pure-Python codec: the C accelerator erl_interop._speedups is not installed" in r.stdout, r
    r = run([py, "-m", "pytest", "-q", "-p", "no:xdist", "check_install.py"], proj, PATH=path,
            PYNODE_CHECKOUT=str(ROOT), EXPECT_ACCELERATED="0")
    assert "3 passed" in r.stdout, r.stdout
    # and a contributor's editable install of a source tree, without a compiler either
    src = tmp_path / "editable-src"
    copy_source(src)
    r = run([py, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
             "-e", src], tmp_path, PATH=path, CC="/bin/false")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run([py, "-c", "import erl_interop.codec as c, erl_interop; print(c.ACCELERATED, erl_interop.__file__)"],
            tmp_path, PATH=path)
    assert r.stdout.startswith(f"False {src}"), r
    print(f"build {t_build:.1f} s, venv+install+project {t_install:.1f} s, "
          f"no-compiler {time.monotonic() - t0 - t_build - t_install:.1f} s")


def test_api_reference_builds_from_the_docstrings_without_a_warning(tmp_path):
    out = tmp_path / "api"
    r = subprocess.run([sys.executable, "-W", "error", str(ROOT / "scripts" / "api_docs.py"), str(out)], cwd=tmp_path,
                       env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr[-4000:]
    for page, ids in (("pynode.html", ("Node", "GenServer", "Process", "CallError")),
                      ("erl_interop.html", ("Handshake", "Connection", "Atom", "Pid")),
                      ("pynode/jobs.html", ("JobKind", "RunKind", "start")),
                      ("pynode/testing.html", ("BeamNode", "unique_name")),
                      ("erl_interop/codec.html", ("encode", "decode"))):
        html = (out / page).read_text()
        for name in ids:
            assert f'id="{name}"' in html, (page, name)
