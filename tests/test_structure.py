"""The package's shape: the package root holds the commands and nothing else, a command never imports
another command, no import cycles, every sub-package has a floor and never imports from above it, and
the README's "Where things are" map matches the tree.

No module imports one that imports it back.

Every `import lesion_lightning...` / `from lesion_lightning... import ...` counts, at module level or
inside a function (a lazy import hides a loop, it does not remove it); `if TYPE_CHECKING:` imports do
not run and are left out.
"""

from __future__ import annotations

import ast
import pkgutil
import re
from pathlib import Path

import pytest

import lesion_lightning

PACKAGE = "lesion_lightning"
ROOT = Path(lesion_lightning.__file__).parent


def module_files() -> dict[str, Path]:
    files = {PACKAGE: ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix=f"{PACKAGE}."):
        path = ROOT.joinpath(*info.name.split(".")[1:])
        files[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return files


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (a `from pkg import mod` names the submodule when it is one)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(n) for block in ast.walk(tree) if _type_checking_block(block) for n in ast.walk(block)}
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            # the deepest package module the import names (`a.b.func` -> `a.b`)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_finder_catches_a_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_function_level_imports(tmp_path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from lesion_lightning.models import pixelcnn\n"
        "def f():\n    from lesion_lightning.models.sampling import sample\n"
    )
    known = {
        "lesion_lightning.models",
        "lesion_lightning.models.sampling",
        "lesion_lightning.models.pixelcnn",
    }
    assert imported_modules("lesion_lightning.m", mod, known) == {"lesion_lightning.models.sampling"}


def test_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "lesion_lightning.train" in graph and len(graph) > 40, "the walk found the package's modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# the package root: the commands, in pipeline order (each `@hydra.main` over one `stage(cfg)`)
COMMANDS = ("train", "encode", "sample", "evaluate", "score", "utility", "pipeline", "bench")

U, M, D, ME, MO = (f"{PACKAGE}.{f}" for f in ("utils", "models", "data", "metrics", "modules"))
# floor -> what it may import from the package (itself always): utils is the ground floor, commands the top
FLOORS = {
    U: (),
    M: (U,),
    D: (U,),
    ME: (M, D, U),
    MO: (ME, M, D, U),
    f"{PACKAGE}.callbacks": (MO, ME, M, D, U),
    f"{PACKAGE}.samples": (MO, M, D, U),
    f"{PACKAGE}.report": (ME, D, U),
    f"{PACKAGE}.downstream": (f"{PACKAGE}.report", f"{PACKAGE}.samples", MO, ME, M, D, U),
    f"{PACKAGE}.benchmarks": (
        f"{PACKAGE}.report",
        f"{PACKAGE}.samples",
        f"{PACKAGE}.downstream",
        f"{PACKAGE}.callbacks",
        MO,
        ME,
        M,
        D,
        U,
    ),
}


def test_the_package_root_is_the_command_list() -> None:
    modules = sorted(p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py")
    assert modules == sorted(COMMANDS), f"library code at the package root (move it into a floor): {modules}"
    packages = sorted(f"{PACKAGE}.{p.name}" for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(FLOORS), f"every sub-package needs a floor in FLOORS: {packages}"


def test_commands_never_import_each_other() -> None:
    commands = {f"{PACKAGE}.{c}" for c in COMMANDS}
    graph = import_graph()
    crossing = {c: sorted(graph[c] & commands) for c in commands if graph[c] & commands}
    assert not crossing, f"a command imports another command (move the shared code into a floor): {crossing}"
    # and no library floor imports a command
    upward = {n: sorted(d & commands) for n, d in graph.items() if n not in commands and d & commands}
    assert not upward, f"library modules import commands: {upward}"


def test_the_finders_catch_a_crossing_import(tmp_path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from lesion_lightning.sample import stage\n")
    known = {"lesion_lightning.sample", "lesion_lightning.samples", "lesion_lightning.samples.folder"}
    assert imported_modules("lesion_lightning.utility", mod, known) == {"lesion_lightning.sample"}


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_lower_floors_do_not_import_upwards(floor: str) -> None:
    allowed = (floor, *FLOORS[floor])
    upward = {
        name: sorted(d for d in deps if not _within(d, allowed))
        for name, deps in import_graph().items()
        if _within(name, (floor,))
    }
    assert not {k: v for k, v in upward.items() if v}, f"{floor} imports from above it: {upward}"


def _within(module: str, floors: tuple[str, ...]) -> bool:
    """`a.b.c` is within floor `a.b` (but `a.bc` is not: a prefix match would let `sample` pass as `samples`)."""
    return any(module == f or module.startswith(f + ".") for f in floors)


def test_readme_map_matches_the_tree() -> None:
    readme = (ROOT.parent / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for cell in re.findall(r"^\| ([^|]+) \|", section, flags=re.M):
        for path in re.findall(r"`([^`]+)`", cell):
            listed.add(
                path
                if path.startswith(("lesion_lightning/", "conf/", "tests/"))
                else f"lesion_lightning/{path}"
            )
    missing = sorted(p for p in listed if not (ROOT.parent / p).exists())
    assert not missing, f"the README map names paths that do not exist: {missing}"
    # every sub-package and every top-level module (an entry point) has a row
    parts = {f"lesion_lightning/{p.name}/" for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    parts |= {f"lesion_lightning/{p.name}" for p in ROOT.glob("*.py") if p.name != "__init__.py"}
    unmapped = sorted(p for p in parts if p not in listed and p.rstrip("/") not in listed)
    assert not unmapped, f"add these to the README's 'Where things are' map: {unmapped}"
