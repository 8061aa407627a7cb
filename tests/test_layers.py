"""The direction of dependency, checked over the source (issue 12): each room of ``erl_interop``
and ``pynode`` imports only rooms of its own layer or below, and no module imports inside a
function (an import hidden in a function is how a cycle hides). A lower layer reaches a higher
one only through a callback or a ``Protocol`` it defines itself.

    erl_interop            the wire (never imports pynode)
      <- pynode.errors, pynode.config
      <- pynode.core       processes and signals
      <- pynode.dist       the node table, connections, control messages in and out
      <- pynode.otp        gen, gen_server, rpc, net_kernel
      <- pynode.registry
      <- pynode.discovery, pynode.jobs
      <- pynode.node       the facade and composition root
      <- pynode.web        the operator page (imported by the CLI only)
      <- pynode.cli
      <- pynode.testing, pynode.pytest_plugin, pynode (the package's re-exports)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: room (longest matching module prefix) -> layer; a module may import its own layer or lower
LAYERS: dict[str, int] = {
    "erl_interop": 0,
    "pynode.errors": 1,
    "pynode.config": 1,
    "pynode.core": 2,
    "pynode.dist": 3,
    "pynode.otp": 4,
    "pynode.registry": 5,
    "pynode.discovery": 6,
    "pynode.jobs": 6,
    "pynode.node": 7,
    "pynode.web": 8,
    "pynode.cli": 8,
    "pynode.__main__": 8,
    "pynode.testing": 9,
    "pynode.pytest_plugin": 9,
    "pynode": 9,
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in ("erl_interop", "pynode"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join(parts), path))
    return out


def _room(module: str) -> str:
    best = ""
    for room in LAYERS:
        if (module == room or module.startswith(room + ".")) and len(room) > len(best):
            best = room
    return best


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(dotted: str) -> bool:
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _imports(module: str, path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    top: list[str] = []
    hidden: list[tuple[int, str]] = []

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        for st in body:
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                if isinstance(st, ast.Import):
                    names = [a.name for a in st.names]
                else:
                    base = _resolve(module, is_pkg, st)
                    # `from pkg import sub` imports the module pkg.sub when there is one
                    names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in st.names]
                if in_function:
                    hidden.extend((st.lineno, n) for n in names)
                top.extend(names)
            elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(st.body, True)
            elif isinstance(st, ast.ClassDef):
                visit(st.body, in_function)
            elif isinstance(st, ast.If):
                test = st.test
                type_checking = isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                if not type_checking:  # annotations only: they create no import at run time
                    visit(st.body, in_function)
                visit(st.orelse, in_function)
            elif isinstance(st, (ast.Try, ast.With, ast.AsyncWith, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(st, field, []), in_function)
                for h in getattr(st, "handlers", []):
                    visit(h.body, in_function)

    visit(tree.body, False)
    return top, hidden


MODULES = _modules()


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down(module: str, path: Path) -> None:
    room = _room(module)
    assert room, f"{module} belongs to no room of LAYERS: add it there (and to the README's Layout)"
    top, _ = _imports(module, path)
    for imp in top:
        target = _room(imp)
        if not target or target == room:
            continue  # the standard library, a dependency, or the module's own room
        if module.startswith("erl_interop"):
            assert not imp.startswith("pynode"), f"{module} imports {imp}: the wire never imports pynode"
        assert LAYERS[target] <= LAYERS[room], (
            f"{module} (layer {LAYERS[room]}, {room}) imports {imp} (layer {LAYERS[target]}, {target}): "
            "a lower layer reaches a higher one only through a callback or Protocol it defines"
        )


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_imports_inside_functions(module: str, path: Path) -> None:
    _, hidden = _imports(module, path)
    assert not hidden, f"{module} imports inside functions: {hidden}"


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for pkg in [p for p in (ROOT / "pynode").rglob("__init__.py")] + [ROOT / "erl_interop" / "__init__.py"]:
        doc = ast.get_docstring(ast.parse(pkg.read_text(encoding="utf-8"))) or ""
        assert "import" in doc.lower(), f"{pkg.relative_to(ROOT)}: the opening docstring must say what the package may import"
