"""Reference notebooks for the test suite, and a numeric comparison of executed outputs.

Two kinds of checked cells, marked by a comment in the notebook's code:

- ``# NBVAL_CHECK_OUTPUT``: outputs that are exactly portable (clip counts, names); nbval
  compares their text.
- ``# CHECK_NUMBERS``: result tables whose numbers come out of training or of
  float-order-sensitive search. Their last digits differ between CPUs (matrix kernels sum
  in another order on AVX2, AVX-512 and AMX) and training amplifies that, so they are
  compared token by token: words and integers exactly, decimal numbers within an absolute
  tolerance (`compare_text`).

`export_reference` keeps only the outputs of such cells; regenerating the references
(``make nbval-reference``) is a deliberate, reviewed change.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from asdlib import atomic

MARK_EXACT = "NBVAL_CHECK_OUTPUT"
MARK_NUMBERS = "CHECK_NUMBERS"
_TOKEN = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|\S")


def export_reference(run_dir: str | Path, dest: str | Path, steps: tuple[str, ...]) -> list[Path]:
    """Copy a run's executed notebooks of ``steps`` to ``dest`` as references, keeping the
    outputs of checked cells only (the rest are dropped so the files stay small)."""
    import nbformat

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for step in steps:
        nb = nbformat.read(Path(run_dir) / "notebooks" / f"{step}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and marker(cell.source) is None:
                cell.outputs = []
                cell.execution_count = None
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nb.metadata.pop("papermill", None)
        path = dest / f"{step}.ipynb"
        atomic.write_text(path, nbformat.writes(nb))
        written.append(path)
    return written


def marker(source: str) -> str | None:
    """The check marker of a code cell's source, or None."""
    for mark in (MARK_EXACT, MARK_NUMBERS):
        if re.search(rf"^#\s*{mark}\b", source, re.M):
            return mark
    return None


def checked_outputs(path: str | Path, mark: str = MARK_NUMBERS) -> list[tuple[str, str]]:
    """``(first source line, printed text)`` of every cell of notebook ``path`` marked ``mark``."""
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type == "code" and marker(cell.source) == mark:
            text = "".join(out.get("text", "") for out in cell.outputs
                           if out.get("output_type") == "stream" and out.get("name") == "stdout")
            lines = [line for line in cell.source.splitlines() if not line.startswith("#")]
            found.append((lines[0] if lines else "", text))
    return found


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def compare_text(reference: str, actual: str, atol: float,
                 sanitize: list[tuple[str, str]] = ()) -> list[str]:
    """Differences between two printed tables (empty = same within tolerance).

    Both texts are sanitised (``(regex, replacement)`` pairs), then split into tokens:
    numbers and single non-space characters. Non-numbers and integers must be equal;
    decimal numbers may differ by ``atol``; NaN equals NaN.
    """
    for pattern, repl in sanitize:
        reference, actual = re.sub(pattern, repl, reference), re.sub(pattern, repl, actual)
    ref_lines, act_lines = reference.splitlines(), actual.splitlines()
    if len(ref_lines) != len(act_lines):
        return [f"{len(act_lines)} lines printed, the reference has {len(ref_lines)}"]
    problems = []
    for n, (ref_line, act_line) in enumerate(zip(ref_lines, act_lines), start=1):
        ref_tokens, act_tokens = _TOKEN.findall(ref_line), _TOKEN.findall(act_line)
        if len(ref_tokens) != len(act_tokens):
            problems.append(f"line {n}: {act_line.strip()!r} has another layout than "
                            f"{ref_line.strip()!r}")
            continue
        for ref, act in zip(ref_tokens, act_tokens):
            a, b = _number(ref), _number(act)
            decimal = a is not None and b is not None and ("." in ref or "." in act
                                                          or "e" in ref.lower())
            if decimal:
                same = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol
            else:
                same = ref == act
            if not same:
                what = f"differs by {abs(a - b):.3g} > {atol}" if decimal else "differs"
                problems.append(f"line {n}: {act!r} against the reference's {ref!r} ({what}): "
                                f"{act_line.strip()!r}")
    return problems


def compare_run(run_dir: str | Path, reference_dir: str | Path, atol: float,
                sanitize: list[tuple[str, str]] = ()) -> list[str]:
    """`compare_text` over every ``CHECK_NUMBERS`` cell of every reference notebook in
    ``reference_dir`` against the same notebook executed in ``run_dir/notebooks``."""
    problems = []
    for ref_path in sorted(Path(reference_dir).glob("*.ipynb")):
        ref_cells = checked_outputs(ref_path)
        act_path = Path(run_dir) / "notebooks" / ref_path.name
        act_cells = checked_outputs(act_path) if act_path.exists() else []
        if [c[0] for c in ref_cells] != [c[0] for c in act_cells]:
            problems.append(f"{ref_path.name}: checked cells {[c[0] for c in act_cells]} differ "
                            f"from the reference's {[c[0] for c in ref_cells]}")
            continue
        for (source, ref), (_, act) in zip(ref_cells, act_cells):
            problems += [f"{ref_path.name} [{source}] {p}" for p in
                         compare_text(ref, act, atol, sanitize)]
    return problems


def read_sanitize_cfg(path: str | Path) -> list[tuple[str, str]]:
    """The ``(regex, replace)`` pairs of an nbval ``--nbval-sanitize-with`` file."""
    pairs, regex = [], None
    for line in Path(path).read_text().splitlines():
        if line.startswith("regex:"):
            regex = line.split(":", 1)[1].strip()
        elif line.startswith("replace:") and regex is not None:
            pairs.append((regex, line.split(":", 1)[1].strip()))
            regex = None
    return pairs
