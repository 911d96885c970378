"""The shape checker: reads every import statement of a package folder and reports what breaks its architecture.

Owns the rules of docs/architecture.md as data (WINGS, BASE, ENTRY_POINTS, BOUNDARIES) and one function,
`check(folder)`, that reads a package with the standard library's `ast` (every `import` and `from … import`
anywhere in a file: module level, function bodies, `if TYPE_CHECKING:`; relative and absolute forms) and returns
its findings as sentences, each starting with its rule:
- "circle": an import circle among the package's modules;
- "upward": a module of a lower wing importing from a higher one (the order of WINGS; the base is below every
  wing, the entry points above every wing);
- "private": a private name (`_x`, not a dunder) taken from another module, by `from m import _x` or `m._x`;
- "boundary": a third-party or standard module imported outside the files allowed to import it;
- "missing": an import of a module of the package that does not exist (a path left behind by a move).

Never imports the package it reads. Run it by hand: `python -m tests.shape pythia_compare`.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

# The wings, highest first: a module may import from its own wing, from any wing after it, and from the base.
WINGS = ("web", "sweeps", "runs", "sources", "models")
# The shared base at the package top: every wing may import it; it imports only itself.
BASE = ("config", "errors", "params", "files", "threads", "variants")
# The entry points at the package top: above every wing; nothing in the package imports them, but the package's
# own __init__ (the library API's lazy re-export) and __main__.
ENTRY_POINTS = ("__init__", "__main__", "cli", "api")
# Who may import what (a module prefix, then the files, relative to the package folder, that may import it).
BOUNDARIES = {
    "llama_cpp": ("models/*",),
    "gradio": ("web/ui.py",),
    "sqlite3": ("runs/store.py", "runs/migrations.py", "runs/notebookstore.py", "sweeps/store.py"),
    "sqlite_utils": ("runs/store.py", "runs/migrations.py", "runs/notebookstore.py", "sweeps/store.py"),
    "huggingface_hub": ("sources/hub.py",),
    "httpx": ("sources/hub.py",),
    "httpx2": ("sources/hub.py",),
    "socket": ("sources/hub.py",),
    "urllib.request": ("sources/hub.py",),
}


@dataclass
class Module:
    name: str  # dotted, from the package folder's name: "pkg.runs.store"
    path: Path
    rel: str  # the path relative to the package folder, with "/": "runs/store.py"
    is_package: bool  # an __init__.py
    imports: list[tuple[str, int]] = field(default_factory=list)  # (dotted module imported, line)
    names: list[tuple[str, str, int]] = field(default_factory=list)  # (module, name taken from it, line)


def _modules(folder: Path) -> dict[str, Module]:
    pkg = folder.name
    found: dict[str, Module] = {}
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).as_posix()
        parts = [pkg, *rel[:-3].split("/")]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = Module(".".join(parts), path, rel, is_package)
    return found


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    """The absolute module a `from … import` names."""
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    if not mod.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _read(mod: Module, known: dict[str, Module]) -> None:
    tree = ast.parse(mod.path.read_text(encoding="utf-8"), filename=str(mod.path))
    aliases: dict[str, str] = {}  # a local name bound to a module of the package
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                mod.imports.append((a.name, node.lineno))
                if a.name in known:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(mod, node)
            for a in node.names:
                full = f"{source}.{a.name}"
                if full in known:  # `from pkg import module`
                    mod.imports.append((full, node.lineno))
                    aliases[a.asname or a.name] = full
                elif node.module is None and not a.name.startswith("__"):  # `from . import x`: x must be a module
                    mod.imports.append((full, node.lineno))
                else:
                    mod.imports.append((source, node.lineno))
                    mod.names.append((source, a.name, node.lineno))
    for node in ast.walk(tree):  # `module._x` through a name bound to a module of the package
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            mod.names.append((aliases[node.value.id], node.attr, node.lineno))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _layer(mod: Module) -> tuple[int, str]:
    """(rank, where): 0 for the entry points, 1.. for the wings in order, len(WINGS)+1 for the base."""
    parts = mod.rel[:-3].split("/")
    if len(parts) > 1:
        wing = parts[0]
        return (1 + WINGS.index(wing), wing) if wing in WINGS else (0, wing)
    stem = parts[0]
    if stem in BASE:
        return len(WINGS) + 1, "the base"
    return 0, "an entry point"


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (or a module importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def check(folder: str | Path) -> list[str]:
    """Every finding for the package in `folder`, as sentences starting with their rule, sorted."""
    folder = Path(folder)
    known = _modules(folder)
    for mod in known.values():
        _read(mod, known)
    findings: list[str] = []
    root = folder.name
    graph: dict[str, set[str]] = {name: set() for name in known}
    for mod in known.values():
        for target, line in mod.imports:
            if target in known and target != mod.name:
                # importing a parent package's own name (`from .. import x`) is an edge to that __init__
                graph[mod.name].add(target)
            elif target == root or target.startswith(root + "."):
                continue  # a name of the package that is not a module: reported through its module above
    for comp in _circles(graph):
        findings.append(f"circle: {' <-> '.join(comp)}")
    for mod in known.values():
        rank, where = _layer(mod)
        for target, line in sorted(set(mod.imports)):
            dest = known.get(target)
            if dest is not None and dest is not mod:
                trank, twhere = _layer(dest)
                if dest.is_package and dest.name == root:
                    trank, twhere = 0, "an entry point"
                if trank < rank and not (mod.is_package and dest.name.startswith(mod.name + ".")):
                    findings.append(f"upward: {mod.rel}:{line} ({where}) imports {dest.name} ({twhere})")
            if (target == root or target.startswith(root + ".")) and target not in known:
                findings.append(f"missing: {mod.rel}:{line} imports {target}, which is not a module of the package")
            elif target == mod.name and not mod.is_package:
                findings.append(f"missing: {mod.rel}:{line} imports {target}, the module itself (a path left "
                                f"behind by a move)")
            if not (target == root or target.startswith(root + ".")):
                for prefix, allowed in BOUNDARIES.items():
                    if (target == prefix or target.startswith(prefix + ".")) and not any(
                            fnmatch(mod.rel, a) for a in allowed):
                        findings.append(f"boundary: {mod.rel}:{line} imports {target}, allowed only in "
                                        f"{', '.join(allowed)}")
        for source, name, line in sorted(set(mod.names)):
            if source != mod.name and source in known and _private(name):
                findings.append(f"private: {mod.rel}:{line} takes {name} from {source}")
    return sorted(set(findings))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.shape PACKAGE_FOLDER", file=sys.stderr)
        return 2
    findings = check(argv[0])
    for f in findings:
        print(f)
    print(f"{len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
