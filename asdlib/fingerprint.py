"""Content keys: which asdlib code a step or cache runs, and file hashes that are cheap to repeat.

`import_closure` follows a notebook's or module's ``import asdlib.x`` / ``from asdlib import
x`` statements with `ast`, through those modules' own asdlib imports (also the lazy ones
inside functions, so a module reached only through a function still counts). `code_hash`
hashes the sources of that closure: the pipeline keys each step with it, and the adapted
encoder and the feature store key their caches with it, so an edit to the code they run
never reuses their old output. Dynamic imports (``importlib``) and non-Python files are
not seen; a file that cannot be parsed counts as importing the whole library.

`FileHashCache` remembers the SHA-256 of data files under their (size, mtime, inode), so a
run can key everything by the content of its clips and re-hash only what changed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

from asdlib import atomic

LIBRARY = Path(__file__).resolve().parent


def _module_files(name: str) -> set[Path]:
    """The asdlib files that importing the dotted module ``name`` runs: each package
    ``__init__.py`` on the way and the module itself; empty outside asdlib (a trailing name
    that is no file, e.g. a function, adds nothing)."""
    parts = name.split(".")
    files: set[Path] = set()
    if parts[0] != LIBRARY.name:
        return files
    path = LIBRARY.parent
    for part in parts:
        path = path / part
        if (path / "__init__.py").is_file():
            files.add(path / "__init__.py")
            continue
        if path.with_suffix(".py").is_file():
            files.add(path.with_suffix(".py"))
        break
    return files


def direct_imports(source: Path) -> set[Path]:
    """The asdlib files that ``source`` imports itself (any depth of its code, relative
    imports resolved for files inside asdlib); every asdlib file if it cannot be parsed."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (SyntaxError, ValueError):
        return set(LIBRARY.rglob("*.py"))
    package: list[str] = []
    if source.is_relative_to(LIBRARY):
        package = list(source.relative_to(LIBRARY.parent).parts[:-1])
    found: set[Path] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _module_files(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only meaningful inside the package
                if not package or node.level > len(package):
                    continue
                base = ".".join(package[:len(package) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module
            found |= _module_files(base)
            for alias in node.names:  # ``from asdlib import x``: x may be a module
                found |= _module_files(f"{base}.{alias.name}")
    # the ``__init__.py`` of the packages holding ``source`` always run before it: an import
    # of a sibling through them is no dependency of the package on this file's importers
    own = {LIBRARY.parent.joinpath(*package[:i + 1], "__init__.py") for i in range(len(package))}
    return found - own


def import_closure(*sources: str | Path) -> list[Path]:
    """The asdlib source files that ``sources`` (notebook .py files or modules) import,
    directly or through other asdlib modules, sorted; an asdlib module counts itself."""
    seen: set[Path] = set()
    todo = [Path(s).resolve() for s in sources]
    seen |= {s for s in todo if s.is_relative_to(LIBRARY)}
    while todo:
        for dep in direct_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(seen)


def code_hash(*sources: str | Path) -> str:
    """SHA-256 of the sources in the import closure of ``sources`` (paths relative to the
    project, then bytes): changes when any code they can run changes."""
    h = hashlib.sha256()
    for path in import_closure(*sources):
        h.update(path.relative_to(LIBRARY.parent).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def module_code_hash(module_name: str) -> str:
    """`code_hash` of an asdlib module given by its dotted name (e.g. ``"asdlib.adaptation"``)."""
    files = sorted(_module_files(module_name))
    if not files:
        raise ValueError(f"{module_name!r} is not an asdlib module")
    return code_hash(*files)


class FileHashCache:
    """SHA-256 of files, re-computed only when a file's size, mtime or inode changed.

    The cache is a JSON file (``path``), written atomically by :meth:`save`; entries are
    keyed by the absolute path. A file rewritten in place within the same nanosecond and
    with the same size would be missed, as with every stat-based cache (git's index too).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}
        self.hits = self.misses = 0

    def sha256(self, file: str | os.PathLike) -> str:
        """Hex SHA-256 of ``file``'s bytes (from the cache when its stat is unchanged)."""
        file = Path(file).absolute()
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = str(file)
        entry = self.entries.get(key)
        if entry is not None and entry[:3] == stamp:
            self.hits += 1
            return entry[3]
        self.misses += 1
        digest = atomic.file_sha256(file)
        self.entries[key] = stamp + [digest]
        return digest

    def save(self) -> None:
        """Write the cache (a no-op without a path)."""
        if self.path is not None:
            atomic.write_text(self.path, json.dumps(self.entries, separators=(",", ":")))
