"""Content keys of a feature store: encoder and heads weights, settings, loader, code, and
the fingerprint of a part's clips (a changed input never reuses stored features)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from asdlib import atomic
from asdlib.audio import SAMPLE_RATE
from asdlib.features.config import FORMAT_VERSION, ExtractConfig


def _jsonable(obj: Any) -> Any:
    """A JSON-serialisable, deterministic view of configs (dataclasses, objects, dicts)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if callable(obj):  # functions, classes: by name (repr would hold a memory address)
        name = getattr(obj, "__qualname__", type(obj).__name__)
        return f"{getattr(obj, '__module__', '?')}.{name}"

    if hasattr(obj, "__dict__"):
        return _jsonable({k: v for k, v in vars(obj).items() if not k.startswith("_")})
    return repr(obj)


def _digest(obj: Any) -> str:
    """sha256 hex of the canonical JSON of ``obj``."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def module_hash(module) -> str:
    """Content hash of an nn.Module: class, ``cfg`` (if any), structure, every state tensor.

    Independent of device and of how the module was loaded, so the same weights always give
    the same store key.
    """
    import torch

    h = hashlib.sha256()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    h.update(_digest(getattr(module, "cfg", None)).encode())
    h.update(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()




def resolve_model(model) -> tuple[Any, dict]:
    """(module, provenance): a checkpoint path is loaded with ``asdlib.encoder.load_beats``."""
    info: dict = {}
    if isinstance(model, (str, os.PathLike)):
        from asdlib.encoder import load_beats

        info = {"checkpoint": str(Path(model).resolve()), "checkpoint_sha256": atomic.file_sha256(model)}
        model = load_beats(model, device="cpu")
    num_layers = getattr(model, "num_layers", getattr(getattr(model, "cfg", None),
                                                      "encoder_layers", None))
    info.update({"class": type(model).__qualname__, "hash": module_hash(model),
                 "cfg": _jsonable(getattr(model, "cfg", None)),
                 "num_layers": None if num_layers is None else int(num_layers)})
    return model, info


def resolve_heads(heads) -> tuple[Any, Any, dict]:
    """(asp, band, provenance) from None, an (asp, band) pair (either may be None) or a path
    read with `asdlib.adaptation.heads.load_heads`."""
    info: dict = {}
    if heads is None:
        asp = band = None
    elif isinstance(heads, (str, os.PathLike)):
        from asdlib.adaptation.heads import load_heads

        info = {"checkpoint": str(Path(heads).resolve()), "checkpoint_sha256": atomic.file_sha256(heads)}
        asp, band = load_heads(heads)
    else:
        asp, band = heads
    info["asp"] = None if asp is None else {"class": type(asp).__qualname__,
                                            "hash": module_hash(asp)}
    info["band"] = None if band is None else {"class": type(band).__qualname__,
                                              "hash": module_hash(band)}
    return asp, band, info


def _loader_name(loader: Callable | None) -> str:
    if loader is None:
        return "asdlib.audio.load_clip"
    return f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', repr(loader))}"


def key_params(model_info: dict, heads_info: dict, cfg: ExtractConfig,
                loader: Callable | None) -> dict:
    """Everything that determines stored values, with the short key derived from it."""
    from asdlib.fingerprint import module_code_hash

    value = {
        "format_version": FORMAT_VERSION,
        "code": module_code_hash("asdlib.features"),
        "encoder": {"class": model_info["class"], "hash": model_info["hash"]},
        "heads": {"asp": heads_info["asp"], "band": heads_info["band"]},
        "extract": cfg.value_params(),
        "loader": _loader_name(loader),
        "sample_rate": SAMPLE_RATE,
    }
    return {"key": _digest(value)[:16], **value}


def store_key(model, heads=None, cfg: ExtractConfig | None = None,
              loader: Callable | None = None) -> str:
    """The store folder name for these parameters (16 hex digits)."""
    cfg = cfg or ExtractConfig()
    _, model_info = resolve_model(model)
    _, _, heads_info = resolve_heads(heads)
    return key_params(model_info, heads_info, cfg, loader)["key"]


def dataset_fingerprint(rows) -> str:
    """Hash of a part's clips, in row order: names and content hashes (the clip table's
    ``sha256`` column, written by step 00), else names, file sizes and mtimes.

    Any added, removed, renamed, reordered or rewritten clip changes it.
    """
    h = hashlib.sha256()
    if "sha256" in rows:
        for name, digest in zip(rows["name"], rows["sha256"]):
            h.update(f"{name}|{digest}\n".encode())
        return h.hexdigest()
    for name, path in zip(rows["name"], rows["path"]):
        st = os.stat(path)
        h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
