"""Inference heads on the encoder's token grid, and their file (read by the feature store).

- `ASPHead`: attentive statistics pooling over all valid tokens -> utterance embedding
  ``(B, E)`` (the attentive-pooled kNN branch);
- `BandAttentivePooling`: attention over time inside each frequency band, one attention
  network shared by the 8 bands -> ``(B, 8, D)`` (the third sub-band view);
- `ArcFace`: the additive angular margin loss (Deng et al., CVPR 2019,
  https://arxiv.org/abs/1801.07698) the heads are trained with.

``heads.pt`` (`save_heads` / `load_heads`) stores both heads with the encoder layer whose
grid they read, so extraction feeds them the layer they were trained on.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from asdlib import atomic

HEADS_FILE = "heads.pt"


def token_mask(time_valid: torch.Tensor | None, grid: torch.Tensor) -> torch.Tensor:
    """(B, T') bool time-valid mask, or all True; rows with no valid patch count as valid
    everywhere, so that pooling never divides by zero."""
    b, t = grid.shape[:2]
    if time_valid is None:
        return torch.ones(b, t, dtype=torch.bool, device=grid.device)
    valid = time_valid.to(device=grid.device, dtype=torch.bool)
    if valid.shape != (b, t):
        raise ValueError(f"time_valid must be {(b, t)}, got {tuple(valid.shape)}")
    return valid | ~valid.any(dim=1, keepdim=True)



class ASPHead(nn.Module):
    """Attentive statistics pooling over all valid tokens of the grid.

    grid (B, T', 8, D), time_valid (B, T') -> embedding (B, E): attention-weighted mean and
    standard deviation over the T'*8 tokens, concatenated (2D), layer-normed, projected to
    E. Padded time patches get weight exactly 0 and their values are zeroed, so they do
    not change the result.
    """

    def __init__(self, dim: int, emb_dim: int = 128, hidden: int = 128):
        super().__init__()
        self.dim, self.emb_dim, self.hidden = dim, emb_dim, hidden
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, emb_dim)

    def config(self) -> dict:
        return {"dim": self.dim, "emb_dim": self.emb_dim, "hidden": self.hidden}

    def forward(self, grid: torch.Tensor, time_valid: torch.Tensor | None = None) -> torch.Tensor:
        b, t, f, d = grid.shape
        valid = token_mask(time_valid, grid)[:, :, None].expand(b, t, f).reshape(b, t * f)
        x = grid.reshape(b, t * f, d).masked_fill(~valid[..., None], 0.0)
        logits = self.attention(x).squeeze(-1).masked_fill(~valid, float("-inf"))
        w = torch.softmax(logits, dim=1)[..., None]  # (B, T'*8, 1)
        mean = (w * x).sum(dim=1)
        var = (w * x * x).sum(dim=1) - mean * mean
        std = var.clamp_min(1e-6).sqrt()
        return self.proj(self.norm(torch.cat([mean, std], dim=-1)))


class BandAttentivePooling(nn.Module):
    """Attention over time inside each frequency band; one attention network for all bands.

    grid (B, T', 8, D), time_valid (B, T') -> (B, 8, D): per band, a softmax over the valid
    time patches of a shared scoring MLP, then the weighted sum of the band's tokens.
    """

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden}

    def weights(self, grid: torch.Tensor, time_valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T', 8) attention weights, summing to 1 over valid time in each band."""
        valid = token_mask(time_valid, grid)[:, :, None]  # (B, T', 1)
        logits = self.attention(grid.masked_fill(~valid[..., None], 0.0)).squeeze(-1)
        return torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=1)

    def forward(self, grid: torch.Tensor, time_valid: torch.Tensor | None = None) -> torch.Tensor:
        valid = token_mask(time_valid, grid)[:, :, None, None]
        w = self.weights(grid, time_valid)[..., None]  # (B, T', 8, 1)
        return (w * grid.masked_fill(~valid, 0.0)).sum(dim=1)


class ArcFace(nn.Module):
    """Additive angular margin loss: logits s*cos(theta_y + m) for the true class, s*cos(theta_j) else.

    emb (B, E), labels (B,) -> scalar mean cross-entropy. Cosines are clamped to
    [-1 + 1e-7, 1 - 1e-7] so that sin = sqrt(1 - cos^2) keeps a finite gradient.
    Past theta_y > pi - m, cos(theta_y + m) would grow again with theta; there the true-class
    logit becomes cos(theta_y) - m*sin(m) (the usual monotone continuation). With
    ``easy_margin`` the margin is applied only where cos(theta_y) > 0 (theta < 90 deg) and
    the plain cosine is used elsewhere. margin = 0 gives a softmax over scaled cosines.
    """

    def __init__(self, emb_dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.2,
                 easy_margin: bool = False):
        super().__init__()
        self.emb_dim, self.n_classes = emb_dim, n_classes
        self.scale, self.margin, self.easy_margin = float(scale), float(margin), easy_margin
        self.weight = nn.Parameter(torch.empty(n_classes, emb_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, C) cosine between each embedding and each class centre."""
        return F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).t()

    def logits(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, C) scaled logits with the margin on each row's true class."""
        cos = self.cosine(emb).clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        if self.margin == 0.0:
            return self.scale * cos
        sin = (1.0 - cos * cos).sqrt()
        phi = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        if self.easy_margin:
            phi = torch.where(cos > 0, phi, cos)
        else:
            phi = torch.where(cos > math.cos(math.pi - self.margin), phi,
                              cos - math.sin(math.pi - self.margin) * self.margin)
        onehot = F.one_hot(labels, self.n_classes).to(cos.dtype)
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(emb, labels), labels)


def save_heads(path: str | os.PathLike, asp: ASPHead, band: BandAttentivePooling, layer: int,
               **extra) -> None:
    """Write both heads, the encoder ``layer`` they read and any ``extra`` facts (atomically)."""
    atomic.torch_save({"asp": {"config": asp.config(), "state": asp.state_dict()},
                       "band": {"config": band.config(), "state": band.state_dict()},
                       "layer": int(layer), **extra}, path)


def heads_layer(path: str | os.PathLike) -> int:
    """The encoder layer (hidden-state index, -1 = final) whose grid the heads were trained on."""
    return int(torch.load(path, map_location="cpu", weights_only=True).get("layer", -1))


def load_heads(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[ASPHead, BandAttentivePooling]:
    """Read ``heads.pt`` (`save_heads`) -> (asp_head, band_head), in eval mode."""
    blob = torch.load(path, map_location=device, weights_only=True)
    asp = ASPHead(**blob["asp"]["config"])
    asp.load_state_dict(blob["asp"]["state"])
    band = BandAttentivePooling(**blob["band"]["config"])
    band.load_state_dict(blob["band"]["state"])
    return asp.to(device).eval(), band.to(device).eval()
