"""`ClipFeatures`: the token grids and clip vectors of one machine and split, the input
of every scoring branch (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asdlib.audio import PATCH_FRAMES

#: The patch embedding before its LayerNorm, stored beside the hidden states under this
#: layer name (``BEATs.extract(embed=True)``): tokens that keep their scale.
EMBED = "embed"


def token_count(n_time, hop: int):
    """Valid tokens per clip at a time hop of ``hop`` frames, from its ``n_time`` valid
    16-frame patches: the tokens lying wholly inside those patches' span,
    ``16 (n - 1) // hop + 1`` (0 for n = 0). Same shape as ``n_time`` (int)."""
    n = np.asarray(n_time, dtype=np.int64)
    return np.where(n > 0, (PATCH_FRAMES * (n - 1)) // int(hop) + 1, 0)


@dataclass
class ClipFeatures:
    """Encoder outputs for a set of clips of one machine (row i = clip i).

    tokens: (N, T', 8, D) token grid, zero past ``n_time``, one time step every ``hop_frames``.
    n_time: (N,) number of valid time steps per clip.
    utt: (N, D) mean over the valid tokens.
    asp: (N, E) attentive-statistics-pooling embedding, or None.
    band_att: (N, 8, D) band-attentive pooled vectors, or None.
    domain: (N,) "source" / "target" (None entries for unlabeled eval clips).
    names: (N,) wav file names, to join scores back to clips.
    hop_frames: fbank frames between consecutive time steps of ``tokens`` (16: the encoder's
        patch grid; smaller for overlapping patch-embedding tokens, `ExtractConfig.embed_hop`).
    """

    tokens: np.ndarray
    n_time: np.ndarray
    utt: np.ndarray
    asp: np.ndarray | None
    band_att: np.ndarray | None
    domain: np.ndarray
    names: np.ndarray
    hop_frames: int = PATCH_FRAMES

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if self.tokens.ndim != 4 or self.tokens.shape[2] != 8:
            raise ValueError(f"tokens must be (N, T', 8, D), got {self.tokens.shape}")
        for field in ("n_time", "utt", "domain", "names"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"{field} has {len(getattr(self, field))} rows, tokens has {n}")
        for field in ("asp", "band_att"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ValueError(f"{field} has {len(value)} rows, tokens has {n}")

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, rows: np.ndarray) -> "ClipFeatures":
        """The clips at ``rows`` (index array or boolean mask)."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return ClipFeatures(
            tokens=self.tokens[rows], n_time=self.n_time[rows], utt=self.utt[rows],
            asp=pick(self.asp), band_att=pick(self.band_att),
            domain=self.domain[rows], names=self.names[rows], hop_frames=self.hop_frames,
        )

    def valid_time(self) -> np.ndarray:
        """(N, T') bool: True for the valid time patches of each clip."""
        t = self.tokens.shape[1]
        return np.arange(t)[None, :] < self.n_time[:, None]
