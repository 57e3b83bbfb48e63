"""Score an evaluation-set run's submission with the synthetic evaluation split's ground truth.

The pipeline never reads the ground truth of an evaluation set (``--dataset eval``: its test
clips carry no labels). The synthetic generator writes it beside the data, in the official
evaluator's layout (``<root>/eval_ground_truth/``), for tests and benchmarks: this script
scores every system's submission folder of a finished run with it (`asdlib.metrics.
evaluate_submission`, the official metric) and writes the Table 1 layout to
``<run>/07_results/eval_ground_truth_table.{csv,md}``.

    PYTHONPATH=. python benchmarks/eval_split.py results/demo-eval
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asdlib import experiment, metrics, results, synth  # noqa: E402


def eval_table(run_dir: str | Path) -> pd.DataFrame:
    """(machine, metric) x system table (%) of a finished evaluation run."""
    run = experiment.Run.open(run_dir)
    truth = run.config.resolved_data_root() / synth.GROUND_TRUTH_DIR
    columns = {}
    for folder in sorted((run.dir / "06_fusion" / "submission").iterdir()):
        table = metrics.evaluate_submission(folder, truth)
        name = folder.name.replace("_", " ").capitalize()
        columns[name] = table[list(results.METRICS)].stack() * 100
    out = pd.DataFrame(columns)
    out.index.names = ["machine", "metric"]
    return out


def main(argv=None) -> None:
    run_dir = Path((argv or sys.argv[1:])[0])
    truth = experiment.Run.open(run_dir).config.resolved_data_root() / synth.GROUND_TRUTH_DIR
    if not truth.is_dir():
        print(f"{truth}: no ground truth beside this evaluation set (real data): nothing to score")
        return
    table = eval_table(run_dir)
    out = run_dir / "07_results"
    results.flatten(table).to_csv(out / "eval_ground_truth_table.csv", index=False)
    text = metrics.table_markdown(table, **results.TABLE1_MARKDOWN)
    (out / "eval_ground_truth_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
