"""Where is the evidence of each fault kind lost? Every token view of a run's adapted encoder.

Views: raw log-mel patches as tokens at the encoder's time resolution (16 frames, 160 ms)
and at 4 frames (40 ms); the patch embedding before and after its LayerNorm; every hidden
state (0 = input to layer 0 ... L). For each: cosine and Euclidean distance, LDN off and on,
four aggregations (`asdlib.evidence`), scored with the fine-grained scorer; the official
score and the AUC per fault kind. Run after ``make run`` (or any run with step 01 done)::

    PYTHONPATH=. python benchmarks/evidence.py results/demo [--out evidence.csv]

About 10 minutes on the demo run (2 cores). Writes the table as CSV and prints it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asdlib import audio, encoder, evidence, experiment  # noqa: E402


def clip_views(model, wave: np.ndarray) -> dict[str, np.ndarray]:
    """{view: (T', 8, D)} of one clip."""
    w = torch.from_numpy(wave)[None]
    with torch.inference_mode():
        out = model.extract(w, layers="all", embed=True)
        fb = out.fbank[0]
        t = out.embed.shape[1] // 8
        views = {"log-mel patch 160 ms": fb[: t * 16].reshape(t, 16, 8, 16)
                 .permute(0, 2, 1, 3).reshape(t, 8, 256).numpy(),
                 "log-mel patch 40 ms": fb[: t * 16].reshape(4 * t, 4, 8, 16)
                 .permute(0, 2, 1, 3).reshape(4 * t, 8, 64).numpy(),
                 "embed (before LayerNorm)": out.embed_grid()[0].numpy(),
                 "embed (after LayerNorm)": model.layer_norm(out.embed)[0]
                 .reshape(t, 8, -1).numpy()}
        for layer in range(model.num_layers + 1):
            views[f"hidden {layer}"] = out.grid(layer)[0].numpy()
    return views


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None, help="CSV path (default: <run>/04_patch/evidence.csv)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = experiment.Run.open(args.run_dir)
    table = run.clip_table()
    model = encoder.load_beats(run.current("adapted", "01_finetune") / "encoder.pt").eval()
    views: dict[str, dict] = {}
    t0 = time.time()
    for machine, rows in table.groupby("machine", sort=False):
        per_clip = [clip_views(model, audio.load_clip(p, run.config.channel)[0]) for p in rows["path"]]
        for view in per_clip[0]:
            views.setdefault(view, {})[machine] = evidence.bank_and_test(
                [c[view] for c in per_clip], rows)
        print(f"{machine}: views in {time.time() - t0:.0f} s", flush=True)
    meta = table[table["split"] == "test"][["machine", "name", "domain", "label", "kind"]]
    result = evidence.evidence_table(views, meta)
    out = Path(args.out) if args.out else Path(args.run_dir) / "04_patch" / "evidence.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.round(2).to_csv(out, index=False)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 1000)
    print(result.round(1).to_string(index=False))
    print(f"{time.time() - t0:.0f} s; written {out}")


if __name__ == "__main__":
    main()
