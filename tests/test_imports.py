"""Issue 16 item 5: imagekit's modules import each other without a cycle, and use no other module's private names.

Every `import` statement counts, wherever it is: at module level, inside a function (a function-local import
does not hide a cycle, it only delays it) and under `if TYPE_CHECKING:`. The only imports left inside
functions without being part of this graph are the heavy or optional third-party ones below (imported late
so `imagekit --help` and the commands that never use them do not load them).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.util import REPO

PACKAGE = REPO / "imagekit"

# Third-party modules imagekit imports inside functions, on purpose: heavy (boto3/botocore ~0.3 s, moto, rich)
# or optional (guestfs, parted, dissect: a missing one is a clear error through util/optional.py only when used).
LATE_IMPORTS = frozenset({"guestfs", "parted", "boto3", "botocore", "moto", "dissect", "rich", "jinja2", "yaml"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def from_base(module: str, node: ast.ImportFrom) -> str:
    """The module a `from X import ...` in `module` imports from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    return ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))


def imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules an import statement names (`from imagekit.boot import guest` names imagekit.boot.guest)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = from_base(module, node)
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def owner(name: str) -> str | None:
    """The imagekit module a dotted name is (or is in); None outside imagekit."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    for node in ast.walk(ast.parse(MODULES[module].read_text(), str(MODULES[module]))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in imported(module, node):
                yield node, name


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module in MODULES:
        targets = {owner(name) for _, name in imports(module)}
        edges[module] = {t for t in targets if t is not None and t != module}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules in import order, the first repeated at the end), or None. Recursive: a path is at
    most as long as imagekit has modules (~150), well inside Python's default limit, which is left alone."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_uses_another_modules_private_names() -> None:
    """`from imagekit.x import _y`, or `x._y` on an imported imagekit module: a private name is its module's own."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and owner(base := from_base(module, node)):
                for alias in node.names:
                    if f"{base}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {alias.name} from {base}")
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: uses {aliases[node.value.id]}.{node.attr}")
    assert found == []


def test_function_local_imports_of_third_party_modules_are_the_late_ones() -> None:
    """Inside a function, imagekit modules (edges above) or the stdlib; of third-party modules only LATE_IMPORTS."""
    found = []
    for module, path in MODULES.items():
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    for name in imported(module, node):
                        top = name.partition(".")[0]
                        if top not in ("imagekit", *sys.stdlib_module_names, *LATE_IMPORTS):
                            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert found == []
