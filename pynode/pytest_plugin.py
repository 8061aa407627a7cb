"""pytest plugin (entry point ``pytest11: pynode``): fixtures that start real BEAM peers.

Fixtures
--------
``beam_node``   a factory: ``beam_node(lang="erlang"|"elixir", cookie=..., args=...)`` starts a
                real node with a unique ``-sname`` on localhost and stops it (by its own pid) at
                the end of the test. ``node.eval("Erlang expr.")`` / ``node.eval("Elixir expr")``.
``erl_node``    one Erlang node for the test.
``elixir_node`` one Elixir node for the test.
``node_name``   a unique ``alive@localhost`` name for anything else the test starts.

``erl`` missing is an error, never a skip: a suite that cannot reach a real peer has not passed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from .testing import BeamNode, unique_name


@pytest.fixture
def node_name(request: pytest.FixtureRequest) -> str:
    return unique_name("t") + "@localhost"


@pytest.fixture
def beam_node() -> Iterator[Callable[..., BeamNode]]:
    started: list[BeamNode] = []

    def start(lang: str = "erlang", cookie: str = "test", name: str | None = None, **kw: Any) -> BeamNode:
        n = BeamNode.start(name or (unique_name("ex" if lang == "elixir" else "erl") + "@localhost"),
                           cookie, lang=lang, **kw)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop(timeout=5)


@pytest.fixture
def erl_node(beam_node: Callable[..., BeamNode]) -> BeamNode:
    return beam_node("erlang")


@pytest.fixture
def elixir_node(beam_node: Callable[..., BeamNode]) -> BeamNode:
    return beam_node("elixir")
