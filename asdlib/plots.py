"""Figures of the notebooks: spectrograms, training curves, score distributions, ROC curves,
localisation maps and branch correlations. Each function returns a matplotlib Figure and
saves it when ``path`` is given, so notebooks show and keep the same picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from asdlib.audio import PATCH_FRAMES


def _save(fig, path: str | Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def log_mel(wave: np.ndarray, sr: int = 16000, n_mels: int = 128) -> np.ndarray:
    """(frames, n_mels) log-mel energies with the encoder's framing (25 ms / 10 ms), for display."""
    from asdlib.floors import log_mel as kaldi_log_mel

    return kaldi_log_mel(np.asarray(wave, dtype=np.float32), sr, n_mels)


def spectrogram_grid(examples: pd.DataFrame, channels=("near", "far"), path=None):
    """Log-mel spectrograms: one row per example clip, one column per channel."""
    from asdlib import audio

    n = len(examples)
    fig, axes = plt.subplots(n, len(channels), figsize=(4.2 * len(channels), 1.9 * n),
                             squeeze=False, sharex=True)
    for i, row in enumerate(examples.itertuples(index=False)):
        for j, ch in enumerate(channels):
            ax = axes[i, j]
            try:
                wave, sr = audio.load_clip(row.path, channel=ch)
            except Exception as exc:  # mono data has no far channel
                ax.text(0.5, 0.5, str(exc)[:60], ha="center", va="center", fontsize=7)
                ax.set_axis_off()
                continue
            spec = log_mel(wave, sr)
            ax.imshow(spec.T, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, spec.shape[0] / 100, 0, spec.shape[1]))
            ax.set_title(f"{row.machine} {row.label} ({row.domain}) - {ch}", fontsize=8)
            ax.set_ylabel("mel bin", fontsize=7)
            ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def level_summary(levels: pd.DataFrame, path=None):
    """Near vs far level and far SNR per machine (box plots)."""
    import seaborn as sns

    cols = [c for c in ("near_dbfs", "far_dbfs", "far_snr_db") if levels[c].notna().any()]
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        sns.boxplot(data=levels, x=col, y="machine", ax=ax, color="#9ecae1", fliersize=2)
        ax.set_title(col.replace("_", " "), fontsize=9)
        ax.set_ylabel("")
    fig.tight_layout()
    return _save(fig, path)


def training_curves(history: pd.DataFrame, path=None):
    """Loss and proxy accuracy per epoch of the adaptation."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    a.plot(history["epoch"], history["loss"], marker="o")
    a.set_xlabel("epoch"), a.set_ylabel("ArcFace loss")
    b.plot(history["epoch"], history["acc"], marker="o", color="C1")
    b.set_xlabel("epoch"), b.set_ylabel("proxy accuracy"), b.set_ylim(0, 1.02)
    fig.tight_layout()
    return _save(fig, path)


def embedding_map(embeddings: np.ndarray, machine: np.ndarray, domain: np.ndarray,
                  title: str = "", path=None, seed: int = 0):
    """2-D PCA map of clip embeddings: colour = machine, marker = domain."""
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, random_state=seed).fit_transform(
        embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    machines = sorted(set(machine))
    for k, m in enumerate(machines):
        for dom, marker in (("source", "o"), ("target", "^")):
            sel = (machine == m) & (domain == dom)
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=12 if dom == "source" else 30,
                           marker=marker, color=f"C{k % 10}", alpha=0.7,
                           label=m if dom == "source" else None,
                           edgecolors="k" if dom == "target" else "none", linewidths=0.4)
    ax.set_title(title or "normal training clips (PCA); triangles = target domain", fontsize=9)
    ax.legend(fontsize=7, markerscale=1.2, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def score_distributions(test: pd.DataFrame, score_col: str = "score", by: str = "machine",
                        title: str = "", path=None):
    """Per-machine score distributions split into normal/anomaly x source/target."""
    import seaborn as sns

    df = test.copy()
    df["group"] = (df["label"].astype(str) + " / " + df["domain"].astype(str)).where(
        df["label"].notna(), "unlabelled")
    order = [g for g in ("normal / source", "normal / target", "anomaly / source",
                         "anomaly / target", "unlabelled") if g in set(df["group"])]
    machines = sorted(df[by].unique())
    ncol = min(4, len(machines))
    nrow = int(np.ceil(len(machines) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), squeeze=False)
    palette = {"normal / source": "#4c9be8", "normal / target": "#9ecae1",
               "anomaly / source": "#e8554c", "anomaly / target": "#f4a582",
               "unlabelled": "#999999"}
    for ax, m in zip(axes.flat, machines):
        sub = df[df[by] == m]
        sns.stripplot(data=sub, x="group", y=score_col, order=order, hue="group",
                      palette=palette, ax=ax, size=3, jitter=0.25, legend=False)
        sns.boxplot(data=sub, x="group", y=score_col, order=order, ax=ax,
                    showfliers=False, boxprops={"facecolor": "none"}, width=0.5)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=30, labelsize=6)
    for ax in axes.flat[len(machines):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def roc_curves(test: pd.DataFrame, systems: list[str], score_cols: dict[str, str] | None = None,
               path=None):
    """ROC curves per machine, one line per system (``test`` has one score column each)."""
    from sklearn.metrics import roc_curve

    score_cols = score_cols or {s: s for s in systems}
    machines = sorted(test["machine"].unique())
    ncol = min(4, len(machines))
    nrow = int(np.ceil(len(machines) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, m in zip(axes.flat, machines):
        sub = test[test["machine"] == m]
        y = (sub["label"] == "anomaly").to_numpy().astype(int)
        for k, s in enumerate(systems):
            fpr, tpr, _ = roc_curve(y, sub[score_cols[s]].to_numpy())
            ax.plot(fpr, tpr, lw=1.2, color=f"C{k}", label=s)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.axvspan(0, 0.1, color="0.9", zorder=-1)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("FPR", fontsize=7), ax.set_ylabel("TPR", fontsize=7)
    axes.flat[0].legend(fontsize=6, loc="lower right")
    for ax in axes.flat[len(machines):]:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def localisation_maps(spectrograms: list[np.ndarray], maps: list[np.ndarray],
                      titles: list[str], path=None, hop_frames: int = PATCH_FRAMES):
    """Token-level anomaly maps (T', 8) drawn over the clips' log-mel spectrograms.

    A token covers 16 frames x 16 mel bins, as the encoder's patches do, and tokens start
    every ``hop_frames`` frames; each map cell is drawn over the middle ``hop_frames``
    frames of its token (the whole token at 16).
    """
    n = len(maps)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.0 * n), squeeze=False)
    for ax, spec, amap, title in zip(axes[:, 0], spectrograms, maps, titles):
        t = (amap.shape[0] - 1) * hop_frames + PATCH_FRAMES          # frames the tokens span
        start = (PATCH_FRAMES - hop_frames) / 2
        ax.imshow(spec[:t].T, origin="lower", aspect="auto", cmap="gray",
                  extent=(0, t / 100, 0, 128))
        im = ax.imshow(np.asarray(amap, dtype=np.float32).T, origin="lower", aspect="auto",
                       cmap="inferno", alpha=0.55, interpolation="nearest",
                       extent=(start / 100, (start + amap.shape[0] * hop_frames) / 100, 0, 128))
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("mel bin", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    axes[-1, 0].set_xlabel("time (s)", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def evidence_heatmap(table: pd.DataFrame, path=None):
    """AUC per fault kind (%) of every token view x distance x LDN x aggregation of an
    `asdlib.evidence.evidence_table` result: where each fault's evidence is kept."""
    import seaborn as sns

    kinds = [k for k in ("transient", "narrowband", "broad", "official") if k in table]
    labels = [f"{r.view} | {r.metric} | LDN {'on' if r.ldn else 'off'} | {r.aggregation}"
              for r in table.itertuples()]
    data = table[kinds].astype(float).set_axis(labels)
    fig, ax = plt.subplots(figsize=(6.5, 0.8 + 0.28 * len(data)))
    sns.heatmap(data, vmin=50, vmax=100, cmap="viridis", annot=True, fmt=".1f",
                annot_kws={"fontsize": 6}, ax=ax, cbar=False)
    ax.tick_params(labelsize=6)
    ax.set_title("where the evidence is: AUC per fault kind (%)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def branch_correlation(wide: pd.DataFrame, title: str = "", path=None):
    """Spearman correlation of branch scores (columns of ``wide``) on test clips."""
    import seaborn as sns

    corr = wide.corr(method="spearman")
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(corr), 0.8 + 0.5 * len(corr)))
    sns.heatmap(corr, vmin=-1, vmax=1, cmap="vlag", annot=True, fmt=".2f",
                annot_kws={"fontsize": 6}, ax=ax, cbar=False)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def auc_heatmap(table: pd.DataFrame, title: str = "", fmt: str = ".1f", path=None):
    """A rows x columns table of AUC-like numbers (in %) as an annotated heatmap."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * table.shape[1], 0.8 + 0.35 * table.shape[0]))
    sns.heatmap(table.astype(float), annot=True, fmt=fmt, cmap="RdYlGn", vmin=40, vmax=100,
                cbar=False, ax=ax, annot_kws={"fontsize": 7})
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def ldn_effect(calibrated_test: pd.DataFrame, pairs: list[tuple[str, str]], path=None):
    """Calibrated test scores per group, each branch without (left) and with LDN (right)."""
    import seaborn as sns

    df = calibrated_test.copy()
    df["group"] = df["label"].astype(str) + " / " + df["domain"].astype(str)
    order = ["normal / source", "normal / target", "anomaly / source", "anomaly / target"]
    order = [g for g in order if g in set(df["group"])]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 2.6 * len(pairs)), squeeze=False,
                             sharey="row")
    for r, (plain, ldn) in enumerate(pairs):
        for c, name in enumerate((plain, ldn)):
            ax = axes[r, c]
            sub = df[df["branch"] == name]
            sns.boxplot(data=sub, x="machine", y="z", hue="group", hue_order=order, ax=ax,
                        fliersize=1, linewidth=0.6)
            ax.set_title(name, fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=6)
            ax.set_xlabel("")
            ax.set_ylabel("z (bank self-scores)")
            if (r, c) != (0, 1):
                ax.get_legend().remove()
            else:
                ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)
