"""Run the numbered notebooks in order through papermill, as one parameterised pipeline.

``python -m asdlib.pipeline --run demo`` writes ``results/demo/``: the resolved config,
each executed notebook, and what each step saves. Before the first step every option is
checked (all problems reported at once, nothing written), the run's folder is locked
(a second run of the same name refuses, naming the holder), temporary files left by a
killed run are removed, and the data is scanned: every unusable clip is reported at once,
notices (resampled or mono clips) are printed, and each clip's SHA-256 enters the run's
data key. Only then is ``config.json`` replaced.

A step whose notebook, parameters, library code, data and upstream steps are unchanged
since this checkout ran it is skipped (the record is ``work/pipeline_state.json``, never
committed, so a fresh clone runs every step and rebuilds the data and checkpoints behind
the committed outputs). A step's key (`step_fingerprint`) hashes its notebook source, its
parameters, the key of the step before it (the first step: the run config and the data
key), and the sources of the asdlib modules the notebook reaches
(`asdlib.fingerprint.import_closure`). A failing step stops the run naming the notebook
and the cell (a kernel that dies is reported with its likely cause), everything finished
before it is kept, and an interruption (Ctrl-C, SIGTERM) prints one line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from asdlib import atomic, experiment, fingerprint, locking, preflight, progress
from asdlib.experiment import PROJECT_ROOT, STEPS, RunConfig

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
KERNEL_NAME = "asdlib"
LOCK_FILE = ".lock"


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


class ConfigProblems(ValueError):
    """The run's options cannot work; the message lists every problem."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by Ctrl-C or SIGTERM."""


def step_fingerprint(step: str, params: dict, upstream: str) -> str:
    """Content key of one step: notebook source, parameters, upstream key, and the sources
    of the asdlib modules the notebook imports (`asdlib.fingerprint.code_hash`)."""
    notebook = NOTEBOOK_DIR / f"{step}.py"
    h = hashlib.sha256()
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(upstream.encode())
    h.update(fingerprint.code_hash(notebook).encode())
    return h.hexdigest()


def _to_notebook(step: str, dest: Path) -> Path:
    """The percent-format source of ``step`` as an .ipynb (the .py is the reviewed copy)."""
    import jupytext

    nb = jupytext.read(NOTEBOOK_DIR / f"{step}.py")
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (asdlib)",
                                 "language": "python"}
    jupytext.write(nb, dest)
    return dest


def _cells(output_path: Path) -> list[dict]:
    try:
        return json.loads(output_path.read_text()).get("cells", [])
    except (OSError, ValueError):
        return []


def _describe_cell(index: int, cell: dict) -> str:
    first = "".join(cell.get("source", "")).strip().splitlines()[:1]
    return f"cell {index} ({first[0][:60] if first else ''!r})"


def _cell_of_error(output_path: Path) -> str:
    """The failing cell of an executed notebook (papermill marks its error output)."""
    for i, cell in enumerate(_cells(output_path)):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{_describe_cell(i, cell)}: {out.get('ename')}: {out.get('evalue')}"
    return "unknown cell"


def _last_started_cell(output_path: Path) -> str:
    """The cell a dead kernel was running: the last one papermill saw start."""
    started = [(i, c) for i, c in enumerate(_cells(output_path))
               if c.get("cell_type") == "code" and (c.get("metadata", {}).get("papermill") or {})
               .get("start_time")]
    return _describe_cell(*started[-1]) if started else "its first cell"


def _memory_hint() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        return f"this machine has {total:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        return "see the machine's memory"


def _notices(output_path: Path) -> list[str]:
    """Warnings a step's code printed (Python's ``...Warning: message`` lines on stderr),
    each once, so that they reach the console rather than only the executed notebook."""
    seen: dict[str, int] = {}
    for cell in _cells(output_path):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                for line in "".join(out.get("text", "")).splitlines():
                    if "Warning: " in line and "%|" not in line:
                        text = line.split("Warning: ", 1)
                        key = f"{text[0].rsplit(' ', 1)[-1]}Warning: {text[1]}".strip()
                        seen[key] = seen.get(key, 0) + 1
    return [f"{k} ({n} times)" if n > 1 else k for k, n in seen.items()]


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete temporary files and folders a killed run left in ``run_dir`` (atomic writes'
    ``.<name>.<pid>.tmp``, feature parts' ``.<part>.tmp-<pid>`` / ``.old-<pid>``, papermill
    inputs ``.<step>.src.ipynb``). Only call it while holding the run's lock."""
    removed = []
    for pattern in (".*.tmp", ".*.tmp-*", ".*.old-*", ".*.src.ipynb"):
        for path in run_dir.rglob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _output_to(log_path: Path):
    """Send this process's file descriptors 1 and 2 to ``log_path`` (appending) meanwhile:
    the kernel inherits them, so its own messages (and nbclient's) go to the step's log
    instead of the console; Python-level prints of this process are flushed first. Yields
    a file descriptor of the console (the former stdout)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield saved[0]
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _progress_to_console(path: Path, console_fd: int, prefix: str, every_s: float = 1.0):
    """While the block runs, the kernel's progress lines (`asdlib.progress`, written to
    ``path``) are copied to the console, indented under the step's line."""
    import threading

    path.write_text("")
    os.environ[progress.ENV] = str(path)
    stop = threading.Event()

    def follow():
        position = 0
        while True:
            finished = stop.wait(every_s)
            with open(path) as handle:
                handle.seek(position)
                text = handle.read()
                position = handle.tell()
            for line in text.splitlines():
                os.write(console_fd, f"{prefix}{line}\n".encode())
            if finished:
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        os.environ.pop(progress.ENV, None)


def _execute(src: Path, out: Path, nb_dir: Path, params: dict, kernel_name: str | None,
             log_path: Path) -> None:
    """papermill with a kernel on IPC sockets in a private temporary folder (no
    unencrypted-TCP warning from the kernel, nothing left in the run folder); the kernel's
    own output goes to ``log_path``, its progress lines to the console."""
    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    with tempfile.TemporaryDirectory(prefix="asdlib-kernel-") as sockets, \
            _output_to(log_path) as console, \
            _progress_to_console(log_path.with_suffix(".progress"), console, "    "):
        # asynchronous, as nbclient's own: it notices a kernel that dies mid-cell
        km = AsyncKernelManager(kernel_name=kernel_name or KERNEL_NAME, transport="ipc",
                                ip=str(Path(sockets) / "kernel"))
        try:
            pm.execute_notebook(str(src), str(out), parameters=params, cwd=str(nb_dir),
                                kernel_name=kernel_name, progress_bar=False, log_output=False,
                                km=km)
        finally:  # a kernel manager passed in is not shut down by papermill
            if km.has_kernel:
                run_sync(km.shutdown_kernel)(now=True)


def relative_paths(notebook: Path, step: str) -> None:
    """Rewrite an executed notebook so that it names no folder of this machine: papermill's
    input and output paths become the step's reviewed source and the run-relative output,
    and the project root is cut from every text output (committed runs stay portable)."""
    nb = json.loads(notebook.read_text())
    meta = nb.get("metadata", {}).get("papermill")
    if meta is not None:
        meta["input_path"] = f"notebooks/{step}.py"
        meta["output_path"] = f"notebooks/{step}.ipynb"
    root = f"{PROJECT_ROOT}/"

    def cut(value):
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value.replace(root, "") if isinstance(value, str) else value

    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = cut(output["text"])
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in output.get("data", {}):
                    output["data"][mime] = cut(output["data"][mime])
    atomic.write_text(notebook, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _interrupt_handler(signum, frame):
    raise Interrupted()


def prepare(config: RunConfig, run_dir: Path, log=print) -> str:
    """Everything before the first step, inside the run's lock: stale temporaries removed,
    data built or found, scanned and hashed, notices printed, ``config.json`` written.
    Returns the data key (SHA-256 over every clip's path and content hash)."""
    stale = remove_stale_temporaries(run_dir)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left by an interrupted run")
    log(experiment.describe_recipe(config))
    run = experiment.Run(run_dir, config)
    cache = run.hash_cache()
    root = experiment.dataset_root(config, hashes=cache.sha256)
    cache.hits = cache.misses = 0  # count the scan's own look-ups
    table, manifest, notices = experiment.scan(config, root, hashes=cache.sha256)
    cache.save()
    from asdlib import data

    data_key = data.manifest_key(manifest)
    log(f"data: {len(manifest)} clips of {table['machine'].nunique()} machine(s) under {root} "
        f"(key {data_key[:12]}; {cache.misses} file(s) hashed, {cache.hits} unchanged since "
        "the last scan)")
    for notice in notices:
        log(f"notice: {notice}")
    mono = manifest.loc[manifest["channels"].fillna(2).astype(int) < 2, "path"]
    if config.channel != "near" and len(mono):
        raise ConfigProblems(
            f"--channel {config.channel} needs the far-field microphone, but {len(mono)} of "
            f"{len(manifest)} clips are mono (first: {mono.iloc[0]}); DCASE 2023-2025 data "
            "has the near-field channel only: use --channel near")
    atomic.write_text(run_dir / "config.json", config.to_json())
    return data_key


def run_pipeline(config: RunConfig, results_root: str | Path = PROJECT_ROOT / "results",
                 steps: tuple[str, ...] | None = None, force: bool = False,
                 kernel_name: str | None = KERNEL_NAME, log=print) -> Path:
    """Execute the notebooks of ``steps`` (all by default) for ``config``; returns the run dir.

    Raises ConfigProblems (nothing written) when an option cannot work,
    `asdlib.locking.LockHeld` when another process runs the same run, StepFailed when a
    notebook fails, Interrupted on Ctrl-C / SIGTERM (finished steps are kept).
    """
    config = config.with_absolute_paths()
    problems = preflight.validate(config)
    selected = steps or STEPS
    unknown = [s for s in selected if s not in STEPS]
    if unknown:
        problems.append(f"--steps {unknown}: steps are {', '.join(STEPS)}")
    if problems:
        raise ConfigProblems("the run cannot start:\n  " + "\n  ".join(problems))
    run_dir = Path(results_root).resolve() / config.run
    run_dir.mkdir(parents=True, exist_ok=True)
    with locking.FolderLock(run_dir / LOCK_FILE, f"the run {config.run!r} ({run_dir})"):
        data_key = prepare(config, run_dir, log)
        return _run_steps(config, run_dir, selected, force, kernel_name, log, data_key)


def _run_steps(config: RunConfig, run_dir: Path, selected, force: bool,
               kernel_name: str | None, log, data_key: str) -> Path:
    nb_dir = run_dir / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "pipeline_state.json"  # committed: what made the outputs
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    # the skip decision reads the state under work/ (never committed): a fresh clone has
    # the committed outputs but not the datasets, checkpoints and features behind them
    local_path = run_dir / "work" / "pipeline_state.json"
    local = json.loads(local_path.read_text()) if local_path.exists() else {}
    upstream = hashlib.sha256((config.to_json() + data_key).encode()).hexdigest()
    t_start = time.time()
    position = 0
    last = max(STEPS.index(s) for s in selected)
    for step in STEPS[:last + 1]:
        params = {"run_dir": ".."}
        key = step_fingerprint(step, params, upstream)  # every step's key chains, run or not
        if step not in selected:
            upstream = key
            continue
        position += 1
        out = nb_dir / f"{step}.ipynb"
        label = f"[{position}/{len(selected)}] {step}"
        if not force and local.get(step, {}).get("key") == key and out.exists():
            log(f"{label}: unchanged, skipped")
            upstream = key
            continue
        src = _to_notebook(step, nb_dir / f".{step}.src.ipynb")
        t0 = time.time()
        log(f"{label}: running ...")
        try:
            _execute(src, out, nb_dir, params, kernel_name, run_dir / "work" / "logs" / f"{step}.log")
        except (KeyboardInterrupt, Exception) as exc:
            for record, path in ((state, state_path), (local, local_path)):
                record.pop(step, None)
                atomic.write_text(path, json.dumps(record, indent=2))
            if isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in str(exc)[:2000]:
                raise Interrupted(step) from None
            if type(exc).__name__ == "DeadKernelError":
                raise StepFailed(
                    f"step {step}: the kernel died in {_last_started_cell(out)} of "
                    f"notebooks/{step}.py, most likely out of memory ({_memory_hint()}); "
                    f"use fewer or shorter clips per batch, or a machine with more memory; "
                    f"executed notebook: {out}") from exc
            raise StepFailed(f"step {step} failed in notebooks/{step}.py, "
                             f"{_cell_of_error(out)}; executed notebook: {out}") from exc
        finally:
            src.unlink(missing_ok=True)
        relative_paths(out, step)
        for notice in _notices(out):
            log(f"  notice: {notice}")
        for record, path in ((state, state_path), (local, local_path)):
            record[step] = {"key": key, "seconds": round(time.time() - t0, 1)}
            atomic.write_text(path, json.dumps(record, indent=2))
        log(f"{label}: done in {time.time() - t0:.1f} s")
        upstream = key
    log(f"run {config.run!r} finished in {time.time() - t_start:.1f} s: {run_dir}")
    return run_dir


def build_parser() -> argparse.ArgumentParser:
    from asdlib.features import ExtractConfig

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
    p.add_argument("--recipe", default=d.recipe, choices=experiment.RECIPES,
                   help="adaptation recipe; auto: cpu for the small encoder, gpu for an "
                        "official checkpoint (default %(default)s)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda[:i]")
    p.add_argument("--channel", default=d.channel, choices=experiment.CHANNELS)
    p.add_argument("--machines", nargs="*", default=None)
    p.add_argument("--fusion-config", default=None, help="frozen fusion weights to apply")
    p.add_argument("--dataset", default=d.dataset, choices=experiment.DATASETS,
                   help="dev: labelled development set; eval: evaluation set (unlabelled test "
                        "clips, needs --fusion-config) (default %(default)s)")
    p.add_argument("--fine-search", default=d.fine_search, choices=experiment.FINE_SEARCHES,
                   help="the fine-grained branches' search: exact, or approximate and faster at "
                        "DCASE size: pca or ivf (docs/PERFORMANCE.md) (default %(default)s)")
    p.add_argument("--embed-hop", type=int, default=d.embed_hop,
                   help="frames between the patch-embedding tokens of the fine-grained "
                        f"branches, 1-16 (default {ExtractConfig.embed_hop}; 16: the "
                        "encoder's own grid, a quarter of the search)")
    p.add_argument("--threads", type=int, default=d.num_threads, help="CPU threads (0 = all)")
    p.add_argument("--results-root", default=str(PROJECT_ROOT / "results"))
    p.add_argument("--steps", nargs="*", default=None, help=f"subset of {', '.join(STEPS)}")
    p.add_argument("--force", action="store_true", help="re-run steps even if unchanged")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = RunConfig(
        run=args.run, data_root=args.data_root, preset=args.preset, seed=args.seed,
        encoder=args.encoder, encoder_config=args.encoder_config, recipe=args.recipe,
        device=args.device, channel=args.channel, machines=args.machines,
        fusion_config=args.fusion_config, dataset=args.dataset, num_threads=args.threads,
        fine_search=args.fine_search, embed_hop=args.embed_hop,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt_handler)
    try:
        run_pipeline(config, args.results_root, tuple(args.steps) if args.steps else None,
                     force=args.force)
    except (StepFailed, ConfigProblems, locking.LockHeld) as exc:
        print(f"pipeline stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        where = f" during step {exc}" if isinstance(exc, Interrupted) and str(exc) else ""
        print(f"pipeline interrupted{where}; finished steps are kept, run the same command "
              "to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # data and checkpoint errors: one line, not a traceback
        from asdlib import data

        if isinstance(exc, (data.DatasetError, OSError)):
            print(f"pipeline stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
