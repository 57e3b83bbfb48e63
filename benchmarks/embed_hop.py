"""The fine-grained scorer on patch-embedding tokens at several time hops, from a run's audio.

A token of BEATs' patch embedding covers 16 frames (160 ms) x 16 mel bins; the encoder
places one every 16 frames. `ExtractConfig.embed_hop` stores them every ``hop`` frames
instead (`BEATs.patch_embedding_grid`, the same weights), so that an event near a patch
boundary lies wholly inside some token. For each hop this script computes the run's
adapted encoder's patch embedding of every clip, scores it with the fine-grained scorer
(Euclidean, LDN on: the defaults of the fine-grained branches) and prints, per hop and
aggregation (the selective branch's per-band maximum and the top 3), the official score,
AUC_s / AUC_t and the AUC per fault kind, with the scoring time (the bank search). Hop 16
reproduces a run stored at the encoder's own grid. Run after ``make run`` (any run with
step 01 done)::

    PYTHONPATH=. python benchmarks/embed_hop.py results/demo [--hops 16 8 4]

About 5 minutes on the demo with hops 16, 8 and 4 (2 cores): the search grows with the
square of the tokens per band. Writes ``<run>/04_patch/embed_hop.csv``.
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
from asdlib.branches import (FineParams, FinePatchScorer, aggregate_band_max,  # noqa: E402
                             aggregate_topk)
from asdlib.features import token_count  # noqa: E402

AGGREGATIONS = {"band max": aggregate_band_max, "top 3": lambda m: aggregate_topk(m, 3)}


def embed_grids(model, fbanks: list[torch.Tensor], n_time: np.ndarray, hop: int) -> list[np.ndarray]:
    """Each clip's patch embedding (T_e, 8, E) every ``hop`` frames, its valid tokens only."""
    keep = token_count(n_time, hop)
    with torch.inference_mode():
        return [model.patch_embedding_grid(fb[None], hop)[0, :k].numpy().copy()
                for fb, k in zip(fbanks, keep)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--hops", type=int, nargs="+", default=[16, 8, 4])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    run = experiment.Run.open(args.run_dir)
    table = run.clip_table()
    model = encoder.load_beats(run.current("adapted", "01_finetune") / "encoder.pt").eval()
    channel = experiment.view_channel(run.config.channel)
    parts, seconds = [], {hop: 0.0 for hop in args.hops}
    for machine, rows in table.groupby("machine", sort=False):
        with torch.inference_mode():
            fbanks = [model.preprocess(torch.from_numpy(audio.load_clip(p, channel)[0])[None])[0]
                      for p in rows["path"]]
        n_time = np.array([len(fb) // audio.PATCH_FRAMES for fb in fbanks])
        for hop in args.hops:
            bank, test = evidence.bank_and_test(embed_grids(model, fbanks, n_time, hop), rows)
            t0 = time.perf_counter()
            maps = FinePatchScorer(FineParams()).fit(bank).maps(test)
            seconds[hop] += time.perf_counter() - t0
            for name, aggregate in AGGREGATIONS.items():
                parts.append(pd.DataFrame({"view": f"hop {hop} frames", "aggregation": name,
                                           "machine": machine, "name": test.names,
                                           "score": aggregate(maps)}))
        print(f"{machine}: done", flush=True)
    meta = table[table["split"] == "test"][["machine", "name", "domain", "label", "kind"]]
    scores = pd.concat(parts, ignore_index=True).merge(meta, on=["machine", "name"])
    result = evidence.summarise(scores, ["view", "aggregation"])
    result["scoring s"] = [seconds[int(v.split()[1])] for v in result["view"]]
    out = Path(args.out) if args.out else Path(args.run_dir) / "04_patch" / "embed_hop.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.round(2).to_csv(out, index=False)
    pd.set_option("display.width", 200)
    print(result.round(1).to_string(index=False))
    print(f"written {out}")


if __name__ == "__main__":
    main()
