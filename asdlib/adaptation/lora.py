"""Adaptation modes of the encoder: which parameters train, and LoRA.

Modes (`set_trainable`): ``full`` (everything trains), ``last_n`` (the last N transformer
layers), ``lora`` (low-rank updates of the q/k/v/out attention projections, Hu et al.,
ICLR 2022, https://arxiv.org/abs/2106.09685; merged into the weights by `merge_lora` before
saving, so the result is a plain BEATs checkpoint), ``frozen`` (heads only).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
MODES = ("full", "last_n", "lora", "frozen")


class LoRADelta(nn.Module):
    """Parametrization W -> W + (alpha / r) * B @ A of a Linear weight (out, in).

    A (r, in) starts random, B (out, r) at zero: the model is unchanged at init.
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float):
        super().__init__()
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.lora_B @ self.lora_A).to(weight.dtype) * self.scaling


def _attention_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    for name, module in model.named_modules():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "self_attn" and parts[-1] in ATTENTION_PROJECTIONS \
                and isinstance(module, nn.Linear):
            yield name, module


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0) -> list[str]:
    """Freeze the model and add LoRA to every attention q/k/v/out projection -> their names.

    Uses `torch.nn.utils.parametrize`, so code that reads ``proj.weight`` directly still
    sees the adapted weight; initialisation draws from the global torch RNG.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for name, linear in _attention_linears(model):
        if parametrize.is_parametrized(linear, "weight"):
            raise ValueError(f"{name} already has a parametrization")
        delta = LoRADelta(linear.out_features, linear.in_features, rank, alpha)
        delta.to(device=linear.weight.device)
        parametrize.register_parametrization(linear, "weight", delta)
        linear.parametrizations.weight.original.requires_grad_(False)
        names.append(name)
    if not names:
        raise ValueError("no self_attn.{q,k,v,out}_proj Linear layers found for LoRA")
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its Linear weight (in place) -> model with the official keys."""
    for _, linear in _attention_linears(model):
        if parametrize.is_parametrized(linear, "weight"):
            parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
            if "bias" in linear._parameters:  # back to the official key order: weight, bias
                linear._parameters["bias"] = linear._parameters.pop("bias")
    return model


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError("model has no encoder.layers ModuleList")
    return layers


def _in_layers(name: str, start: int, stop: int) -> bool:
    parts = name.split(".")
    return len(parts) > 2 and parts[:2] == ["encoder", "layers"] and parts[2].isdigit() \
        and start <= int(parts[2]) < stop


def set_trainable(model: nn.Module, mode: str, last_n: int = 2, lora_rank: int = 8,
                  lora_alpha: float = 16.0) -> list[str]:
    """Apply an adaptation mode to the encoder -> names of its trainable parameters.

    full: all; last_n: the last ``last_n`` of ``encoder.layers`` (minus parameters they
    share with earlier layers); lora: LoRA matrices only (`add_lora`); frozen: none.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    if mode == "last_n":
        layers = _encoder_layers(model)
        if not 1 <= last_n <= len(layers):
            raise ValueError(f"last_n must be in 1..{len(layers)}, got {last_n}")
        top = layers[len(layers) - last_n:]
        top_ids = {id(p) for layer in top for p in layer.parameters()}
        # a parameter shared with a frozen part (BEATs' relative position table lives in
        # layer 0 and is referenced by every layer) stays frozen: training it would change
        # the frozen layers too
        shared = {id(p) for n, p in model.named_parameters(remove_duplicate=False)
                  if id(p) in top_ids and not _in_layers(n, len(layers) - last_n, len(layers))}
        for p in model.parameters():
            p.requires_grad_(id(p) in top_ids and id(p) not in shared)
    elif mode == "lora":
        add_lora(model, lora_rank, lora_alpha)
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(("lora_A", "lora_B")))
    return [n for n, p in model.named_parameters() if p.requires_grad]
