"""Does task adaptation help on the embedded default? Utterance-kNN official scores on `demo`.

Three numbers, each the official DCASE score (harmonic mean of every machine's AUC_s,
AUC_t and pAUC(max_fpr=0.1)), scores = distance to the nearest normal training clip of the
same machine:
- log-mel reference: the mean log-mel vector of each clip (Euclidean and cosine);
- start encoder: mean over the valid tokens of the final layer, cosine distance;
- adapted encoder: the same after `asdlib.adaptation.training.adapt` with `AdaptConfig.demo()`.

Usage: ``PYTHONPATH=. python benchmarks/adaptation_demo.py [--root /tmp/synth_demo]
[--data-seed S] [--start random|asset|PATH] [--out /tmp/adapt_demo] [key=value ...]``
(key=value override AdaptConfig fields; --data-seed first generates the `demo` preset with
that seed at --root, e.g. 3 or 4 for data that no choice was made on). Prints a table and
writes ``<out>/benchmark.json`` (with the per-machine AUCs of all three).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from asdlib.adaptation import training
from asdlib.adaptation.small_encoder import SMALL_ASSET
from asdlib import metrics
from asdlib.data import scan_dataset
from asdlib.floors import logmel_embeddings
from asdlib.scoring import utterance_embeddings


def knn_official(table, emb: np.ndarray, metric: str = "cosine") -> tuple[float, dict]:
    """Official score of 1-NN distance to the same machine's training clips -> (score, per machine)."""
    per = {}
    for machine, rows in table.groupby("machine"):
        train = rows.index[rows["split"] == "train"].to_numpy()
        test = rows.index[rows["split"] == "test"].to_numpy()
        a, b = emb[test], emb[train]
        if metric == "cosine":
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
            d = 1.0 - a @ b.T
        else:
            d = ((a[:, None, :] - b[None]) ** 2).sum(-1)
        per[machine] = metrics.machine_metrics(table.loc[test, "label"].to_numpy(), d.min(1),
                                               table.loc[test, "domain"].to_numpy())
    return metrics.official_score(per), per


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/synth_demo")
    ap.add_argument("--data-seed", type=int, default=None,
                    help="generate the demo preset with this seed at --root (kept when present)")
    ap.add_argument("--start", default="random", help="random | asset | a BEATs checkpoint path")
    ap.add_argument("--out", default="/tmp/adapt_demo")
    ap.add_argument("--config", default="small")
    ap.add_argument("overrides", nargs="*", help="AdaptConfig field=value")
    args = ap.parse_args(argv)
    from asdlib.encoder import build_beats, load_beats

    over = {}
    for item in args.overrides:
        key, value = item.split("=", 1)
        field = training.AdaptConfig.__dataclass_fields__[key]
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        over[key] = None if value == "None" else (value.lower() == "true" if "bool" in kind else
                                                  int(value) if kind.startswith("int") else
                                                  float(value) if "float" in kind else value)
    cfg = training.AdaptConfig.demo(**over)
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())

    def start_model():
        if args.start == "random":
            return build_beats(args.config, seed=0)
        return load_beats(SMALL_ASSET if args.start == "asset" else args.start)

    if args.data_seed is not None:
        from asdlib.synth import ensure_dataset

        ensure_dataset(args.root, "demo", seed=args.data_seed)
    table = scan_dataset(args.root)
    channel = cfg.channel if cfg.channel != "both" else "near"
    res = {"config": vars(cfg) | {"start": args.start, "encoder": args.config}}
    logmel = logmel_embeddings(table, channel, progress=False)
    res["logmel_euclid"], _ = knn_official(table, logmel, "euclid")
    per = {}
    res["logmel_cosine"], per["logmel_cosine"] = knn_official(table, logmel, "cosine")
    t0 = time.perf_counter()
    res["start"], per["start"] = knn_official(
        table, utterance_embeddings(start_model(), table, channel, progress=False))
    res["embed_seconds"] = time.perf_counter() - t0
    model = start_model()
    rows = training.training_rows(table)
    train_waves = training.load_training_waves(rows, cfg.channel)
    t0 = time.perf_counter()
    hist = training.adapt(model, table, cfg, args.out, progress=False, resume=False, waves=train_waves)
    res["adapt_seconds"] = time.perf_counter() - t0
    res["adapted"], per["adapted"] = knn_official(
        table, utterance_embeddings(model, table, channel, progress=False))
    res["per_machine"] = per
    res["history"] = hist.to_dict("list")
    print(hist.to_string())
    print(json.dumps({k: v for k, v in res.items() if k not in ("per_machine", "history", "config")},
                     indent=1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "benchmark.json").write_text(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
