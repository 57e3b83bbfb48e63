"""Utterance kNN per encoder layer: where in the encoder the clip-level evidence lives.

For one checkpoint (an official-format BEATs file, ``asset`` = the shipped small start,
or ``random``), the mean token of every hidden state (0 = input to the first layer) is
scored as utterance kNN (cosine 1-NN against the normal training clips of the same
machine, leave-one-out self-scores) with the official DCASE metric, next to the
encoder-free mean log-mel reference. Used to choose the pre-training objective of
``scripts/pretrain_small.py`` (its docstring quotes these numbers).

Every row also gives the AUC per fault kind (synthetic data). Three log-mel variants show
what the tokens see: with each band's mean removed (16 mel bins per band, as a zero-mean
patch filter sees its patch), the 8 band means alone, and the 8 bands pooled into one
16-bin profile, as the mean over all tokens pools them (BEATs has no absolute position
embedding, so a pooled token keeps its band only as far as its content shows it).
``band-level R2`` is how well a ridge regression on the training clips' mean tokens
predicts the test clips' 8 band means (each clip's mean removed): the information can be
in the vector while its cosine geometry gives it little weight. A second table splits AUC_s and AUC_t by domain
(`asdlib.metrics.domain_pair_auc`): detection within a domain against the relative scale
of the two domains' scores.

Usage: ``PYTHONPATH=. python benchmarks/utterance_layers.py [CHECKPOINT|asset|random ...]
[--root data/synth_demo_seed0] [--channel near]``
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from asdlib import encoder, experiment, features, floors, metrics, scoring
from asdlib.adaptation.small_encoder import starting_encoder


def layer_embeddings(model, table: pd.DataFrame, channel: str) -> dict[int, np.ndarray]:
    """{hidden-state index: (clips, D) mean over the valid tokens}."""
    n_layers = int(model.cfg.encoder_layers)
    paths = table["path"].tolist()
    out: dict[int, np.ndarray] = {}
    for rows, grids, valid in features.encode_batches(
            model, paths, [np.arange(i, min(i + 16, len(paths))) for i in range(0, len(paths), 16)],
            channel=channel,
            layers=tuple(range(n_layers + 1))):
        for layer, grid in grids.items():
            emb = features.masked_grid_mean(grid, valid)[1].numpy()  # as the feature store
            out.setdefault(layer, np.zeros((len(paths), emb.shape[1]), np.float32))[rows] = emb
    return out


def official(emb: np.ndarray, table: pd.DataFrame) -> pd.Series:
    """Overall row of the official table (+ kinds) and the mean `metrics.domain_pair_auc`."""
    scores = scoring.knn_scores(emb, table, "utt")
    row = metrics.evaluate_table(scores[~scores["is_self"]], kind_column="kind").loc["Overall"]
    return pd.concat([row, scoring.domain_pair_table(scores).loc["utt"]]) * 100


def band_means(logmel: np.ndarray) -> np.ndarray:
    """(N, 128) mean log-mel -> (N, 8) band means, each clip's mean removed (level-free)."""
    bands = logmel.reshape(len(logmel), 8, 16).mean(axis=2)
    return bands - bands.mean(axis=1, keepdims=True)


def band_level_r2(emb: np.ndarray, target: np.ndarray, train: np.ndarray) -> float:
    """R2 on the test clips of a ridge map (fitted on the training clips) emb -> target
    (the `band_means`)."""
    from sklearn.linear_model import Ridge

    fit = Ridge(alpha=1e-2).fit(emb[train], target[train])
    return float(fit.score(emb[~train], target[~train]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", default=["asset"])
    ap.add_argument("--root", default=None, help="dataset root (default: embedded demo)")
    ap.add_argument("--channel", default="near")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = experiment.RunConfig(data_root=args.root)
    table = experiment.clip_table(config)
    logmel = floors.logmel_embeddings(table, args.channel, progress=False)
    bands = logmel.reshape(len(logmel), 8, 16)
    train = (table["split"] == "train").to_numpy()
    levels = band_means(logmel)
    rows = {"log-mel mean (no encoder)": official(logmel, table),
            "log-mel, band means removed": official(
                (bands - bands.mean(axis=2, keepdims=True)).reshape(len(logmel), -1), table),
            "log-mel, band means only": official(bands.mean(axis=2), table),
            "log-mel, bands pooled": official(bands.mean(axis=1), table)}
    for name in args.checkpoints:
        if name == "random":
            model = encoder.build_beats("small", seed=0)
        elif name == "asset":
            model = starting_encoder("small")
        else:
            model = encoder.load_beats(name)
        for layer, emb in sorted(layer_embeddings(model.eval(), table, args.channel).items()):
            rows[f"{name} layer {layer}"] = official(emb, table)
            rows[f"{name} layer {layer}"]["band-level R2"] = band_level_r2(emb, levels, train)
    frame = pd.DataFrame(rows).T
    kinds = [c for c in frame.columns if c.startswith("AUC[")]
    print(frame[["AUC_s", "AUC_t", "pAUC", "hmean", *kinds, "band-level R2"]].round(2)
          .to_string())
    print("\nAUC of the normals of one domain against the anomalies of one domain "
          "(mean over machines; AUC_s pools Ns-As and Ns-At):")
    print(frame[list(metrics.DOMAIN_PAIRS)].round(2).to_string())


if __name__ == "__main__":
    main()
