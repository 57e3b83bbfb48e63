"""The BEATs transformer by building block: the weight-normed positional convolution
(`WeightNormConv1d`, float32 on the CPU), self-attention with the gated relative-position
bias (`MultiheadSelfAttention`), the post-LN (DeepNorm) `EncoderLayer` and the stack with
its positional embedding (`TransformerEncoder`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asdlib.encoder.config import BEATsConfig

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
