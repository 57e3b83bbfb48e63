"""Run the numbered notebooks in order through papermill, as one parameterised pipeline.

``python -m asdlib.pipeline --run demo`` writes ``results/demo/``: the resolved config,
each executed notebook, and what each step saves. A step whose notebook, parameters,
library code and upstream steps are unchanged since this checkout ran it is skipped (the
record is ``work/pipeline_state.json``, never committed, so a fresh clone runs every step
and rebuilds the data and checkpoints behind the committed outputs); a failing step stops
the run naming the notebook and the cell, and everything finished before it is kept.

A step's key (`step_fingerprint`) hashes its notebook source, its parameters, the key of
the step before it (the first step: the run config), and the sources of the asdlib
modules the notebook uses: its ``import asdlib.x`` / ``from asdlib import x`` statements,
followed with `ast` through those modules' own asdlib imports (`import_closure`). Imports
anywhere in a file count, also the lazy ones inside functions, so a module reached only
through a function still belongs to the step. An edit to a module outside a step's
closure does not re-run that step (a step re-run still re-runs every later step, through
the upstream key). Dynamic imports (``importlib``) and non-Python files are not seen; a
file that cannot be parsed counts as importing the whole library.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
import time
from pathlib import Path

from asdlib import atomic
from asdlib.experiment import PROJECT_ROOT, STEPS, RunConfig

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
LIBRARY = PROJECT_ROOT / "asdlib"
KERNEL_NAME = "asdlib"


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(PROJECT_ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


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


def _asdlib_imports(source: Path) -> set[Path]:
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
    return found


def import_closure(source: str | Path) -> list[Path]:
    """The asdlib source files ``source`` (a notebook .py or a module) imports, directly
    or through other asdlib modules, sorted."""
    seen: set[Path] = set()
    todo = [Path(source)]
    while todo:
        for dep in _asdlib_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(seen)


def step_fingerprint(step: str, params: dict, upstream: str) -> str:
    """Content key of one step: notebook source, parameters, upstream key, and the sources
    of the asdlib modules the notebook imports (`import_closure`)."""
    notebook = NOTEBOOK_DIR / f"{step}.py"
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(upstream.encode())
    h.update(_sha256_files(import_closure(notebook)).encode())
    return h.hexdigest()


def _to_notebook(step: str, dest: Path) -> Path:
    """The percent-format source of ``step`` as an .ipynb (the .py is the reviewed copy)."""
    import jupytext

    nb = jupytext.read(NOTEBOOK_DIR / f"{step}.py")
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (asdlib)",
                                 "language": "python"}
    jupytext.write(nb, dest)
    return dest


def _cell_of_error(output_path: Path) -> str:
    """Describe the failing cell of an executed notebook (papermill marks it)."""
    try:
        nb = json.loads(output_path.read_text())
    except (OSError, ValueError):
        return "unknown cell"
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = "".join(cell.get("source", "")).strip().splitlines()[:1]
                return f"cell {i} ({first[0][:60] if first else ''!r}): {out.get('ename')}: {out.get('evalue')}"
    return "unknown cell"


def run_pipeline(config: RunConfig, results_root: str | Path = PROJECT_ROOT / "results",
                 steps: tuple[str, ...] | None = None, force: bool = False,
                 kernel_name: str | None = KERNEL_NAME, log=print) -> Path:
    """Execute the notebooks of ``steps`` (all by default) for ``config``; returns the run dir."""
    import papermill as pm

    run_dir = Path(results_root).resolve() / config.run
    nb_dir = run_dir / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    atomic.write_text(config_path, config.to_json())
    state_path = run_dir / "pipeline_state.json"  # committed: what made the outputs
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    # the skip decision reads the state under work/ (never committed): a fresh clone has
    # the committed outputs but not the datasets, checkpoints and features behind them
    local_path = run_dir / "work" / "pipeline_state.json"
    local = json.loads(local_path.read_text()) if local_path.exists() else {}
    upstream = hashlib.sha256(config.to_json().encode()).hexdigest()
    selected = steps or STEPS
    unknown = [s for s in selected if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; steps: {STEPS}")
    t_start = time.time()
    for i, step in enumerate(s for s in STEPS if s in selected):
        params = {"run_dir": ".."}
        key = step_fingerprint(step, params, upstream)
        out = nb_dir / f"{step}.ipynb"
        label = f"[{i + 1}/{len(selected)}] {step}"
        if not force and local.get(step, {}).get("key") == key and out.exists():
            log(f"{label}: unchanged, skipped")
            upstream = key
            continue
        src = _to_notebook(step, nb_dir / f".{step}.src.ipynb")
        t0 = time.time()
        log(f"{label}: running ...")
        try:
            pm.execute_notebook(
                str(src), str(out), parameters=params, cwd=str(nb_dir),
                kernel_name=kernel_name, progress_bar=False, log_output=False,
            )
        except Exception as exc:  # papermill raises its own error types
            for record, path in ((state, state_path), (local, local_path)):
                record.pop(step, None)
                atomic.write_text(path, json.dumps(record, indent=2))
            raise StepFailed(f"step {step} failed in notebooks/{step}.py, "
                             f"{_cell_of_error(out)}; executed notebook: {out}") from exc
        finally:
            src.unlink(missing_ok=True)
        for record, path in ((state, state_path), (local, local_path)):
            record[step] = {"key": key, "seconds": round(time.time() - t0, 1)}
            atomic.write_text(path, json.dumps(record, indent=2))
        log(f"{label}: done in {time.time() - t0:.1f} s")
        upstream = key
    log(f"run {config.run!r} finished in {time.time() - t_start:.1f} s: {run_dir}")
    return run_dir


def export_reference(run_dir: str | Path, dest: str | Path,
                     steps: tuple[str, ...] = STEPS[:-1]) -> list[Path]:
    """Copy a run's executed notebooks as nbval references, keeping only checked outputs.

    Cells marked ``# NBVAL_CHECK_OUTPUT`` keep their outputs (the result tables nbval
    compares); every other output is dropped so the references stay small and reviewable.
    """
    import nbformat

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for step in steps:
        nb = nbformat.read(Path(run_dir) / "notebooks" / f"{step}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
                cell.outputs = []
                cell.execution_count = None
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nb.metadata.pop("papermill", None)
        path = dest / f"{step}.ipynb"
        atomic.write_text(path, nbformat.writes(nb))
        written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(prog="python -m asdlib.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=d.run, help="run name: results/<run>/ (default %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="DCASE-layout root; omitted = the embedded synthetic dataset")
    p.add_argument("--preset", default=d.preset, choices=("tiny", "demo", "dcase"),
                   help="synthetic dataset size and matching settings (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--encoder", default=None, help="official BEATs checkpoint to adapt")
    p.add_argument("--encoder-config", default=d.encoder_config,
                   help="named encoder configuration when no checkpoint is given")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda[:i]")
    p.add_argument("--channel", default=d.channel, choices=("near", "far"))
    p.add_argument("--machines", nargs="*", default=None)
    p.add_argument("--fusion-config", default=None, help="frozen fusion weights to apply")
    p.add_argument("--threads", type=int, default=d.num_threads, help="CPU threads (0 = all)")
    p.add_argument("--results-root", default=str(PROJECT_ROOT / "results"))
    p.add_argument("--steps", nargs="*", default=None, help=f"subset of {', '.join(STEPS)}")
    p.add_argument("--force", action="store_true", help="re-run steps even if unchanged")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = RunConfig(
        run=args.run, data_root=args.data_root, preset=args.preset, seed=args.seed,
        encoder=args.encoder, encoder_config=args.encoder_config, device=args.device,
        channel=args.channel, machines=args.machines, fusion_config=args.fusion_config,
        num_threads=args.threads,
    )
    try:
        run_pipeline(config, args.results_root, tuple(args.steps) if args.steps else None,
                     force=args.force)
    except StepFailed as exc:
        print(f"pipeline stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
