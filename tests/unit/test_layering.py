"""The module graph of `gateway`: no import cycle, no late import that dodges one, pure modules stay pure.

The graph is read from the source with `ast`: every `import` and `from ... import` at module level and
inside functions. `from package import name` depends on the package (its `__init__` runs and is read) and,
when `name` is a module, on that module too. Imports under `if TYPE_CHECKING:` never run and only count for
the checks that say so.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).parent

# Imports made inside a function on purpose: each is a documented start-up choice (a command, or a process
# that never needs the module, does not pay for importing it). Any other late import of a gateway module
# dodges a cycle, and a new late third-party import must be added here with its reason. The standard
# library is not listed: importing it late saves nothing worth a rule.
_WORKER = "the serving process imports the app only once the CLI has parsed its flags (see cli/__init__.py)"
LATE_IMPORTS: dict[str, dict[str, str]] = {
    "gateway.cli.serve": {
        "gateway.app": _WORKER,
        "gateway.logs": _WORKER,
        "gateway.server": _WORKER,
        "gateway.metrics": _WORKER,
        "gateway.migrate": "`gateway migrate` and `serve` only: the other commands never load Alembic's glue",
        "gateway.store.database": "the engine is made only by the commands that migrate",
        "gateway.mock_upstream": "`gateway mock-upstream` only: serving never loads the fake upstream",
        "uvicorn": "the multiprocess supervisor only for --workers above 1",
        "sqlalchemy": "URL parsing only when a database URL must be shown without its password",
    },
    "gateway.store.database": {
        "gateway.store.pg_driver": "asyncpg is loaded only for a Postgres database, never on SQLite",
        "sqlalchemy": "the asyncio extension (and the ORM it imports, ~7 MB) only for an async engine, "
        "which a serving process on an SQLite file never makes",
    },
    "gateway.store.objects": {"sqlalchemy": "SQLAlchemy's Postgres dialect only on Postgres"},
    "gateway.pricing": {
        "gateway.library_prices": "genai-prices (~15 MB) loads only for a model its bundled snapshot lacks",
    },
    "gateway.tokens": {"tiktoken": "a process that never counts tokens never loads the tokenizer"},
    "gateway.migrate": {"alembic": "loaded only when there is something to migrate"},
    "gateway.upstream_transport": {
        "aiohttp": "imported by the warm-up once the server is up (~0.25 s of start-up otherwise)",
        "yarl": "loaded with aiohttp, used only by the real transport",
    },
}
# Modules that import other modules by name at run time (importlib), and why.
DYNAMIC_IMPORTS = {
    "gateway.cli": "lazy commands: COMMANDS names each command's module, imported when that command runs",
}
# Modules the README calls pure: no I/O library at run time, not even through the gateway modules they import.
PURE_MODULES = (
    "gateway.chat_request",
    "gateway.conversation_fields",
    "gateway.dedupe",
    "gateway.estimates",
    "gateway.exchange",
    "gateway.headers",
    "gateway.history",
    "gateway.identity",
    "gateway.items",
    "gateway.keys",
    "gateway.money",
    "gateway.ownership",
    "gateway.proxy_paths",
    "gateway.reports",
    "gateway.responses.events",
    "gateway.responses.output",
    "gateway.responses.request",
    "gateway.sse",
    "gateway.unanswered",
    "gateway.window",
)
IO_LIBRARIES = frozenset(
    {"aiohttp", "aiosqlite", "alembic", "anyio", "asyncpg", "httpx", "sqlalchemy", "starlette", "uvicorn"}
)


@dataclass(frozen=True)
class Import:
    """One imported module, as a statement names it."""

    importer: str
    module: str  # the module the statement names (`pkg.name` when `name` is a module, else `pkg`)
    depends_on: tuple[str, ...]  # what must be imported for it to run: the module, and the package it reads
    late: bool  # inside a function
    typing_only: bool  # under `if TYPE_CHECKING:`
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _base(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module of a `from` import (relative ones resolved against the importer)."""
    if node.level == 0:
        return node.module or ""
    package = importer.split(".")
    if modules()[importer].name != "__init__.py":
        package.pop()
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package)


def _statements(importer: str, node: ast.AST, late: bool, typing_only: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _statements(importer, child, True, typing_only)
        elif isinstance(child, ast.If) and _is_type_checking(child):
            yield from _statements(importer, child, late, True)
        elif isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(importer, alias.name, (alias.name,), late, typing_only, child.lineno)
        elif isinstance(child, ast.ImportFrom):
            base = _base(importer, child)
            for alias in child.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules():
                    yield Import(importer, submodule, (submodule, base), late, typing_only, child.lineno)
                else:
                    yield Import(importer, base, (base,), late, typing_only, child.lineno)
        else:
            yield from _statements(importer, child, late, typing_only)


@functools.cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for name, path in modules().items():
        found.extend(_statements(name, ast.parse(path.read_text(encoding="utf-8")), False, False))
    return tuple(found)


def graph(*, with_typing: bool) -> dict[str, set[str]]:
    """Gateway module -> the gateway modules it imports (at run time, or also for type checking)."""
    edges: dict[str, set[str]] = {name: set() for name in modules()}
    for found in imports():
        if found.typing_only and not with_typing:
            continue
        edges[found.importer].update(m for m in found.depends_on if m in modules() and m != found.importer)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top != "gateway" and top not in sys.stdlib_module_names


def _allowed_as(found: Import) -> str:
    """The LATE_IMPORTS key this late import is listed under: the gateway module, or the distribution."""
    return found.module if found.module.startswith("gateway") else found.module.split(".")[0]


def test_the_reader_finds_late_package_and_typing_imports() -> None:
    tree = ast.parse(
        "from gateway.ui import views\n"
        "from . import headers\n"
        "if TYPE_CHECKING:\n    import httpx\n"
        "def f():\n    from gateway.app import create_app\n"
    )
    found = list(_statements("gateway.exchange", tree, False, False))
    assert [(i.module, i.depends_on, i.late, i.typing_only) for i in found] == [
        ("gateway.ui.views", ("gateway.ui.views", "gateway.ui"), False, False),
        ("gateway.headers", ("gateway.headers", "gateway"), False, False),
        ("httpx", ("httpx",), False, True),
        ("gateway.app", ("gateway.app",), True, False),
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_module_graph_has_no_cycle() -> None:
    assert len(modules()) > 50  # the reader found the package
    assert cycles(graph(with_typing=False)) == []


def test_not_even_type_only_imports_make_a_cycle() -> None:
    assert cycles(graph(with_typing=True)) == []


def test_every_late_import_is_a_documented_start_up_choice() -> None:
    undocumented = [
        f"{found.importer}:{found.line} imports {found.module} inside a function"
        for found in imports()
        if found.late
        and (found.module.startswith("gateway") or _third_party(found.module))
        and _allowed_as(found) not in LATE_IMPORTS.get(found.importer, {})
    ]
    assert undocumented == []


def test_the_late_import_list_has_no_stale_entry() -> None:
    made = {(found.importer, _allowed_as(found)) for found in imports() if found.late}
    listed = {(importer, target) for importer, targets in LATE_IMPORTS.items() for target in targets}
    assert listed - made == set()


def test_only_the_cli_imports_modules_by_name() -> None:
    dynamic = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if called in ("import_module", "__import__"):
                dynamic.add(name)
    assert dynamic == set(DYNAMIC_IMPORTS)


def test_pure_modules_load_no_io_library() -> None:
    runtime = graph(with_typing=False)
    libraries: dict[str, set[str]] = {name: set() for name in modules()}
    for found in imports():
        if not found.typing_only and found.module.split(".")[0] in IO_LIBRARIES:
            libraries[found.importer].add(found.module.split(".")[0])
    impure = {}
    for pure in PURE_MODULES:
        seen, todo = {pure}, [pure]
        while todo:
            for target in runtime[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        loaded = {f"{library} (via {name})" for name in seen for library in libraries[name]}
        if loaded:
            impure[pure] = sorted(loaded)
    assert impure == {}
