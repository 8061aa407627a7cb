"""Build the Python API reference (HTML, with pdoc) from the docstrings of ``pynode`` and
``erl_interop``; a warning is an error.

    python scripts/api_docs.py [OUT]     # default: build/api (./dev.sh docs does this)

Every public module is documented, not only those a package's ``__all__`` names (pdoc's
default): each module whose dotted name has no part starting with ``_``. The modules are
imported from wherever Python finds them (the checkout, or an installed wheel).

Exit status 0 and nothing on stderr when the reference built warning-free; 1 with the
warnings listed otherwise. tests/test_packaging.py runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.extract
import pdoc.render

PACKAGES = ("pynode", "erl_interop")


def public_modules() -> list[str]:
    """The dotted names of the documented modules, packages first."""
    names: list[str] = []
    for top in PACKAGES:
        pkg = importlib.import_module(top)
        names.append(top)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=top + "."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue  # private modules, __main__
            names.append(info.name)
    return sorted(names, key=lambda n: (n.split(".")[0] != "pynode", n))


def build(out: Path) -> list[str]:
    """Write the reference into ``out``; return the warnings (empty when it built clean)."""
    pdoc.render.configure(docformat="restructuredtext", show_source=False,
                          footer_text="pynode-erlang: Python nodes in an Erlang/Elixir cluster")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # pdoc documents a package's submodules that its __all__ names by itself: a spec
        # for one of them again would be a duplicate (a warning), so name only the rest
        specs: list[str] = []
        covered: set[str] = set()
        for name in public_modules():
            if name not in covered:
                specs.append(name)
                covered.update(pdoc.extract.walk_specs([name]))
        pdoc.pdoc(*specs, output_directory=out)
    return [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught]


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "build/api")
    problems = build(out)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"api_docs: {len(problems)} warning(s); the reference in {out} is incomplete", file=sys.stderr)
        return 1
    print(f"api_docs: {out}/index.html ({len(public_modules())} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
