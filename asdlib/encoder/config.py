"""BEATs settings: `BEATsConfig` (the official cfg, field for field, validated), the named
`CONFIGS` for `asdlib.encoder.build_beats`, and the errors of checkpoints and their cfgs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from asdlib.encoder.preprocessing import N_FREQ_PATCHES, PATCH_SIZE

# --------------------------------------------------------------------------------------
# errors


class CheckpointError(ValueError):
    """A file or dict is not a usable BEATs checkpoint (unreadable, wrong layout, keys)."""


class ConfigError(CheckpointError):
    """A BEATs cfg has an unknown field or a value this implementation does not support.

    A subclass of :class:`CheckpointError` because a cfg normally comes from a checkpoint.
    """


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
