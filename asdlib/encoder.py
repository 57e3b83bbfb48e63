"""BEATs audio encoder, written from the published architecture, checkpoint-compatible.

Loads the official BEATs checkpoints (``BEATs_iter3.pt``, ``BEATs_iter3_plus_AS2M.pt``,
AS2M fine-tuned ones with a predictor) with strict key matching, reads every setting from
the checkpoint's ``cfg`` and saves back in the same format, so the official code can load
what this module writes.

Differences from the official implementation are in speed and interface only (float32
outputs agree to ~2e-6): attention goes through ``scaled_dot_product_attention`` with the
gated relative-position bias as an additive mask, the bucket table is cached per length,
q/k/v are one matmul, the fbank runs on the whole batch (bitwise equal to the per-clip
call), the positional convolution runs channels-last (or through the FFT for narrow
models), and inference reuses its large buffers across layers. :meth:`BEATs.extract`
returns every requested hidden state as tokens (``B, T'*8, D``, time-major: token
``8 * t + f``) plus their time/frequency grid view.

Shapes: B batch, N samples (16 kHz), T fbank frames (``1 + (N - 400) // 160``),
T' time patches (``T // 16``), 8 frequency patches, D encoder dim.

Padding: :meth:`BEATs.extract` marks a time patch valid when all its 16 frames lie in
unpadded samples (exact, so a padded clip gives the same valid tokens as the clip alone);
:meth:`BEATs.extract_features` reproduces the official function including its coarser
token mask (blocks of ``T // (T'*8)`` frames per token).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asdlib import atomic
from asdlib.audio import SAMPLE_RATE

__all__ = [
    "BEATs",
    "BEATsConfig",
    "CONFIGS",
    "CheckpointError",
    "ConfigError",
    "EncoderInputError",
    "EncoderOutput",
    "FBANK_MEAN",
    "FBANK_STD",
    "SAMPLE_RATE",
    "build_beats",
    "compute_fbank",
    "load_beats",
    "save_beats",
    "tokens_to_grid",
]

FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
NUM_MEL_BINS = 128
FRAME_LENGTH_SAMPLES = 400  # 25 ms at 16 kHz
FRAME_SHIFT_SAMPLES = 160  # 10 ms at 16 kHz
PATCH_SIZE = 16
N_FREQ_PATCHES = NUM_MEL_BINS // PATCH_SIZE  # 8
MIN_SAMPLES = FRAME_LENGTH_SAMPLES + (PATCH_SIZE - 1) * FRAME_SHIFT_SAMPLES  # one time patch


# --------------------------------------------------------------------------------------
# errors


class CheckpointError(ValueError):
    """A file or dict is not a usable BEATs checkpoint (unreadable, wrong layout, keys)."""


class ConfigError(CheckpointError):
    """A BEATs cfg has an unknown field or a value this implementation does not support.

    A subclass of :class:`CheckpointError` because a cfg normally comes from a checkpoint.
    """


class EncoderInputError(ValueError):
    """Audio given to the encoder has the wrong shape, dtype, range or sample rate."""


# --------------------------------------------------------------------------------------
# configuration

_SUPPORTED_ACTIVATIONS = ("gelu", "gelu_accurate", "relu", "tanh", "linear", "swish")


@dataclass
class BEATsConfig:
    """All settings of a BEATs model, field for field the official ``BEATsConfig``.

    Defaults are the official class defaults (used for fields a cfg dict leaves out);
    real checkpoints set most of them, e.g. iter3 uses patch 16, deep_norm, 0.6 decay.
    """

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "BEATsConfig":
        """Build and validate from a checkpoint's cfg dict; unknown fields raise ConfigError."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"cfg must be a dict, got {type(cfg).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in cfg if k not in known)
        if unknown:
            raise ConfigError(f"unknown BEATs cfg field(s) {unknown}; known fields: {sorted(known)}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in cfg:
                values[f.name] = _coerce_field(f.name, f.type, cfg[f.name])
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The cfg dict as stored in official checkpoints (same fields, same order)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "BEATsConfig":
        """A validated copy with some fields changed."""
        return BEATsConfig.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Raise ConfigError for values this implementation cannot run."""
        problems = []
        if self.input_patch_size != PATCH_SIZE:
            problems.append(f"input_patch_size={self.input_patch_size} (only {PATCH_SIZE} is supported: "
                            f"the token layout is {N_FREQ_PATCHES} frequency patches of 16 mel bins)")
        for name in ("embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                     "encoder_attention_heads", "conv_pos", "conv_pos_groups", "num_buckets",
                     "max_distance", "predictor_class"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.encoder_attention_heads >= 1 and self.encoder_embed_dim % self.encoder_attention_heads:
            problems.append(f"encoder_embed_dim={self.encoder_embed_dim} is not divisible by "
                            f"encoder_attention_heads={self.encoder_attention_heads}")
        if self.conv_pos_groups >= 1 and self.encoder_embed_dim % self.conv_pos_groups:
            problems.append(f"encoder_embed_dim={self.encoder_embed_dim} is not divisible by "
                            f"conv_pos_groups={self.conv_pos_groups}")
        if self.activation_fn not in _SUPPORTED_ACTIVATIONS:
            problems.append(f"activation_fn={self.activation_fn!r} (supported: {list(_SUPPORTED_ACTIVATIONS)})")
        if self.layer_norm_first:
            problems.append("layer_norm_first=True (pre-LN BEATs is not supported; official "
                            "checkpoints use post-LN)")
        if self.relative_position_embedding and (self.num_buckets < 4 or self.num_buckets % 2):
            problems.append(f"num_buckets={self.num_buckets} must be even and >= 4")
        if self.relative_position_embedding and self.max_distance <= self.num_buckets // 4:
            problems.append(f"max_distance={self.max_distance} must exceed num_buckets // 4")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                     "dropout_input", "predictor_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1)")
        if not self.layer_wise_gradient_decay_ratio > 0.0:
            problems.append(f"layer_wise_gradient_decay_ratio={self.layer_wise_gradient_decay_ratio} must be > 0")
        if problems:
            raise ConfigError("unsupported BEATs cfg: " + "; ".join(problems))


def _coerce_field(name: str, type_name: Any, value: Any) -> Any:
    """Check one cfg value's type: ints stay ints, bools accept 0/1, floats accept ints."""
    type_name = type_name if isinstance(type_name, str) else type_name.__name__
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif type_name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif type_name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif type_name == "str":
        if isinstance(value, str):
            return value
    raise ConfigError(f"cfg field {name}={value!r} ({type(value).__name__}) is not a valid {type_name}")


# iter3 / iter3+ settings; the named configs share them and differ in size only.
_ITER3_CFG: dict[str, Any] = dict(
    input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12,
    encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
    activation_fn="gelu", layer_wise_gradient_decay_ratio=0.6, layer_norm_first=False,
    deep_norm=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    encoder_layerdrop=0.0, dropout_input=0.0, conv_pos=128, conv_pos_groups=16,
    relative_position_embedding=True, num_buckets=320, max_distance=800, gru_rel_pos=True,
    finetuned_model=False, predictor_dropout=0.0, predictor_class=527,
)

CONFIGS: dict[str, dict[str, Any]] = {
    # tests: ~0.1 GFLOP per 6 s clip
    "tiny": {**_ITER3_CFG, "embed_dim": 64, "encoder_layers": 2, "encoder_embed_dim": 64,
             "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "conv_pos": 32},
    # embedded CPU default: ~1.2 GFLOP per 6 s clip
    "small": {**_ITER3_CFG, "embed_dim": 256, "encoder_layers": 4, "encoder_embed_dim": 192,
              "encoder_ffn_embed_dim": 384, "encoder_attention_heads": 4},
    # the official iter3 architecture: ~98.7 GFLOP per 10 s clip
    "base": dict(_ITER3_CFG),
}
"""Named cfg dicts for :func:`build_beats`; same architecture, different sizes."""


# --------------------------------------------------------------------------------------
# preprocessing


@functools.lru_cache(maxsize=8)
def _fbank_constants(device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Povey window (400,), mel matrix (257, 128) and log floor, as torchaudio's Kaldi fbank.

    Cached per device; built outside inference mode so that training can use them too.
    """
    import torchaudio.compliance.kaldi as kaldi  # lazily: torchaudio is slow to import

    with torch.inference_mode(False):
        window = torch.hann_window(FRAME_LENGTH_SAMPLES, periodic=False, dtype=torch.float32).pow(0.85)
        mel, _ = kaldi.get_mel_banks(NUM_MEL_BINS, 512, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
        mel = F.pad(mel, (0, 1)).T.contiguous()  # Nyquist bin gets weight 0
        return window.to(device), mel.to(device), kaldi.EPSILON.to(device)


def compute_fbank(wav: Tensor) -> Tensor:
    """wav (B, N) float32 in [-1, 1] -> normalised log-mel fbank (B, T, 128).

    The same operations, in the same order, as ``torchaudio.compliance.kaldi.fbank(wav * 2**15,
    num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)`` per clip
    (frames of 400 samples every 160, DC removal, pre-emphasis 0.97, Povey window, 512-point
    power spectrum, mel, log), run on the whole batch at once; the result is bitwise
    identical to the per-clip call (checked in the tests) and several times faster for small
    models. Then ``(x - 15.41663) / (2 * 6.55582)``.
    """
    window, mel, floor = _fbank_constants(str(wav.device))
    frames = (wav * 2**15).unfold(1, FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES)  # (B, T, 400) view
    frames = frames - frames.mean(-1, keepdim=True)
    frames = frames - 0.97 * torch.cat((frames[..., :1], frames[..., :-1]), -1)
    frames = F.pad(frames * window, (0, 512 - FRAME_LENGTH_SAMPLES))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (B, T, 257)
    batch, n_frames, n_bins = power.shape
    energies = torch.mm(power.view(batch * n_frames, n_bins), mel).view(batch, n_frames, NUM_MEL_BINS)
    return (torch.max(energies, floor).log() - FBANK_MEAN) / (2 * FBANK_STD)


# --------------------------------------------------------------------------------------
# building blocks


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by ``scale`` backward (layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # noqa: D102
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return grad * ctx.scale, None


def _activation(name: str, x: Tensor) -> Tensor:
    """The FFN activations of the official code (gelu is the exact erf form)."""
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_accurate":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "swish":
        return F.silu(x)
    return x  # "linear"


def _activation_(name: str, x: Tensor) -> Tensor:
    """The same activations in place (inference only: saves a large allocation per layer)."""
    if name == "gelu":
        return torch.ops.aten.gelu_(x)
    if name == "gelu_accurate":
        return torch.ops.aten.gelu_(x, approximate="tanh")
    if name == "relu":
        return x.relu_()
    if name == "tanh":
        return x.tanh_()
    if name == "swish":
        return F.silu(x, inplace=True)
    return x  # "linear"


@dataclass
class _Workspace:
    """Buffers reused by every layer of one inference forward (no autograd, no autocast).

    attn_mask: (B, H, L, L) gated bias; ffn: (B * L, FFN) hidden activations. Reusing them
    avoids fresh 20-50 MB allocations, whose page faults cost ~5 % at the base size.
    """

    attn_mask: Tensor | None = None
    ffn: Tensor | None = None


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``g * v / ||v||`` with the norm over dims (0, 1) per kernel tap.

    Holds ``weight_g`` (1, 1, K) and ``weight_v`` (C_out, C_in / groups, K) itself, the names
    of the old ``nn.utils.weight_norm(conv, dim=2)`` in the checkpoints, and stays
    deep-copyable. Forward pads K // 2 on both sides and drops the last output when K is
    even (the official ``SamePad``), so the output length equals the input length.

    Narrow models (kernel spectrum up to ``FFT_MAX_WEIGHT_BINS`` complex values, e.g. the
    "small" config) convolve through the FFT once a batch holds ``FFT_MIN_TOKENS`` tokens:
    4x faster there, and closer to a float64 reference than the direct conv. Wide ones
    (official 768 dim, whose kernel spectrum would be 150 MB) convolve directly.
    """

    FFT_MAX_WEIGHT_BINS = 4_000_000
    FFT_MIN_TOKENS = 512

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.bias = nn.Parameter(torch.zeros(channels))  # registration order = official key order
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))

    def weight(self) -> Tensor:
        """Effective kernel (C_out, C_in / groups, K): the op behind torch's weight norm."""
        return torch._weight_norm(self.weight_v, self.weight_g, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, L) -> (B, C, L): ``out[t] = bias + sum_k w[k] x[t + k - K // 2]``.

        On the CPU the convolution always runs in float32, also under bfloat16 autocast or
        with a bfloat16 input: oneDNN's bfloat16 grouped convolution returns wrong values for
        some shapes on AMX CPUs (83 % relative error for 96 channels, 16 groups, kernel 128;
        the small and tiny configs' pos_conv among them), and in float32 it costs ~2 % of
        the forward. CUDA keeps the autocast dtype (cuDNN is exact to bfloat16 rounding).
        """
        if x.device.type == "cpu" and (x.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
            with torch.autocast(device_type="cpu", enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        channels, group_size, kernel = self.weight_v.shape
        length = x.shape[-1]
        n_fft = 1 << (length + kernel - 2).bit_length()  # >= L + K - 1: no circular wrap
        if (x.shape[0] * length >= self.FFT_MIN_TOKENS
                and channels * group_size * (n_fft // 2 + 1) <= self.FFT_MAX_WEIGHT_BINS):
            return self._fft_forward(x, n_fft)
        # as a channels-last conv2d over (B, C, 1, L): oneDNN runs it ~1.4x faster than conv1d,
        # and a (B, L, C) input arrives as a channels-last view without a copy
        weight = self.weight().unsqueeze(2).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x.unsqueeze(2).contiguous(memory_format=torch.channels_last), weight, self.bias,
                       padding=(0, kernel // 2), groups=self.groups)
        return out.squeeze(2)[:, :, :length]

    def _fft_forward(self, x: Tensor, n_fft: int) -> Tensor:
        """The same correlation as products of spectra, per group (float32 throughout)."""
        batch, channels, length = x.shape
        groups, group_size = self.groups, channels // self.groups
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            x_spec = torch.fft.rfft(F.pad(x, (self.kernel_size // 2, 0)), n=n_fft)  # (B, C, F)
            w_spec = torch.fft.rfft(self.weight(), n=n_fft).conj()  # (C, C/g, F): correlation
            bins = x_spec.shape[-1]
            y_spec = torch.einsum("gocf,bgcf->bgof", w_spec.view(groups, group_size, group_size, bins),
                                  x_spec.view(batch, groups, group_size, bins))
            out = torch.fft.irfft(y_spec.reshape(batch, channels, bins), n=n_fft)[:, :, :length]
            return out + self.bias[:, None]


@functools.lru_cache(maxsize=16)
def _relative_bucket_table(length: int, num_buckets: int, max_distance: int, device: str) -> Tensor:
    """Bucket index (L, L) of relative position ``j - i``, as the official T5-style bucketing.

    Half the buckets for ``j > i``; exact buckets for ``|j - i| < num_buckets // 4``, then
    logarithmic up to ``max_distance`` (float32 log, truncated), clamped to the last bucket.
    Cached per length and device (built outside inference mode so that training can use
    it); callers must not modify the result.
    """
    with torch.inference_mode(False):
        half = num_buckets // 2
        max_exact = half // 2
        offsets = torch.arange(-(length - 1), length, dtype=torch.long)  # j - i, (2L - 1,)
        distance = offsets.abs()
        large = max_exact + (
            torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
        ).to(torch.long)
        large = torch.clamp(large, max=half - 1)
        bucket_of_offset = (offsets > 0).long() * half + torch.where(distance < max_exact, distance, large)
        i = torch.arange(length)
        table = bucket_of_offset[(i[None, :] - i[:, None]) + (length - 1)]  # [i, j] -> bucket(j - i)
        return table.to(device)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with the gated relative position bias of BEATs (official names)."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None,
                 layer_index: int) -> None:
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads = heads
        self.head_dim = dim // heads
        self.attention_dropout = cfg.attention_dropout
        self.gru_rel_pos = cfg.gru_rel_pos
        # registration order reproduces the official state-dict key order: the shared table
        # comes first in layer 0 and last in the others (where the official code re-assigns it)
        if cfg.gru_rel_pos:
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        if relative_attention_bias is not None and layer_index == 0:
            self.relative_attention_bias = relative_attention_bias
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
        if relative_attention_bias is not None and layer_index > 0:
            # the same module in every layer: one table, its key repeated under each layer name
            self.relative_attention_bias = relative_attention_bias

    def forward(self, x: Tensor, position_bias: Tensor | None, key_padding_bias: Tensor | None,
                mask_buffer: Tensor | None = None) -> Tensor:
        """x (B, L, D); position_bias (H, L, L) ungated; key_padding_bias (B, 1, 1, L) 0/-inf.

        ``mask_buffer`` (B, H, L, L), when given, receives the gated mask in place (inference
        only). Returns (B, L, D).
        """
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        weight = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))
        bias = torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias))
        qkv = F.linear(x, weight, bias).view(batch, length, 3, heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd), strided views

        attn_mask = key_padding_bias
        if position_bias is not None:
            if self.gru_rel_pos:
                # grep_linear(q) viewed (2, 4) and summed == q @ (weights summed in fours)
                grep_w = self.grep_linear.weight.view(2, 4, head_dim).sum(1)
                grep_b = self.grep_linear.bias.view(2, 4).sum(1)
                gate_a, gate_b = torch.sigmoid(F.linear(q, grep_w, grep_b)).unbind(-1)  # (B, H, L)
                gate = (gate_a * (gate_b * self.grep_a[:, :, :, 0] - 1.0) + 2.0).unsqueeze(-1)
                if mask_buffer is not None:
                    attn_mask = torch.mul(gate, position_bias, out=mask_buffer)
                    if key_padding_bias is not None:
                        attn_mask.add_(key_padding_bias)
                elif key_padding_bias is not None:
                    attn_mask = torch.addcmul(key_padding_bias, gate, position_bias)
                else:
                    attn_mask = gate * position_bias
            elif key_padding_bias is not None:
                attn_mask = position_bias + key_padding_bias
            else:
                attn_mask = position_bias.unsqueeze(0)
        if attn_mask is not None and attn_mask.dtype != q.dtype:
            attn_mask = attn_mask.to(q.dtype)
        dropout_p = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """Post-LN (DeepNorm) transformer layer: ``x = LN(alpha * x + f(x))`` for attn and FFN."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None,
                 layer_index: int) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = MultiheadSelfAttention(cfg, relative_attention_bias, layer_index)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation_fn = cfg.activation_fn
        self.dropout = cfg.dropout
        self.activation_dropout = cfg.activation_dropout
        self.deep_norm_alpha = (2.0 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0

    def forward(self, x: Tensor, position_bias: Tensor | None, key_padding_bias: Tensor | None,
                workspace: _Workspace | None = None) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        training = self.training
        workspace = workspace or _Workspace()
        y = self.self_attn(x, position_bias, key_padding_bias, workspace.attn_mask)
        y = F.dropout(y, self.dropout, training)
        x = self.self_attn_layer_norm(torch.add(y, x, alpha=self.deep_norm_alpha))
        if workspace.ffn is not None:
            hidden = torch.addmm(self.fc1.bias, x.view(-1, x.shape[-1]), self.fc1.weight.T, out=workspace.ffn)
            y = _activation_(self.activation_fn, hidden).view(*x.shape[:-1], -1)
        else:
            y = _activation(self.activation_fn, self.fc1(x))
        y = F.dropout(y, self.activation_dropout, training)
        y = F.dropout(self.fc2(y), self.dropout, training)
        return self.final_layer_norm(torch.add(y, x, alpha=self.deep_norm_alpha))


class TransformerEncoder(nn.Module):
    """Convolutional positional embedding, encoder LayerNorm, then the layer stack.

    ``layer_wise_gradient_decay_ratio`` and ``layerdrop`` come from the cfg and act only in
    training mode; set them on the instance to change training behaviour.
    """

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups))
        shared_bias = (nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads)
                       if cfg.relative_position_embedding else None)
        self.layers = nn.ModuleList(EncoderLayer(cfg, shared_bias, index) for index in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.relative_position_embedding = cfg.relative_position_embedding
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        self.dropout = cfg.dropout
        self.layerdrop = cfg.encoder_layerdrop
        self.layer_wise_gradient_decay_ratio = cfg.layer_wise_gradient_decay_ratio

    def position_bias(self, length: int) -> Tensor:
        """Ungated relative position bias (H, L, L) from layer 0's table."""
        table = self.layers[0].self_attn.relative_attention_bias.weight  # (num_buckets, H)
        buckets = _relative_bucket_table(length, self.num_buckets, self.max_distance, str(table.device))
        return F.embedding(buckets, table).permute(2, 0, 1).contiguous()

    def forward(self, x: Tensor, token_padding: Tensor | None, last_layer: int,
                keep: set[int]) -> dict[int, Tensor]:
        """x (B, L, D) projected patch tokens -> {hidden index: (B, L, D)} for indices in keep.

        Index 0 is the input to layer 0, i the output of layer i; runs layers 1..last_layer.
        """
        if token_padding is not None:
            x = x.masked_fill(token_padding.unsqueeze(-1), 0.0)
        conv = self.pos_conv[0](x.transpose(1, 2))  # (B, D, L), strides usually of (B, L, D)
        x = x + F.gelu(conv.transpose(1, 2))
        x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)

        hidden: dict[int, Tensor] = {}
        if 0 in keep:
            hidden[0] = x
        batch, length, _ = x.shape
        heads = self.layers[0].self_attn.num_heads if self.layers else 1
        position_bias = self.position_bias(length) if self.relative_position_embedding and last_layer else None
        key_padding_bias = None
        if token_padding is not None:
            key_padding_bias = torch.zeros(batch, 1, 1, length, dtype=x.dtype, device=x.device)
            key_padding_bias.masked_fill_(token_padding[:, None, None, :], float("-inf"))
        workspace = _Workspace()
        if not torch.is_grad_enabled() and last_layer:
            if position_bias is not None and self.layers[0].self_attn.gru_rel_pos:
                workspace.attn_mask = x.new_empty(batch, heads, length, length, dtype=position_bias.dtype)
            if not torch.is_autocast_enabled(x.device.type):  # addmm(out=) needs one dtype
                workspace.ffn = x.new_empty(batch * length, self.layers[0].fc1.out_features)

        training = self.training
        decay = self.layer_wise_gradient_decay_ratio
        for index, layer in enumerate(self.layers[:last_layer], start=1):
            if training and decay != 1.0 and torch.is_grad_enabled():
                x = _GradMultiply.apply(x, decay)
            if not (training and self.layerdrop > 0.0 and float(torch.rand(())) < self.layerdrop):
                x = layer(x, position_bias, key_padding_bias, workspace)
            if index in keep:
                hidden[index] = x
        return hidden


# --------------------------------------------------------------------------------------
# outputs


class LayerTokens(dict):
    """{hidden-state index: tokens (B, T'*8, D)}; negative indices count from the end."""

    def __init__(self, items: Mapping[int, Tensor], num_layers: int) -> None:
        super().__init__(items)
        self.num_layers = num_layers

    def _index(self, layer: int) -> int:
        return _normalise_layer(layer, self.num_layers)

    def __getitem__(self, layer: int) -> Tensor:
        index = self._index(layer)
        if not dict.__contains__(self, index):
            raise KeyError(f"layer {layer} was not extracted; extracted: {sorted(dict.keys(self))}")
        return dict.__getitem__(self, index)

    def __contains__(self, layer: object) -> bool:
        try:
            return dict.__contains__(self, self._index(layer))  # type: ignore[arg-type]
        except (TypeError, IndexError):
            return False

    def get(self, layer: int, default: Any = None) -> Any:  # noqa: D102
        return self[layer] if layer in self else default


@dataclass
class EncoderOutput:
    """What :meth:`BEATs.extract` returns.

    tokens: {layer: (B, T'*8, D)}, time-major (token ``8 * t + f``), keyed by hidden-state
        index (0 = input to layer 0, i = output of layer i, -1 = final); float32 also
        under bfloat16 autocast. Tokens of padded time patches are left as computed.
    token_padding: (B, T'*8) bool, True = padded, or None when no padding mask was given.
    time_valid: (B, T') bool, True where the time patch lies wholly in unpadded audio.
    logits, probs: (B, C) for fine-tuned checkpoints (predictor on each token, mean over
        unpadded tokens, sigmoid), when the final layer was computed; else None.
    fbank: (B, T, 128) the normalised fbank the tokens were computed from (before any
        forward hook on ``patch_embedding``), so that callers need not compute it again.
    embed: (B, T'*8, E) the patch embedding before its LayerNorm (``extract(embed=True)``),
        else None: the last place where each token keeps its own scale (the LayerNorm
        divides out the spread across dimensions that a short event inside a patch raises).
    """

    tokens: LayerTokens
    token_padding: Tensor | None
    time_valid: Tensor
    logits: Tensor | None = None
    probs: Tensor | None = None
    n_freq: int = N_FREQ_PATCHES
    fbank: Tensor | None = None
    embed: Tensor | None = None

    def grid(self, layer: int = -1) -> Tensor:
        """Tokens of one layer as (B, T', 8, D) (a view, no copy)."""
        return tokens_to_grid(self.tokens[layer], self.n_freq)

    def embed_grid(self) -> Tensor:
        """The patch embedding before its LayerNorm as (B, T', 8, E) (``extract(embed=True)``)."""
        if self.embed is None:
            raise KeyError("the patch embedding was not requested: extract(..., embed=True)")
        return tokens_to_grid(self.embed, self.n_freq)

    @property
    def n_time(self) -> Tensor:
        """(B,) long: number of valid time patches per clip (valid ones come first)."""
        return self.time_valid.sum(1)


def tokens_to_grid(tokens: Tensor, n_freq: int = N_FREQ_PATCHES) -> Tensor:
    """(B, T'*8, D) time-major tokens -> (B, T', 8, D) view; [b, t, f] = token 8 * t + f."""
    if tokens.dim() != 3 or tokens.shape[1] % n_freq:
        raise EncoderInputError(f"tokens must be (B, T'*{n_freq}, D), got {tuple(tokens.shape)}")
    batch, n_tokens, dim = tokens.shape
    return tokens.view(batch, n_tokens // n_freq, n_freq, dim)


def _normalise_layer(layer: int, num_layers: int) -> int:
    """Hidden-state index in 0..num_layers from a possibly negative one."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer index must be an int, got {layer!r}")
    if not -(num_layers + 1) <= layer <= num_layers:
        raise IndexError(f"layer {layer} out of range for {num_layers} layers "
                         f"(0..{num_layers} or -{num_layers + 1}..-1)")
    return layer % (num_layers + 1)


# --------------------------------------------------------------------------------------
# the model


class BEATs(nn.Module):
    """BEATs encoder with official parameter names; build with :func:`load_beats` or
    :func:`build_beats`.

    ``label_dict`` holds the fine-tuned checkpoints' class map (saved back unchanged).
    """

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        # registration order = official state-dict key order
        self.post_extract_proj = (nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
                                  if cfg.embed_dim != cfg.encoder_embed_dim else None)
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=cfg.input_patch_size,
                                         stride=cfg.input_patch_size, bias=cfg.conv_bias)
        self.dropout_input = cfg.dropout_input
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.predictor = (nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)
                          if cfg.finetuned_model else None)
        self.label_dict: Any = None

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.patch_embedding.weight.device

    @property
    def num_layers(self) -> int:
        """Number of transformer layers (hidden states are 0..num_layers)."""
        return self.cfg.encoder_layers

    # ---- input handling

    def _check_audio(self, wav: Any, padding_mask: Any, sample_rate: int) -> tuple[Tensor, Tensor | None]:
        """Validate and move inputs; wav (B, N) float in [-1, 1], padding_mask (B, N) bool."""
        if sample_rate != SAMPLE_RATE:
            raise EncoderInputError(f"BEATs needs {SAMPLE_RATE} Hz audio, got sample_rate={sample_rate}; "
                                    "resample first (asdlib.audio.load_clip does)")
        if not isinstance(wav, Tensor):
            wav = torch.as_tensor(wav)
        if wav.dim() != 2:
            raise EncoderInputError(f"wav must be (B, N) mono clips, got shape {tuple(wav.shape)}"
                                    + ("; use wav[None] for one clip" if wav.dim() == 1 else ""))
        if not wav.is_floating_point():
            raise EncoderInputError(f"wav must be float in [-1, 1], got dtype {wav.dtype}")
        if wav.shape[1] < MIN_SAMPLES:
            raise EncoderInputError(f"clips must have >= {MIN_SAMPLES} samples (one 16-frame patch), "
                                    f"got {wav.shape[1]}")
        wav = wav.to(device=self.device, dtype=torch.float32)
        low, high = torch.aminmax(wav.detach())
        peak = torch.maximum(-low, high)
        if not torch.isfinite(peak):
            raise EncoderInputError("wav contains NaN or inf")
        if peak > 2.0:
            raise EncoderInputError(f"wav must be float in [-1, 1] (got peak {float(peak):.4g}); "
                                    "int16-scaled audio must be divided by 32768")
        if padding_mask is not None:
            if not isinstance(padding_mask, Tensor):
                padding_mask = torch.as_tensor(padding_mask)
            if padding_mask.shape != wav.shape:
                raise EncoderInputError(f"padding_mask shape {tuple(padding_mask.shape)} != wav shape "
                                        f"{tuple(wav.shape)}")
            if padding_mask.dtype != torch.bool:
                raise EncoderInputError(f"padding_mask must be bool (True = padded), got {padding_mask.dtype}")
            padding_mask = padding_mask.to(self.device)
        return wav, padding_mask

    def preprocess(self, wav: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
        """wav (B, N) float in [-1, 1] -> normalised log-mel fbank (B, T, 128), float32.

        Kaldi fbank of ``wav * 2**15`` (128 mel bins, 25 ms / 10 ms frames, all else Kaldi
        defaults), then ``(x - 15.41663) / (2 * 6.55582)``, as the official model.
        """
        wav, _ = self._check_audio(wav, None, sample_rate)
        return compute_fbank(wav)

    def _embed_patches(self, fbank: Tensor) -> tuple[Tensor, Tensor]:
        """fbank (B, T, 128) -> (projected patch tokens (B, T'*8, D), the patch embedding
        before its LayerNorm (B, T'*8, E)), time-major."""
        patches = self.patch_embedding(fbank.unsqueeze(1)).flatten(2).transpose(1, 2)
        tokens = self.layer_norm(patches)  # (B, T'*8, E)
        if self.post_extract_proj is not None:
            tokens = self.post_extract_proj(tokens)
        return F.dropout(tokens, self.dropout_input, self.training), patches

    @staticmethod
    def _time_valid(padding_mask: Tensor, n_time: int) -> Tensor:
        """Exact validity (B, T') of time patches: all 16 frames wholly in unpadded samples."""
        batch, n_samples = padding_mask.shape
        padded_before = F.pad(padding_mask.to(torch.int32).cumsum(1), (1, 0))  # (B, N + 1)
        starts = torch.arange(n_time * PATCH_SIZE, device=padding_mask.device) * FRAME_SHIFT_SAMPLES
        frame_padded = (padded_before[:, starts + FRAME_LENGTH_SAMPLES] - padded_before[:, starts]) > 0
        return ~frame_padded.view(batch, n_time, PATCH_SIZE).any(-1)

    @staticmethod
    def _official_token_padding(padding_mask: Tensor, n_frames: int, n_tokens: int) -> Tensor:
        """The official mask: samples -> frames -> tokens by contiguous blocks and ``all``."""

        def blocks(mask: Tensor, size: int) -> Tensor:
            extra = mask.shape[1] % size
            if extra:
                mask = mask[:, :-extra]
            return mask.view(mask.shape[0], size, -1).all(-1)

        return blocks(blocks(padding_mask, n_frames), n_tokens)

    def _run(self, wav: Tensor, padding_mask: Tensor | None, layers: Iterable[int] | str | None,
             dtype: torch.dtype | None, official_mask: bool, embed: bool = False) -> EncoderOutput:
        """Shared forward for extract / extract_features (inputs already validated)."""
        num_layers = self.num_layers
        if isinstance(layers, str) and layers != "all":
            raise ValueError(f"layers must be ints, 'all' or None, got {layers!r}")
        if layers is None or layers == "all":
            keep = set(range(num_layers + 1))
        elif isinstance(layers, int):
            keep = {_normalise_layer(layers, num_layers)}
        else:
            keep = {_normalise_layer(layer, num_layers) for layer in layers}
            if not keep:
                raise ValueError("layers must name at least one hidden state")
        last_layer = max(keep)

        fbank = compute_fbank(wav)
        n_frames = fbank.shape[1]
        n_time = n_frames // PATCH_SIZE
        n_tokens = n_time * N_FREQ_PATCHES
        batch = wav.shape[0]
        if padding_mask is None:
            token_padding = None
            time_valid = torch.ones(batch, n_time, dtype=torch.bool, device=wav.device)
        else:
            time_valid = self._time_valid(padding_mask, n_time)
            if official_mask:
                token_padding = self._official_token_padding(padding_mask, n_frames, n_tokens)
            else:
                empty = ~time_valid.any(1)
                if bool(empty.any()):
                    raise EncoderInputError(
                        f"clip(s) {empty.nonzero().flatten().tolist()} have no unpadded 16-frame "
                        f"patch (need >= {MIN_SAMPLES} unpadded samples)")
                token_padding = (~time_valid).repeat_interleave(N_FREQ_PATCHES, dim=1)

        compute_dtype = torch.float32 if dtype is None else dtype
        if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        with torch.autocast(device_type=wav.device.type, dtype=compute_dtype,
                            enabled=compute_dtype != torch.float32):
            x, patches = self._embed_patches(fbank)
            hidden = self.encoder(x, token_padding, last_layer, keep)
            logits = None
            if self.predictor is not None and num_layers in hidden:
                final = F.dropout(hidden[num_layers], self.cfg.predictor_dropout, self.training)
                token_logits = self.predictor(final).float()  # (B, L, C)
                if token_padding is not None and bool(token_padding.any()):
                    valid = (~token_padding).unsqueeze(-1)
                    logits = (token_logits * valid).sum(1) / valid.sum(1)
                else:
                    logits = token_logits.mean(1)
        tokens = LayerTokens({i: h.float() for i, h in hidden.items()}, num_layers)
        return EncoderOutput(tokens=tokens, token_padding=token_padding, time_valid=time_valid,
                             logits=logits, probs=None if logits is None else torch.sigmoid(logits),
                             fbank=fbank, embed=patches.float() if embed else None)

    def extract(self, wav: Tensor, padding_mask: Tensor | None = None,
                layers: Sequence[int] | int | str | None = (-1,), *, sample_rate: int = SAMPLE_RATE,
                dtype: torch.dtype | None = None, embed: bool = False) -> EncoderOutput:
        """Encode clips and return the requested hidden states as tokens.

        wav: (B, N) float in [-1, 1] at 16 kHz (numpy accepted); clips of a batch share N.
        padding_mask: (B, N) bool, True = padded sample (e.g. mixed lengths zero-padded).
            Time patches that touch padded samples are masked as attention keys, zeroed
            before the positional convolution and reported in token_padding / time_valid, so
            each clip's valid tokens equal those of the clip encoded alone.
        layers: hidden-state indices (0 = input to layer 0, i = output of layer i, -1 =
            final, negatives count from the end), a single int, or "all" / None for all.
            Layers after the deepest one requested are not run.
        sample_rate: must be 16000 (raises EncoderInputError otherwise).
        dtype: None / float32, or bfloat16 (float16 on GPU) to run under autocast (fbank,
            LayerNorms and softmax statistics stay float32); tokens are returned as float32.
            bfloat16 vs float32, final tokens: rms deviation ~1 % of the rms value, max
            ~1 % (fixture model) to ~4 % (random base model) of the largest value.

        embed: also return the patch embedding before its LayerNorm (``out.embed``,
            ``out.embed_grid()``), where tokens keep their scale.

        Gradients flow (no no_grad inside); wrap in torch.inference_mode() for inference.
        Dropout, layerdrop and layer-wise gradient decay (cfg) act only in training mode.
        """
        wav, padding_mask = self._check_audio(wav, padding_mask, sample_rate)
        return self._run(wav, padding_mask, layers, dtype, official_mask=False, embed=embed)

    def extract_features(self, wav: Tensor, padding_mask: Tensor | None = None, *,
                         sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, Tensor | None]:
        """The official ``extract_features``: (final tokens (B, T'*8, D), token padding or None).

        Uses the official token mask (contiguous frame blocks, slightly different from
        :meth:`extract`'s exact one at the boundary patch). Unlike the official method it
        returns features for fine-tuned models too; their probabilities are in
        ``extract(...).probs``.
        """
        wav, padding_mask = self._check_audio(wav, padding_mask, sample_rate)
        out = self._run(wav, padding_mask, (-1,), None, official_mask=True)
        return out.tokens[-1], out.token_padding

    def forward(self, wav: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Final-layer tokens (B, T'*8, D); see :meth:`extract` for more."""
        return self.extract(wav, padding_mask).tokens[-1]

    # ---- initialisation

    def reset_parameters(self) -> None:
        """Random init (uses the global torch RNG): BERT-style normal(0.02) for linears and
        embeddings, DeepNorm-scaled Xavier for v/out/fc1/fc2, pos_conv as the official code."""
        cfg = self.cfg
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight)
        if self.patch_embedding.bias is not None:
            nn.init.zeros_(self.patch_embedding.bias)
        beta = (8.0 * cfg.encoder_layers) ** -0.25 if cfg.deep_norm else 1.0
        for layer in self.encoder.layers:
            attn = layer.self_attn
            nn.init.xavier_normal_(attn.q_proj.weight, gain=1.0)
            nn.init.xavier_normal_(attn.k_proj.weight, gain=1.0)
            for linear in (attn.v_proj, attn.out_proj, layer.fc1, layer.fc2):
                nn.init.xavier_normal_(linear.weight, gain=beta)
            if attn.gru_rel_pos:
                nn.init.ones_(attn.grep_a)
        conv = self.encoder.pos_conv[0]
        std = math.sqrt(4.0 / (cfg.conv_pos * cfg.encoder_embed_dim))
        with torch.no_grad():
            nn.init.normal_(conv.weight_v, std=std)
            conv.weight_g.copy_(torch.linalg.vector_norm(conv.weight_v, dim=(0, 1), keepdim=True))
            nn.init.zeros_(conv.bias)


# --------------------------------------------------------------------------------------
# construction, loading, saving


def _config_from(config: str | BEATsConfig | Mapping[str, Any], overrides: Mapping[str, Any]) -> BEATsConfig:
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ConfigError(f"unknown config name {config!r}; choose from {sorted(CONFIGS)}")
        base: Mapping[str, Any] = CONFIGS[config]
    elif isinstance(config, BEATsConfig):
        base = config.to_dict()
    else:
        base = config
    return BEATsConfig.from_dict({**base, **overrides})


def build_beats(config: str | BEATsConfig | Mapping[str, Any] = "small", seed: int = 0,
                device: str | torch.device = "cpu", **overrides: Any) -> BEATs:
    """A randomly initialised BEATs in eval mode, e.g. ``build_beats("small", seed=0)``.

    config: a name in CONFIGS ("tiny", "small", "base"), a BEATsConfig or a cfg dict;
    overrides change cfg fields (e.g. finetuned_model=True, predictor_class=10).
    The init is reproducible from ``seed`` and leaves the global RNG untouched.
    """
    cfg = _config_from(config, overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BEATs(cfg)
        model.reset_parameters()
    return model.to(device).eval()


def _load_checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load(weights_only=True) and check the {"cfg", "model"} layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for non-checkpoint files
        raise CheckpointError(f"{path} is not a readable torch checkpoint "
                              f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
                              ) from error
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a BEATs checkpoint: expected a dict with 'cfg' and "
                              f"'model', found {found}")
    state = checkpoint["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model' must be a state dict of tensors")
    return checkpoint


def load_beats(path: str | os.PathLike, device: str | torch.device = "cpu") -> BEATs:
    """Load an official BEATs checkpoint (or one written by save_beats) in eval mode.

    Every setting comes from the checkpoint's cfg (ConfigError when unsupported); the
    state dict must match the architecture key for key (CheckpointError otherwise). The
    relative-position table is stored under every layer's name; layer 0's is used.
    """
    checkpoint = _load_checkpoint_dict(path)
    try:
        cfg = BEATsConfig.from_dict(checkpoint["cfg"])
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    model = BEATs(cfg)
    state = dict(checkpoint["model"])
    shared_key = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    if cfg.relative_position_embedding and shared_key.format(0) in state:
        for index in range(1, cfg.encoder_layers):
            if shared_key.format(index) in state:
                state[shared_key.format(index)] = state[shared_key.format(0)]
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path}: state dict does not match its cfg: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: {error}") from error
    model.label_dict = checkpoint.get("label_dict")
    return model.to(device).eval()


def save_beats(model: BEATs, path: str | os.PathLike) -> Path:
    """Write ``{"cfg": dict, "model": state_dict}`` (+ "label_dict") in the official format.

    Same keys and cfg fields as the official checkpoints; tensors saved on CPU. Written to a
    temporary file beside ``path`` and moved into place, so a crash never leaves half a file.
    """
    path = Path(path)
    checkpoint: dict[str, Any] = {
        "cfg": model.cfg.to_dict(),
        "model": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }
    if model.label_dict is not None:
        checkpoint["label_dict"] = model.label_dict
    return atomic.torch_save(checkpoint, path)
