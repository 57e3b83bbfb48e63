"""The encoder-free floors every result is shown beside (SPEC section 7).

- clip level (``logmel_knn``): the mean log-mel vector of a clip (128 bands), cosine
  distance to the nearest normal training clip of its machine;
- frame level (``logmel_frame_knn``): every frame's log-mel (64 bands), standardised with
  the machine's training frames, with one frame of context on either side (192 values);
  the clip score is the mean of the ``top`` largest Euclidean distances of its frames to
  their nearest training frame. It sees short events the clip mean averages away.

Both return the tidy score table of `asdlib.scoring` (test rows, and leave-one-out bank
self-scores for the clip floor). Neither uses an encoder, so the systems exist to beat them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from asdlib import audio
from asdlib.progress import track

CLIP_FLOOR = "logmel_knn"
FRAME_FLOOR = "logmel_frame_knn"
#: Column names of the floors in Table 1.
LABELS = {CLIP_FLOOR: "log-mel clip kNN", FRAME_FLOOR: "log-mel frame kNN"}


def log_mel(wave: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    """(T, n_mels) Kaldi log-mel fbank (25 ms / 10 ms frames) of a clip in [-1, 1]."""
    import torch
    import torchaudio

    return torchaudio.compliance.kaldi.fbank(torch.from_numpy(wave)[None] * 2 ** 15,
                                             num_mel_bins=n_mels, sample_frequency=sr).numpy()


def logmel_embeddings(table: pd.DataFrame, channel: str = "near", n_mels: int = 128,
                      progress: bool = True) -> np.ndarray:
    """(clips, n_mels) mean log-mel vector per clip (the clip-level floor's descriptor)."""
    out = np.zeros((len(table), n_mels), dtype=np.float32)
    for i, path in enumerate(track(table["path"], desc="clip-level floor", unit="clips",
                                   enabled=progress)):
        wave, sr = audio.load_clip(path, channel=channel)
        out[i] = log_mel(wave, sr, n_mels).mean(0)
    return out


def clip_floor(table: pd.DataFrame, channel: str = "near", progress: bool = True) -> pd.DataFrame:
    """Scores of the clip-level floor (test rows and leave-one-out bank self-scores)."""
    from asdlib.scoring import knn_scores

    return knn_scores(logmel_embeddings(table, channel, progress=progress), table, CLIP_FLOOR)


@dataclass(frozen=True)
class FrameFloorConfig:
    """Settings of the frame-level floor.

    n_mels: log-mel bands per frame; context: frames on either side stacked with each frame
    (1: 30 ms of context in all); top: the clip score is the mean of its ``top`` largest
    frame distances; max_bank_frames: training frames kept per machine (a seeded random
    subset when there are more: the search costs bank x test frames); seed: of that subset.
    """

    n_mels: int = 64
    context: int = 1
    top: int = 10
    max_bank_frames: int = 200_000
    seed: int = 0


def frame_features(wave: np.ndarray, sr: int, cfg: FrameFloorConfig) -> np.ndarray:
    """(T, n_mels * (2 context + 1)) log-mel frames with their neighbours (edges repeated)."""
    mel = log_mel(wave, sr, cfg.n_mels)
    c = cfg.context
    padded = np.pad(mel, ((c, c), (0, 0)), mode="edge")
    return np.concatenate([padded[i: i + len(mel)] for i in range(2 * c + 1)], axis=1)


def _nearest_frame_distance(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(M,) Euclidean distance of each query row to its nearest bank row (exact: faiss's
    blocked flat L2 search)."""
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    d2, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return np.sqrt(np.maximum(d2[:, 0], 0.0))


def frame_floor(table: pd.DataFrame, channel: str = "near", cfg: FrameFloorConfig | None = None,
                progress: bool = True) -> pd.DataFrame:
    """Scores of the frame-level floor for every test clip of ``table`` (no self-scores)."""
    cfg = cfg or FrameFloorConfig()
    parts = []
    machines = list(dict.fromkeys(table["machine"]))
    for machine in track(machines, desc="frame-level floor", unit="machines", enabled=progress):
        rows = table[table["machine"] == machine]
        frames = {}
        for idx, path in zip(rows.index, rows["path"]):
            wave, sr = audio.load_clip(path, channel=channel)
            frames[idx] = frame_features(wave, sr, cfg)
        train = [frames[i] for i in rows.index[rows["split"] == "train"]]
        bank = np.concatenate(train).astype(np.float32)
        mean, std = bank.mean(0), bank.std(0) + 1e-5
        if len(bank) > cfg.max_bank_frames:
            keep = np.random.default_rng(cfg.seed).choice(len(bank), cfg.max_bank_frames,
                                                          replace=False)
            bank = bank[np.sort(keep)]
        bank = ((bank - mean) / std).astype(np.float32)
        test = rows[rows["split"] == "test"]
        queries = [((frames[idx] - mean) / std).astype(np.float32) for idx in test.index]
        d = _nearest_frame_distance(np.concatenate(queries), bank)
        ends = np.cumsum([len(q) for q in queries])
        scores = [float(np.sort(part)[::-1][: cfg.top].mean()) for part in np.split(d, ends[:-1])]
        parts.append(test[[c for c in ("machine", "name", "domain", "label", "kind") if c in test]]
                     .assign(branch=FRAME_FLOOR, score=scores, is_self=False))
    return pd.concat(parts, ignore_index=True)


FLOORS_FILE = "floors.csv"


def load(run) -> pd.DataFrame:
    """Both floors' test scores as written by notebook 01 (``01_finetune/floors.csv``)."""
    path = run.dir / "01_finetune" / FLOORS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run step 01_finetune first")
    scores = pd.read_csv(path, dtype={"name": str})
    return scores[~scores["is_self"]]


def floors(table: pd.DataFrame, channel: str = "near", progress: bool = True) -> pd.DataFrame:
    """Both floors' scores in one tidy table (branches ``logmel_knn``, ``logmel_frame_knn``);
    channel "both": each microphone's floors, combined as a run's branches are
    (`asdlib.scoring.combine_channels`)."""
    if channel == "both":
        from asdlib.scoring import combine_channels

        return combine_channels({c: floors(table, c, progress) for c in ("near", "far")})
    return pd.concat([clip_floor(table, channel, progress), frame_floor(table, channel,
                                                                        progress=progress)],
                     ignore_index=True)
