"""The Elixir side as a library (elixir/): a fresh mix project outside this checkout adds
``{:pynode, path: ...}`` to its deps, compiles offline (its own HOME and MIX_HOME, no hex),
and its node joins one cluster with a Python node with no configuration at all: each sees
the other among its registry members, a job the Elixir side starts runs on the Python host,
and a kind the project provides (``Pynode.Jobs.Kinds`` in its own supervision tree) runs
jobs the Python side starts. Also: ``mix pynode.docs`` builds the library's API reference.

Everything runs with the release ``$PYNODE_OTP_ROOT`` names (the host's by default).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
import pytest

from erl_interop.terms import Atom
from pynode import jobs
from pynode.node import Node
from pynode.testing import BeamNode, await_until, beam_program, mix_build_root, test_cookie, unique_name
from node_helpers import ev, run

pytestmark = pytest.mark.interop

LIBRARY = Path(__file__).resolve().parent.parent / "elixir"
A = Atom

#: the demo project's own kind, and the application that provides it to the job host
KIND_EX = """\
defmodule Demo.Greeting do
  @moduledoc "A job kind of the demo project: collects names, greets them on finish."
  @behaviour Pynode.Jobs.Kind

  @impl true
  def kind, do: :"Demo.Greeting"
  @impl true
  def init(_id, _args), do: []
  @impl true
  def restore(_id, names) when is_list(names), do: names
  @impl true
  def handle_op({:update, name}, _id, names), do: {:changed, :ok, [name | names]}
  def handle_op(:finish, _id, names), do: {:stop, {:hello, Enum.reverse(names)}}
  def handle_op(other, _id, _names), do: {:error, {:unknown_request, other}}
end
"""

APP_EX = """\
defmodule Demo.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [{Pynode.Jobs.Kinds, [Demo.Greeting]}]
    Supervisor.start_link(children, strategy: :one_for_one, name: Demo.Supervisor)
  end
end
"""


def _isolated_env(tmp: Path) -> dict[str, str]:
    """HOME, MIX_HOME and friends in ``tmp``: nothing of the user's home is used, and with no
    hex archive anywhere, nothing can be fetched."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home), MIX_HOME=str(home / ".mix"), MIX_ARCHIVES=str(home / ".mix" / "archives"),
               HEX_HOME=str(home / ".hex"), HEX_OFFLINE="1", MIX_ENV="dev")
    env.pop("MIX_BUILD_ROOT", None)
    env.pop("MIX_BUILD_PATH", None)
    return env


def _mix(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600.0) -> str:
    r = subprocess.run([beam_program("mix"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"mix {' '.join(args)} failed in {cwd}:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture
def demo_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """``mix new demo --sup`` in a temporary directory (outside the checkout), with the
    library as its only dependency and a kind of its own; compiled."""
    assert not str(tmp_path.resolve()).startswith(str(LIBRARY.parent) + os.sep)
    env = _isolated_env(tmp_path)
    _mix(["new", "demo", "--sup"], tmp_path, env)
    proj = tmp_path / "demo"
    mix_exs = proj / "mix.exs"
    text = mix_exs.read_text()
    text, n = re.subn(r"defp deps do\n.*?\n  end", f'defp deps do\n    [{{:pynode, path: "{LIBRARY}"}}]\n  end', text,
                      flags=re.S)
    assert n == 1, text
    mix_exs.write_text(text)
    (proj / "lib" / "demo" / "greeting.ex").write_text(KIND_EX)
    (proj / "lib" / "demo" / "application.ex").write_text(APP_EX)
    out = _mix(["compile"], proj, env)
    assert "pynode" in out  # the dependency was compiled for this project, from the path
    ebin = mix_build_root(proj) / "dev" / "lib" / "pynode" / "ebin"
    assert (ebin / "Elixir.Pynode.Jobs.Host.beam").is_file(), sorted(os.listdir(ebin.parent.parent))
    assert not (proj / "deps").exists()  # a path dependency: nothing fetched
    return proj, env


def test_a_fresh_mix_project_with_the_library_joins_a_python_node(demo_project: tuple[Path, dict[str, str]]) -> None:
    proj, env = demo_project
    cookie = test_cookie()
    ename = unique_name("lib") + "@localhost"
    # `elixir -S mix run` in the project: its application, and :pynode before it as its dep
    beam = BeamNode.start(ename, cookie, lang="elixir", mix_project=str(proj), env=env, timeout=90)
    try:
        assert beam.eval("Application.started_applications() |> Enum.map(&elem(&1, 0)) |> Enum.member?(:pynode)") is True
        assert beam.eval("Pynode.Jobs.kinds()") == [A("Elixir.Demo.Greeting")]

        async def scenario() -> None:
            # no configuration on either side: discovery through the host's EPMD
            node = Node(unique_name("libpy") + "@localhost", cookie)
            await node.start()
            try:
                await await_until(lambda: A(ename) in node.registry.members(), 30, "the Elixir node in the Python registry")
                await await_until(lambda: ev(beam, f"Enum.member?(Pynode.Registry.members(), :\"{node.name}\")"), 30,
                                  "the Python node in the Elixir registry")
                # both hosts advertised everywhere: the Python one runs 'Job', the Elixir one 'Demo.Greeting'
                await await_until(lambda: ev(beam, "length(Pynode.Registry.lookup_values(Pynode.Jobs.host_key())) == 2"),
                                  30, "two job hosts")
                hosts = await ev(beam, "for {p, k} <- Pynode.Registry.lookup_values(Pynode.Jobs.host_key()), "
                                       "do: {node(p), :Job in k, :\"Demo.Greeting\" in k}")
                assert sorted(hosts) == sorted([(A(ename), False, True), (A(node.name), True, False)]), hosts

                # a job started from the Elixir project on the Python host
                r = await ev(beam, 'Pynode.Jobs.start(:Job, "lib-job", [])')
                assert r[0] == A("ok") and r[1].node == A(node.name), r
                assert await ev(beam, 'Pynode.Jobs.op("lib-job", {:update, :hi})') == (A("ok"), A("ok"))
                assert await jobs.update(node, "lib-job", A("py")) == A("ok")
                assert await ev(beam, 'Pynode.Jobs.op("lib-job", :finish)') == (A("ok"), [A("py"), A("hi"), b"lib-job"])

                # a job of the project's own kind, started from Python, runs on the Elixir host
                r = await jobs.start(node, "greet-1", kind="Demo.Greeting")
                assert r[0] == A("ok") and r[1].node == A(ename), r
                assert await jobs.update(node, "greet-1", "ada") == A("ok")
                assert await ev(beam, 'Pynode.Jobs.op("greet-1", {:update, "bob"})') == (A("ok"), A("ok"))
                assert await jobs.finish(node, "greet-1") == (A("hello"), [b"ada", b"bob"])
            finally:
                await node.stop()

        run(scenario, timeout=120)
    finally:
        beam.stop()


def test_mix_pynode_docs_builds_the_api_reference(tmp_path: Path) -> None:
    """``mix pynode.docs`` in elixir/: compiles with --warnings-as-errors and fails on any
    undocumented public module or function, else writes the reference (here into tmp_path)."""
    env = dict(_isolated_env(tmp_path), MIX_ENV="dev")
    out_dir = tmp_path / "doc"
    out = _mix(["pynode.docs", "--output", str(out_dir)], LIBRARY, env)
    assert "module(s) written" in out, out
    index = out_dir / "index.html"
    assert index.is_file() and index.stat().st_size > 0
    text = index.read_text()
    for mod in ("Pynode.Registry", "Pynode.Jobs", "Pynode.Jobs.Kind", "Pynode.Jobs.Kinds", "Pynode.Jobs.Run",
                "Pynode.Discovery", "Pynode.Application"):
        assert f'href="{mod}.html"' in text, mod
        page = out_dir / f"{mod}.html"
        assert page.is_file() and page.stat().st_size > 500, mod
    assert "reg/2" in (out_dir / "Pynode.Registry.html").read_text() or "reg(key" in (out_dir / "Pynode.Registry.html").read_text()


def test_the_library_as_a_git_dependency(tmp_path: Path) -> None:
    """``{:pynode, git: URL, sparse: "elixir"}``: mix fetches the repository and builds the
    library from its ``elixir/`` directory (here the URL is this checkout's own git
    directory, so it is the committed tree that builds, offline)."""
    env = _isolated_env(tmp_path)
    _mix(["new", "gitdemo"], tmp_path, env)
    proj = tmp_path / "gitdemo"
    mix_exs = proj / "mix.exs"
    url = f"file://{LIBRARY.parent}"
    text, n = re.subn(r"defp deps do\n.*?\n  end",
                      f'defp deps do\n    [{{:pynode, git: "{url}", sparse: "elixir"}}]\n  end', mix_exs.read_text(), flags=re.S)
    assert n == 1, text
    mix_exs.write_text(text)
    _mix(["deps.get"], proj, env)
    assert (proj / "deps" / "pynode" / "elixir" / "mix.exs").is_file()
    _mix(["compile"], proj, env)
    ebin = mix_build_root(proj) / "dev" / "lib" / "pynode" / "ebin"
    assert (ebin / "Elixir.Pynode.Registry.beam").is_file() and (ebin / "pynode.app").is_file()
