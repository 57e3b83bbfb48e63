"""Dataset overview numbers for notebook 00: counts, durations, near/far levels and SNR."""

from __future__ import annotations

import numpy as np
import pandas as pd

from asdlib import audio


def split_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Clips per machine and (split, domain, label) cell, one column per cell."""
    cells = (table["split"] + "/" + table["domain"].fillna("-") + "/"
             + table["label"].fillna("-"))
    return pd.crosstab(table["machine"], cells)


def attribute_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Clips per machine, split and attribute string (long format)."""
    return (table.groupby(["machine", "split", "domain", "attributes"], dropna=False)
            .size().rename("clips").reset_index())


def channel_levels(table: pd.DataFrame, max_clips_per_machine: int | None = 40,
                   seed: int = 0) -> pd.DataFrame:
    """Per clip: duration, near and far RMS level (dBFS) and an estimate of the far SNR.

    The far-channel SNR is estimated by `far_snr_db`. For mono data the far columns are NaN. ``max_clips_per_machine`` samples clips (seeded) to keep
    the overview quick on the full dataset.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for machine, rows in table.groupby("machine", sort=True):
        if max_clips_per_machine and len(rows) > max_clips_per_machine:
            rows = rows.iloc[np.sort(rng.choice(len(rows), max_clips_per_machine, replace=False))]
        parts.append(rows)
    picked = pd.concat(parts)
    records = []
    for row in picked.itertuples(index=False):
        wave, sr = audio.load_clip(row.path, channel="near")
        rec = {"machine": row.machine, "name": row.name, "split": row.split,
               "domain": row.domain, "label": row.label,
               "seconds": wave.shape[-1] / sr, "near_dbfs": _dbfs(wave),
               "far_dbfs": np.nan, "far_snr_db": np.nan}
        both, _ = audio.load_channels(row.path)
        if len(both) == 2:
            rec["far_dbfs"] = _dbfs(both[1])
            rec["far_snr_db"] = far_snr_db(both[0], both[1], sr)
        records.append(rec)
    return pd.DataFrame(records)


def far_snr_db(near: np.ndarray, far: np.ndarray, sr: int = 16000) -> float:
    """Far-channel SNR (dB) from the near/far magnitude-squared coherence.

    For far = (near filtered by the room) + independent noise, the coherence per frequency
    is S / (S + N) with S the filtered machine power, so the signal share of the far power
    is sum(coh * P_far) and the noise share sum((1 - coh) * P_far). This survives the
    room's filtering, which a single regression gain would count as noise; the 256 ms
    window spans most of a room's reverberation, whose tail still counts partly as noise.
    """
    from scipy.signal import coherence, welch

    _, coh = coherence(near, far, fs=sr, nperseg=4096)
    _, p_far = welch(far, fs=sr, nperseg=4096)
    signal = float(np.sum(coh * p_far))
    noise = float(np.sum((1 - coh) * p_far))
    return 10 * np.log10(max(signal, 1e-20) / max(noise, 1e-20))


def _dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(max(np.sqrt(np.mean(np.square(x, dtype=np.float64))), 1e-10)))


def example_clips(table: pd.DataFrame) -> pd.DataFrame:
    """One normal and one anomalous test clip per machine (first by name), for figures; where
    the test clips carry no labels (an evaluation set), a training clip and a test clip."""
    picks = []
    for machine, rows in table.sort_values("name").groupby("machine", sort=True):
        test = rows[rows["split"] == "test"]
        cells = [test[test["label"] == label] for label in ("normal", "anomaly")]
        if not any(len(c) for c in cells):
            cells = [rows[rows["split"] == "train"], test]
        picks += [c.iloc[0] for c in cells if len(c)]
    return pd.DataFrame(picks).reset_index(drop=True)
