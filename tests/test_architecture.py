"""The package's import structure, read from the source with `ast` (every import at any depth: module
level, inside functions, under TYPE_CHECKING): no import cycle between the top-level packages and
modules of mucode, and no private name (`_x`) imported from another of them."""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mucode"

# Private imports across packages still to remove, as (importing module, imported module, name).
# The list may only shrink: an entry that no longer occurs fails the test too.
ALLOWED_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()

# Import cycles between top-level units still to break, each as the sorted units of the cycle.
# The list may only shrink: an entry that no longer occurs fails the test too.
ALLOWED_CYCLES: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class Import:
    importer: str  # module that imports, e.g. "mucode.cli.search"
    target: str  # module imported, e.g. "mucode.search"
    names: tuple[str, ...]  # names taken from it by `from target import ...` (empty for `import target`)
    where: str  # file:line


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (SRC / relative).with_suffix(".py").is_file() or (SRC / relative / "__init__.py").is_file()


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> list[Import]:
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                Import(importer, alias.name, (), where) for alias in node.names if alias.name.split(".")[0] == "mucode"
            ]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(importer, is_package, node)
            if target.split(".")[0] != "mucode":
                continue
            names = tuple(alias.name for alias in node.names)
            submodules = [n for n in names if is_module(f"{target}.{n}")]  # `from mucode import store`
            found += [Import(importer, f"{target}.{n}", (), where) for n in submodules]
            rest = tuple(n for n in names if n not in submodules)
            if rest:
                found.append(Import(importer, target, rest, where))
    return found


def unit(module: str) -> str:
    """The top-level package or module a module belongs to: mucode.cli.search -> mucode.cli."""
    return ".".join(module.split(".")[:2])


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]


def private_imports(imports: list[Import]) -> dict[tuple[str, str, str], str]:
    return {
        (imp.importer, imp.target, name): imp.where
        for imp in imports
        for name in imp.names
        if name.startswith("_") and not name.startswith("__") and unit(imp.importer) != unit(imp.target)
    }


def cycles(imports: list[Import]) -> dict[tuple[str, ...], list[str]]:
    """Strongly connected groups of units (more than one), each with one cycle through them spelled
    out with the import sites of its edges."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for imp in imports:
        a, b = unit(imp.importer), unit(imp.target)
        if a != b:
            edges[a].setdefault(b, f"{imp.where} ({imp.importer} -> {imp.target})")
    groups = [g for g in strongly_connected(edges) if len(g) > 1]
    return {tuple(sorted(g)): one_cycle(g, edges) for g in groups}


def strongly_connected(edges: dict[str, dict[str, str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative)."""
    nodes = set(edges) | {b for targets in edges.values() for b in targets}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def one_cycle(group: set[str], edges: dict[str, dict[str, str]]) -> list[str]:
    """A shortest cycle through the group's first unit (breadth-first), as its import sites."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, {})):
                if child not in group or child in previous:
                    continue
                previous[child] = node
                if child == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(previous[path[-1]])
                    path.reverse()
                    return [edges[a][b] for a, b in zip(path, path[1:])]
                following.append(child)
        frontier = following
    return []


def test_the_import_walk_sees_lazy_imports_and_resolves_submodules():
    walked = all_imports()
    cli_search = {imp.target for imp in walked if imp.importer == "mucode.cli.search"}
    assert "mucode.execution" in cli_search  # imported inside a function only
    assert any(
        imp.target == "mucode.episode" and imp.importer == "mucode.metrics" for imp in walked
    )  # under TYPE_CHECKING
    assert unit("mucode.cli.search") == "mucode.cli" and unit("mucode.search") == "mucode.search"
    edges = {"a": {"b": "a->b"}, "b": {"c": "b->c"}, "c": {"a": "c->a"}, "d": {"a": "d->a"}}
    assert strongly_connected(edges)[0] == {"a", "b", "c"} and one_cycle({"a", "b", "c"}, edges) == [
        "a->b",
        "b->c",
        "c->a",
    ]


def test_no_import_cycle_between_top_level_packages():
    found = cycles(all_imports())
    new = {group: path for group, path in found.items() if group not in ALLOWED_CYCLES}
    assert not new, "import cycles between top-level units of mucode:\n" + "\n".join(
        f"{' <-> '.join(group)}:\n    " + "\n    ".join(path) for group, path in new.items()
    )
    gone = ALLOWED_CYCLES - set(found)
    assert not gone, f"these allowed cycles are gone; remove them from ALLOWED_CYCLES: {sorted(gone)}"


def test_no_private_name_is_imported_across_packages():
    found = private_imports(all_imports())
    new = {key: where for key, where in found.items() if key not in ALLOWED_PRIVATE_IMPORTS}
    assert not new, "private names imported across packages:\n" + "\n".join(
        f"{where}: from {target} import {name} (in {importer})"
        for (importer, target, name), where in sorted(new.items())
    )
    gone = ALLOWED_PRIVATE_IMPORTS - set(found)
    assert not gone, (
        f"these allowed private imports are gone; remove them from ALLOWED_PRIVATE_IMPORTS: {sorted(gone)}"
    )


if __name__ == "__main__":
    pytest.main([__file__, "-q"])


def documented_layers() -> dict[str, int]:
    """docs/architecture.md's layer table: unit (mucode.X) -> layer."""
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    layers: dict[str, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            for name in cells[1].split(","):
                layers[f"mucode.{name.strip().strip('`')}"] = int(cells[0])
    return layers


def test_every_import_goes_down_the_documented_layers():
    """docs/architecture.md names every top-level unit once, and a unit imports only lower layers."""
    layers = documented_layers()
    units = {unit(module_name(path)) for path in PACKAGE.rglob("*.py")} - {"mucode"}
    assert set(layers) == units, f"not in docs/architecture.md: {units - set(layers)}; gone: {set(layers) - units}"
    upward = sorted(
        f"{imp.where}: {unit(imp.importer)} (layer {layers[unit(imp.importer)]}) imports {unit(imp.target)} "
        f"(layer {layers[unit(imp.target)]})"
        for imp in all_imports()
        if unit(imp.importer) in layers
        and unit(imp.target) in layers
        and unit(imp.importer) != unit(imp.target)
        and layers[unit(imp.target)] >= layers[unit(imp.importer)]
    )
    assert not upward, "\n".join(upward)
