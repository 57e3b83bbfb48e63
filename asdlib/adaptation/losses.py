"""The loss of task adaptation, as a list of small terms over one batch.

`loss_terms` turns an `asdlib.adaptation.training.AdaptConfig` into the terms it switches
on, in a fixed order; `total_loss` adds them. Each term reads what it needs from a `Batch`
(the encoder output, the heads' embeddings, the proxy labels, the mixup weight), which
computes shared inputs (the heads' embeddings, the utterance vector, the reconstruction
target) once.

- proxy classification (always): ArcFace on the ASP embedding + ``band_loss_weight`` x the
  mean over bands of ArcFace on each band vector;
- reconstruction (``recon_weight``): a linear map of each token must give its normalised,
  level-free fbank patch (`asdlib.adaptation.small_encoder.fbank_patches`);
- spectrum geometry (``spectrum_weight``, batches of 3 or more):
  `asdlib.adaptation.small_encoder.spectrum_geometry_loss` on the utterance vector;
- utterance ArcFace (``utt_loss_weight``): ArcFace on the plain mean token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from asdlib.adaptation.heads import ArcFace, ASPHead, BandAttentivePooling, token_mask
from asdlib.adaptation.small_encoder import PATCH_PIXELS, fbank_patches, spectrum_geometry_loss
from asdlib.features import masked_grid_mean


class TrainingHeads(nn.Module):
    """Everything trained beside the encoder: both heads, the band projection, three ArcFaces.

    The band vectors (B, 8, D) are projected by one shared Linear(D, E) and each band is
    classified on its own (loss averaged over bands), so each band vector must carry the
    class on its own, as the sub-band branch uses it. ``utt_arc`` classifies the plain mean
    of the valid tokens (B, D), the utterance vector of the kNN branches, without a head.
    """

    def __init__(self, dim: int, emb_dim: int, n_classes: int, scale: float, margin: float,
                 easy_margin: bool):
        super().__init__()
        self.asp = ASPHead(dim, emb_dim)
        self.band = BandAttentivePooling(dim)
        self.band_proj = nn.Linear(dim, emb_dim)
        self.arc = ArcFace(emb_dim, n_classes, scale, margin, easy_margin)
        self.band_arc = ArcFace(emb_dim, n_classes, scale, margin, easy_margin)
        self.utt_arc = ArcFace(dim, n_classes, scale, margin, easy_margin)
        self.recon = nn.Linear(dim, PATCH_PIXELS)

    def forward(self, grid, time_valid):
        """-> asp embedding (B, E), band embeddings (B, 8, E)."""
        return self.asp(grid, time_valid), self.band_proj(self.band(grid, time_valid))


def mean_tokens(grid: torch.Tensor, time_valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T', 8, D), (B, T') -> (B, D) mean over the valid tokens (the utterance vector):
    the feature store's `asdlib.features.masked_grid_mean`, with no time_valid meaning all
    valid."""
    return masked_grid_mean(grid, token_mask(time_valid, grid))[1]



@dataclass
class Batch:
    """One (micro-)batch of adaptation: what the loss terms read.

    grid (B, T', 8, D) tokens of the adapted layer (SpecAugment applied), valid (B, T'),
    wav (B, N) the encoder's input, fbank (B, T, 128) its normalised fbank, y / y2 (B,)
    proxy labels of the two mixup sources (equal without mixup), lam the mixup weight.
    """

    model: nn.Module
    heads: TrainingHeads
    wav: torch.Tensor
    fbank: torch.Tensor
    grid: torch.Tensor
    valid: torch.Tensor
    y: torch.Tensor
    y2: torch.Tensor
    lam: float
    _cache: dict = field(default_factory=dict, repr=False)

    def _cached(self, name: str, make: Callable[[], object]):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ASP embedding (B, E), band embeddings (B, 8, E))."""
        return self._cached("embeddings", lambda: self.heads(self.grid, self.valid))

    @property
    def patches(self) -> torch.Tensor:
        """(B, T', 8, 256) level-free fbank patch of every token (reconstruction target)."""
        return self._cached("patches", lambda: fbank_patches(self.model, self.wav, self.fbank))

    @property
    def utt(self) -> torch.Tensor:
        """(B, D) mean of the valid tokens: the utterance-kNN vector."""
        return self._cached("utt", lambda: mean_tokens(self.grid, self.valid))

    def mixed(self, loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``lam * loss(y) + (1 - lam) * loss(y2)``: a classification loss under mixup."""
        return self.lam * loss(self.y) + (1.0 - self.lam) * loss(self.y2)


def proxy_classification(band_weight: float) -> Callable[[Batch], torch.Tensor]:
    """ArcFace on the ASP embedding + ``band_weight`` x ArcFace on every band vector."""

    def term(batch: Batch) -> torch.Tensor:
        emb, band = batch.embeddings
        b, nb, e = band.shape
        flat = band.reshape(b * nb, e)
        heads = batch.heads
        loss = batch.mixed(lambda y: heads.arc(emb, y))
        band_loss = batch.mixed(lambda y: heads.band_arc(flat, y.repeat_interleave(nb)))
        return loss + band_weight * band_loss

    return term


def reconstruction(batch: Batch) -> torch.Tensor:
    """Mean squared error of each valid token's linear read-out against its fbank patch."""
    target = batch.patches
    pred = batch.heads.recon(batch.grid[:, :target.shape[1]])
    valid = token_mask(batch.valid[:, :target.shape[1]], pred)
    return ((pred - target) ** 2).mean(-1)[valid].mean()


def spectrum_geometry(batch: Batch) -> torch.Tensor | None:
    """`spectrum_geometry_loss` of the utterance vectors (None for batches under 3 clips)."""
    if len(batch.wav) <= 2:
        return None
    target = batch.patches
    return spectrum_geometry_loss(batch.utt, target, batch.valid[:, :target.shape[1]])


def utterance_arcface(batch: Batch) -> torch.Tensor:
    """ArcFace on the plain mean token (the utterance-kNN vector), without a head."""
    return batch.mixed(lambda y: batch.heads.utt_arc(batch.utt, y))


@dataclass(frozen=True)
class LossTerm:
    """One weighted part of the adaptation loss; ``fn`` returns None where it does not apply."""

    name: str
    weight: float
    fn: Callable[[Batch], torch.Tensor | None]


def loss_terms(cfg) -> list[LossTerm]:
    """The terms an `AdaptConfig` switches on, in the order they are added."""
    terms = [LossTerm("proxy", 1.0, proxy_classification(cfg.band_loss_weight))]
    if cfg.recon_weight:
        terms.append(LossTerm("reconstruction", cfg.recon_weight, reconstruction))
    if cfg.spectrum_weight:
        terms.append(LossTerm("spectrum", cfg.spectrum_weight, spectrum_geometry))
    if cfg.utt_loss_weight:
        terms.append(LossTerm("utterance", cfg.utt_loss_weight, utterance_arcface))
    return terms


def total_loss(terms: list[LossTerm], batch: Batch) -> torch.Tensor:
    """The first term plus every later one times its weight (in list order)."""
    total = terms[0].fn(batch)
    for term in terms[1:]:
        value = term.fn(batch)
        if value is not None:
            total = total + term.weight * value
    return total


def proxy_accuracy(batch: Batch) -> tuple[int, int]:
    """(clips whose ASP embedding's nearest class centre is their class, the same by the mean
    over bands of the band cosines); under mixup the class is the larger source."""
    emb, band = batch.embeddings
    b, nb, e = band.shape
    with torch.no_grad():
        target = batch.y if batch.lam >= 0.5 else batch.y2
        c1 = int((batch.heads.arc.cosine(emb).argmax(1) == target).sum())
        votes = batch.heads.band_arc.cosine(band.reshape(b * nb, e)).reshape(b, nb, -1).mean(1)
        c2 = int((votes.argmax(1) == target).sum())
    return c1, c2
