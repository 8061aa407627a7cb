"""pytest plugin (entry point ``pytest11: pynode``): fixtures that start real BEAM peers.

Fixtures
--------
``beam_node``   a factory: ``beam_node(lang="erlang"|"elixir", cookie=..., args=...)`` starts a
                real node with a unique ``-sname`` on localhost and stops it (by its own pid) at
                the end of the test. ``node.eval("Erlang expr.")`` / ``node.eval("Elixir expr")``.
``erl_node``    one Erlang node for the test.
``elixir_node`` one Elixir node for the test.
``node_name``   a unique ``alive@localhost`` name for anything else the test starts.

Every test gets a cookie of its own (``pynode.testing.test_cookie()``, the default of
``beam_node``): discovery connects every node of a host that shares a cookie, so tests
running side by side must not share one.

``erl`` missing is an error, never a skip: a suite that cannot reach a real peer has not passed.

Another OTP release: with ``$PYNODE_OTP_ROOT`` naming the root of one (a Debian chroot, e.g.
``/var/cache/pynode/otp-sid``, as ``./dev.sh test`` builds), every peer of the run is that
release's: the fixtures start its ``erl`` / ``elixir``, and its programs come first on ``PATH``
for anything a test starts by name (``iex``, ``mix``, ``epmd``); see :mod:`pynode.testing`.
The report header names the release.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest

from . import testing
from .testing import BeamNode, unique_name


def pytest_configure(config: pytest.Config) -> None:
    testing.activate_release()


def pytest_report_header(config: pytest.Config) -> str:
    try:
        return f"pynode: BEAM peers {testing.release_label()}"
    except RuntimeError as e:
        return f"pynode: BEAM peers: {e}"


@pytest.fixture(autouse=True)
def _pynode_test_cookie() -> Iterator[str]:
    """A cookie of its own for every test (``pynode.testing.test_cookie()``): nodes of tests
    that run side by side must not discover each other and form one cluster."""
    old = testing._cookie
    testing._cookie = "pt" + uuid.uuid4().hex[:16]
    yield testing._cookie
    testing._cookie = old


@pytest.fixture
def node_name(request: pytest.FixtureRequest) -> str:
    return unique_name("t") + "@localhost"


@pytest.fixture
def beam_node() -> Iterator[Callable[..., BeamNode]]:
    started: list[BeamNode] = []

    def start(lang: str = "erlang", cookie: str | None = None, name: str | None = None, **kw: Any) -> BeamNode:
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
