"""Systems with weights searched on the development labels (every member kept, the default)
against equal weights (no labels), on a finished run: official score, dev and LOMO.

    PYTHONPATH=. python benchmarks/fusion_weighting.py results/demo
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asdlib import experiment, fusion, scoring  # noqa: E402


def main(argv=None) -> None:
    run_dir = (argv or sys.argv[1:])[0]
    calibrated = fusion.calibrate(scoring.load_scores(experiment.Run.open(run_dir)))
    print("weighting  system    selection  official (%)")
    for weighting in fusion.WEIGHTINGS:
        fused, _ = fusion.run_systems(calibrated, fusion.SYSTEMS, weighting=weighting)
        for (system, selection), rows in fused.groupby(["system", "selection"]):
            print(f"{weighting:<10} {system:<9} {selection:<10} {100 * fusion.official_of(rows):.2f}")


if __name__ == "__main__":
    main()
