"""The BEATs model (`BEATs`: input checks, fbank, patch embedding, transformer, predictor)
and what it returns (`EncoderOutput` with its `LayerTokens`; `tokens_to_grid`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asdlib.audio import SAMPLE_RATE
from asdlib.encoder.config import BEATsConfig
from asdlib.encoder.layers import TransformerEncoder
from asdlib.encoder.preprocessing import (
    FRAME_LENGTH_SAMPLES,
    FRAME_SHIFT_SAMPLES,
    MIN_SAMPLES,
    N_FREQ_PATCHES,
    PATCH_SIZE,
    compute_fbank,
)

# --------------------------------------------------------------------------------------
# errors


class EncoderInputError(ValueError):
    """Audio given to the encoder has the wrong shape, dtype, range or sample rate."""


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

    def patch_embedding_grid(self, fbank: Tensor, hop: int = PATCH_SIZE) -> Tensor:
        """fbank (B, T, 128) -> the patch embedding before its LayerNorm as (B, T_e, 8, E),
        one token every ``hop`` frames (each still 16 frames x 16 mel bins).

        ``hop`` = 16 is the encoder's own patch grid (``EncoderOutput.embed_grid``); a
        smaller hop overlaps the patches, so that an event near a patch boundary lies
        wholly inside some token. T_e = (T - 16) // hop + 1 (`asdlib.features.token_count`
        gives the valid count per clip)."""
        if not 1 <= int(hop) <= PATCH_SIZE:
            raise ValueError(f"hop must be 1..{PATCH_SIZE} frames, got {hop}")
        conv = self.patch_embedding
        out = F.conv2d(fbank.unsqueeze(1).to(conv.weight.dtype), conv.weight, conv.bias,
                       stride=(int(hop), PATCH_SIZE))
        return out.permute(0, 2, 3, 1)  # (B, E, T_e, 8) -> (B, T_e, 8, E)

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
