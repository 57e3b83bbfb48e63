"""The project's own small BEATs: its shipped weights and the regularisers that keep it useful.

There is no official BEATs checkpoint here, so the embedded default starts from a "small"
BEATs pre-trained on the project's synthetic data (``asdlib/assets/beats_small_synth.pt``,
made by ``scripts/pretrain_small.py``: self-supervised on the normal training clips of
synthetic seeds 1 and 2, never the evaluation seed 0); `starting_encoder` loads it.

Its recipe (`asdlib.adaptation.training.AdaptConfig.demo`) needs regularisers that an
AudioSet-pretrained BEATs does not: on this data the proxy classification alone throws away
what does not separate the classes, and anomalies are made of exactly that (README).

- `random_gain` and `zero_mean_patch_filters`: BEATs' patch embedding has no bias and each
  token is layer-normalised, so a patch's level swamps its shape in every token unless the
  filters are zero-mean and the level varies at random;
- `fbank_patches`: the level-free reconstruction target that keeps tokens describing their
  own patch;
- `spectrum_geometry_loss` (with `mean_spectrum`): crops whose spectra differ more must lie
  farther apart in the utterance space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdlib.adaptation.heads import token_mask

PATCH_PIXELS = 16 * 16  # one BEATs patch: 16 frames x 16 mel bins
SMALL_ASSET = Path(__file__).resolve().parents[1] / "assets" / "beats_small_synth.pt"


def starting_encoder(config: str = "small", seed: int = 0, pretrained: bool = True,
                     device: str | torch.device = "cpu") -> nn.Module:
    """The encoder adaptation starts from when no official BEATs checkpoint is used.

    "small" with ``pretrained``: the project's own pre-trained small BEATs
    (``asdlib/assets/beats_small_synth.pt``, made by ``scripts/pretrain_small.py``:
    self-supervised on the normal training clips of synthetic seeds 1 and 2, never the
    evaluation seed 0). Otherwise a random ``build_beats(config, seed)``.
    """
    from asdlib.encoder import build_beats, load_beats

    if config == "small" and pretrained:
        if not SMALL_ASSET.is_file():
            raise FileNotFoundError(f"{SMALL_ASSET} is missing; run scripts/pretrain_small.py")
        return load_beats(SMALL_ASSET, device=device)
    return build_beats(config, seed=seed, device=device)


def random_gain(wav: torch.Tensor, gain_db: float, rng: np.random.Generator) -> torch.Tensor:
    """wav (B, N) with each row's level changed by a gain drawn uniformly from +-``gain_db``
    dB (one draw per row from ``rng``), so that embeddings learn to ignore the level."""
    gain = rng.uniform(-gain_db, gain_db, size=(len(wav), 1))
    return wav * torch.from_numpy(10.0 ** (gain / 20.0)).to(wav.dtype)


def fbank_patches(model: nn.Module, wav: torch.Tensor,
                  fbank: torch.Tensor | None = None) -> torch.Tensor:
    """wav (B, N) -> (B, T', 8, 256) normalised fbank patches of every token, each crop's
    mean subtracted (the reconstruction target; level-free). ``fbank``: wav's normalised
    fbank when already computed (`EncoderOutput.fbank`)."""
    with torch.no_grad():
        fb = model.preprocess(wav) if fbank is None else fbank.detach()  # (B, T, 128)
        b, t, f = fb.shape
        t = t // 16 * 16
        p = fb[:, :t].reshape(b, t // 16, 16, f // 16, 16).permute(0, 1, 3, 2, 4)
        p = p.reshape(b, t // 16, f // 16, PATCH_PIXELS)
        return p - p.mean(dim=(1, 2, 3), keepdim=True)


def zero_mean_patch_filters(model: nn.Module) -> None:
    """Subtract from each patch-embedding filter its mean (in place): with the bias-free
    patch convolution, tokens then no longer carry the patch's level, only its shape."""
    conv = getattr(model, "patch_embedding", None)
    if isinstance(conv, nn.Conv2d):
        with torch.no_grad():
            conv.weight -= conv.weight.mean(dim=(2, 3), keepdim=True)


def mean_spectrum(patches: torch.Tensor, time_valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T', 8, 256) patches from `fbank_patches` -> (B, 128) mean over the (valid, when
    ``time_valid`` (B, T') is given) time patches of every mel bin: the crop's spectrum."""
    b, t = patches.shape[:2]
    bands = patches.reshape(b, t, 8, 16, 16)
    if time_valid is None:
        return bands.mean(dim=(1, 3)).reshape(b, -1)
    w = token_mask(time_valid, patches).to(patches.dtype)  # (B, T')
    bands = bands * w[:, :, None, None, None]
    return (bands.sum(dim=(1, 3)) / (16 * w.sum(dim=1))[:, None, None]).reshape(b, -1)


def spectrum_geometry_loss(utt: torch.Tensor, patches: torch.Tensor,
                           time_valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - Pearson correlation, over the pairs of a batch, between the log cosine distances
    of the utterance vectors (B, D) and the log Euclidean distances of the crops' level-free
    mean spectra (from `fbank_patches` (B, T', 8, 256), averaged over the valid time
    patches ``time_valid`` (B, T')).

    Scale-free: it asks only that clips whose spectra differ more lie farther apart in the
    utterance space, which a nearest-neighbour score needs and the proxy classes alone do
    not teach (they pull all clips of a class together).
    """
    spec = mean_spectrum(patches, time_valid)
    u = F.normalize(utt, dim=-1)
    i, j = torch.triu_indices(len(u), len(u), offset=1, device=utt.device)
    d_utt = 1.0 - (u[i] * u[j]).sum(-1)
    d_spec = (spec[i] - spec[j]).norm(dim=-1)
    # log distances: the many far pairs of different machines do not drown out the near
    # pairs of one machine that a nearest-neighbour score depends on
    d_utt, d_spec = (d_utt + 1e-4).log(), (d_spec + 1e-4).log()
    d_utt, d_spec = d_utt - d_utt.mean(), d_spec - d_spec.mean()
    return 1.0 - (d_utt * d_spec).sum() / (d_utt.norm() * d_spec.norm() + 1e-8)
