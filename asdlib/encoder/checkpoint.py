"""Construction, loading and saving: `build_beats` (random init from a named config),
`load_beats` (official checkpoints: checked layout, cfg and strict keys) and `save_beats`
(the official format, written atomically).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from asdlib import atomic
from asdlib.encoder.config import CONFIGS, BEATsConfig, CheckpointError, ConfigError
from asdlib.encoder.model import BEATs

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
