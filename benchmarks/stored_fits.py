"""What a stored fine-grained fit saves on a rerun: the two fine-grained branches of
notebook 04 on a feature store, first with nothing stored (the fit is computed and written
under a fresh folder), then in a new process that reads it back (the baseline and the
rerun are measured in the same run). Checks that both give the same scores.

    PYTHONPATH=. python benchmarks/stored_fits.py results/demo
    PYTHONPATH=. python benchmarks/stored_fits.py dcase:/tmp/rehearsal   # dcase_rehearsal's store

Prints seconds of each pass, the stored size, and the largest score difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import open_source  # noqa: E402

from asdlib import scoring  # noqa: E402


def one_pass(source: str, fit_dir: Path, scores_path: Path) -> dict:
    store, table = open_source(source)
    t0 = time.time()
    scores = scoring.score_run(store, table, scoring.PATCH_SPECS, progress=False, fit_dir=fit_dir)
    seconds = time.time() - t0
    scores.to_csv(scores_path, index=False)
    return {"seconds": seconds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a run folder, or dcase:<dcase_rehearsal work folder>")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_pass(args.source, Path(args.child[0]), Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        fit_dir, results = Path(tmp) / "fits", []
        for name in ("first run (fits and stores)", "rerun (reads the stored fit)"):
            out = Path(tmp) / f"scores_{len(results)}.csv"
            res = subprocess.run([sys.executable, __file__, args.source, "--child", str(fit_dir),
                                  str(out)], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            if res.returncode:
                sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
                raise SystemExit(f"{name} failed")
            seconds = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
            results.append((name, seconds, pd.read_csv(out)))
            print(f"{name}: {seconds:.1f} s", flush=True)
        size = sum(p.stat().st_size for p in fit_dir.glob("*.npz")) / 2**20
        a, b = results[0][2]["score"].to_numpy(), results[1][2]["score"].to_numpy()
        same = np.allclose(a, b, rtol=0, atol=0, equal_nan=True)
        print(f"stored fits: {len(list(fit_dir.glob('*.npz')))} files, {size:.1f} MiB; "
              f"scores identical: {same} (max |difference| {np.nanmax(np.abs(a - b)):.2e})")


if __name__ == "__main__":
    main()
