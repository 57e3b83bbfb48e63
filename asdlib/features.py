"""Frozen-encoder feature extraction and the on-disk feature store.

`ClipFeatures` is the input of every scoring branch (see docs/ARCHITECTURE.md).
`extract_features` runs the frozen encoder (and the optional adapted heads) once over a clip
table and writes a `FeatureStore`; every later step reads the store memory-mapped.

Store layout (one folder per parameter set, so a changed parameter never reuses stale
features)::

    <store_root>/<key>/params.json                 resolved parameters, written once
    <store_root>/<key>/<machine>/<split>/<channel>/  one part
        tokens_L<l>.npy   (N, T'max, 8, D) float16, zero past n_time   one per layer l
        utt_L<l>.npy      (N, D) mean over the valid tokens of layer l
        n_time.npy        (N,) int32 valid time patches
        asp.npy           (N, E)     with an ASP head only
        band_att.npy      (N, 8, D)  with a band-attentive head only
        index.csv         the clip-table rows, row i = clip i
        part.json         part facts: dataset fingerprint, shapes, timing
        DONE              written last; holds the dataset fingerprint

``key`` hashes the encoder weights and config, the heads' weights, the value-affecting
`ExtractConfig` fields, the audio loader, `FORMAT_VERSION` and the source of the code the
extraction can run (`asdlib.fingerprint.module_code_hash` of this module: the encoder, the
heads, the audio loader), so an edit to that code never reuses old features. A part is built in a hidden
temporary folder and renamed into place after its ``DONE`` marker is written, so an
interrupted extraction leaves no readable half-part and a re-run skips finished parts.
A part whose clips changed (names, file sizes, mtimes) is recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from asdlib import atomic
from asdlib.audio import CHANNELS, SAMPLE_RATE, padded_tensors

#: The patch embedding before its LayerNorm, stored beside the hidden states under this
#: layer name (``BEATs.extract(embed=True)``): tokens that keep their scale.
EMBED = "embed"
from asdlib.devices import resolve_device
from asdlib.progress import bar as progress_bar

#: Bump when a code change alters stored values or the layout: old stores get a new key.
FORMAT_VERSION = 1
STORAGE_DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")
_DONE = "DONE"
_INDEX = "index.csv"
_PART_JSON = "part.json"
_PARAMS = "params.json"


@dataclass
class ClipFeatures:
    """Encoder outputs for a set of clips of one machine (row i = clip i).

    tokens: (N, T', 8, D) token grid, zero past ``n_time``.
    n_time: (N,) number of valid time patches per clip.
    utt: (N, D) mean over the valid tokens.
    asp: (N, E) attentive-statistics-pooling embedding, or None.
    band_att: (N, 8, D) band-attentive pooled vectors, or None.
    domain: (N,) "source" / "target" (None entries for unlabeled eval clips).
    names: (N,) wav file names, to join scores back to clips.
    """

    tokens: np.ndarray
    n_time: np.ndarray
    utt: np.ndarray
    asp: np.ndarray | None
    band_att: np.ndarray | None
    domain: np.ndarray
    names: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if self.tokens.ndim != 4 or self.tokens.shape[2] != 8:
            raise ValueError(f"tokens must be (N, T', 8, D), got {self.tokens.shape}")
        for field in ("n_time", "utt", "domain", "names"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"{field} has {len(getattr(self, field))} rows, tokens has {n}")
        for field in ("asp", "band_att"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ValueError(f"{field} has {len(value)} rows, tokens has {n}")

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, rows: np.ndarray) -> "ClipFeatures":
        """The clips at ``rows`` (index array or boolean mask)."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return ClipFeatures(
            tokens=self.tokens[rows], n_time=self.n_time[rows], utt=self.utt[rows],
            asp=pick(self.asp), band_att=pick(self.band_att),
            domain=self.domain[rows], names=self.names[rows],
        )

    def valid_time(self) -> np.ndarray:
        """(N, T') bool: True for the valid time patches of each clip."""
        t = self.tokens.shape[1]
        return np.arange(t)[None, :] < self.n_time[:, None]


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction.

    layers: encoder layers whose token grids are stored (-1 = final; the encoder's indexing;
        `EMBED` = the patch embedding before its LayerNorm).
    channel: "near", "far", or "both" (near and far stored as separate parts).
    head_layer: layer whose grid feeds the ASP and band-attentive heads (not stored unless
        also in ``layers``).
    batch_size: clips per encoder call; clips of similar length are batched together.
    max_batch_seconds: padded audio per encoder call (clips x longest) at most; a batch
        that would hold more is cut (`length_batches`), so one long clip cannot exhaust
        memory by padding a whole batch to its length.
    device: "auto" (CUDA when present), "cpu", "cuda[:i]".
    dtype: storage dtype of the arrays ("float16" halves the store; "float32").
    precision: encoder compute dtype ("float32"; "bfloat16"/"float16" under autocast, passed
        as ``extract(dtype=)`` when the encoder takes it); heads and means run in float32.
    num_threads: torch CPU threads during extraction; 0 leaves torch's setting.

    Only ``VALUE_FIELDS`` enter the store key: batch size, device and threads do not change
    the values beyond floating-point noise.
    """

    layers: tuple[int | str, ...] = (-1,)
    channel: str = "near"
    head_layer: int = -1
    batch_size: int = 8
    max_batch_seconds: float = 120.0
    device: str = "auto"
    dtype: str = "float16"
    precision: str = "float32"
    num_threads: int = 0

    VALUE_FIELDS: ClassVar[tuple[str, ...]] = ("layers", "channel", "head_layer", "dtype",
                                               "precision")

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)
        if not layers or len(set(layers)) != len(layers):
            raise ValueError(f"layers must be non-empty and distinct, got {self.layers!r}")
        if any(isinstance(layer, str) and layer != EMBED for layer in layers):
            raise ValueError(f"layers are hidden-state indices or {EMBED!r}, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(layer if layer == EMBED else int(layer)
                                                 for layer in layers))
        object.__setattr__(self, "head_layer", int(self.head_layer))
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {self.channel!r}")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {self.dtype!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.num_threads) < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels stored as parts: ("near", "far") for "both"."""
        return ("near", "far") if self.channel == "both" else (self.channel,)

    def value_params(self) -> dict:
        """The fields that change stored values (they enter the store key)."""
        return {name: (list(v) if isinstance(v := getattr(self, name), tuple) else v)
                for name in self.VALUE_FIELDS}


@dataclass
class ExtractStats:
    """Cost of an extraction, for the notebook to report.

    n_clips / seconds / clips_per_s cover the parts encoded (not those reused);
    size_bytes is the whole store on disk.
    """

    n_clips: int
    n_parts_computed: int
    n_parts_reused: int
    seconds: float
    clips_per_s: float
    size_bytes: int


# --------------------------------------------------------------------------- hashing

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




def _resolve_model(model) -> tuple[Any, dict]:
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


def _resolve_heads(heads) -> tuple[Any, Any, dict]:
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


def _key_params(model_info: dict, heads_info: dict, cfg: ExtractConfig,
                loader: Callable | None) -> dict:
    """Everything that determines stored values, with the short key derived from it."""
    from asdlib.fingerprint import module_code_hash

    value = {
        "format_version": FORMAT_VERSION,
        "code": module_code_hash(__name__),
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
    _, model_info = _resolve_model(model)
    _, _, heads_info = _resolve_heads(heads)
    return _key_params(model_info, heads_info, cfg, loader)["key"]


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


# --------------------------------------------------------------------------- small file helpers



def _write_index(path: Path, rows) -> None:
    atomic.write_text(path, rows.to_csv(index=False), fsync=True)


def _read_index(path: Path):
    """The stored clip-table rows, typed as `asdlib.data` types them: text stays text
    (section "00", attributes ""), domain/label are object columns with None, index is int."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ("domain", "label"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col] != "", None)
    if "index" in df:
        df["index"] = df["index"].astype(int)
    return df


def _part_done(part: Path, fingerprint: str | None = None) -> bool:
    """True when ``part`` is complete (and, if given, built from the same clips)."""
    done = part / _DONE
    if not done.is_file():
        return False
    return fingerprint is None or done.read_text().strip() == fingerprint


def _safe_name(value: str, what: str) -> str:
    value = str(value)
    if not value or value.startswith(".") or "/" in value or os.sep in value:
        raise ValueError(f"{what} {value!r} cannot name a store folder")
    return value


# --------------------------------------------------------------------------- extraction

def length_batches(order, seconds, batch_size: int, max_seconds: float | None = None
                   ) -> list[np.ndarray]:
    """Cut ``order`` (positions, in encoding order) into batches of at most ``batch_size``
    clips whose padded audio (clips x longest, from ``seconds`` (N,) per position) stays
    within ``max_seconds``; a clip longer than that is a batch of its own. The memory of an
    encoder call follows the padded audio, not the clip count."""
    order = np.asarray(order)
    seconds = np.asarray(seconds, dtype=np.float64)
    batches, current, longest = [], [], 0.0
    for pos in order:
        length = max(longest, seconds[pos])
        if current and (len(current) == batch_size
                        or (max_seconds is not None and (len(current) + 1) * length > max_seconds)):
            batches.append(np.asarray(current))
            current, length = [], seconds[pos]
        current.append(pos)
        longest = length
    if current:
        batches.append(np.asarray(current))
    return batches


def _durations(paths) -> np.ndarray:
    """Clip durations in seconds from the wav headers (for length-sorted batching)."""
    import soundfile as sf

    return np.array([sf.info(str(p)).duration for p in paths], dtype=np.float64)


def encode_batches(model, paths, batches, *, channel: str = "near",
                   loader: Callable | None = None, layers: tuple[int, ...] = (-1,),
                   precision: str = "float32", device="cpu"):
    """Encode clips batch by batch with a frozen encoder (no gradients).

    The loop shared by the feature store and `asdlib.scoring.utterance_embeddings`.
    paths: the clip files; batches: positions in ``paths``, one array per encoder call, in
    encoding order (`length_batches` bounds their padded audio). Clips are read with ``loader(path, channel=,
    sample_rate=16000)`` (default ``asdlib.audio.load_clip``) and zero-padded to the longest
    of their batch; the padding mask goes to ``model.extract`` only when a clip is padded.
    precision: encoder compute dtype ("float32"; "bfloat16"/"float16" are passed as
    ``extract(dtype=)`` when the encoder takes it, else run under autocast).
    Yields ``(rows, grids, valid)`` per batch: rows (B,) the batch's positions in
    ``paths``, sorted; grids {layer: (B, T', 8, D) float32 tensor} for ``layers``;
    valid (B, T') bool tensor, True for the valid time patches (all True when the encoder
    reports none), on the grids' device.
    """
    import torch

    if loader is None:
        from asdlib.audio import load_clip as loader
    device = torch.device(device)
    kwargs, autocast = {}, contextlib.nullcontext()
    if precision != "float32":
        compute = getattr(torch, precision)
        if "dtype" in inspect.signature(model.extract).parameters:
            kwargs["dtype"] = compute  # asdlib BEATs: its own autocast (fbank stays float32)
        else:
            autocast = torch.autocast(device_type=device.type, dtype=compute)
    for batch in batches:
        rows = np.sort(np.asarray(batch))
        waves = [np.asarray(loader(paths[i], channel=channel, sample_rate=SAMPLE_RATE)[0])
                 for i in rows]
        wav, mask = padded_tensors(waves)
        wav = wav.to(device)
        mask = mask.to(device) if bool(mask.any()) else None
        with torch.no_grad():
            with autocast:
                hidden = tuple(layer for layer in layers if layer != EMBED) or (0,)
                extra = {"embed": True} if EMBED in layers else {}
                out = model.extract(wav, padding_mask=mask, layers=hidden, **kwargs, **extra)
            grids = {layer: (out.embed_grid() if layer == EMBED else out.grid(layer)).float()
                     for layer in layers}  # heads run in float32
        first = grids[layers[0]]
        valid = getattr(out, "time_valid", None)
        if valid is None:
            valid = torch.ones(first.shape[:2], dtype=torch.bool, device=first.device)
        yield rows, grids, valid.to(first.device)


def masked_grid_mean(grid, valid):
    """``(grid zeroed past the valid time patches, (B, D) mean over the valid tokens)``.

    grid: (B, T', F, D) token grid; valid: (B, T') bool. The mean runs over the valid time
    patches of every band (a clip without any counts as one patch: its mean is zero); it is
    also the vector adaptation trains (`asdlib.adaptation.losses.mean_tokens`).
    """
    masked = grid * valid[:, :, None, None].to(grid.dtype)
    n_time = valid.sum(1)
    return masked, masked.sum((1, 2)) / (grid.shape[2] * n_time.clamp(min=1))[:, None]


def _batch_arrays(grids: dict, valid, asp, band, cfg: ExtractConfig) -> dict:
    """What the store keeps of one encoded batch (see `encode_batches`).

    Returns numpy arrays: "grid" {layer: (B, T', 8, D) in the storage dtype, zero past
    n_time}, float32 "utt" {layer: (B, D)}, "asp" (B, E) or None, "band" (B, 8, D) or None,
    and int32 "n_time" (B,).
    """
    import torch

    store_dtype = getattr(torch, cfg.dtype)
    res: dict = {"grid": {}, "utt": {}}
    with torch.no_grad():
        for layer in cfg.layers:
            g, utt = masked_grid_mean(grids[layer], valid)
            res["utt"][layer] = utt.cpu().numpy()
            g = g.to(store_dtype)
            if not bool(torch.isfinite(g).all()):
                raise FloatingPointError(
                    f"layer {layer} has values outside {cfg.dtype} range; use dtype='float32'")
            res["grid"][layer] = g.cpu().numpy()
        head_in = grids.get(cfg.head_layer)
        res["asp"] = None if asp is None else asp(head_in, valid).float().cpu().numpy()
        res["band"] = None if band is None else band(head_in, valid).float().cpu().numpy()
    res["n_time"] = valid.sum(1).cpu().numpy().astype(np.int32)
    return res


def _build_part(part: Path, rows, channel: str, model, asp, band, cfg: ExtractConfig,
                loader: Callable, device, fingerprint: str, bar) -> dict:
    """Encode the clips of ``rows`` into ``part`` (atomically); returns the part facts."""
    import torch

    leftovers = [*part.parent.glob(f".{part.name}.tmp-*"), *part.parent.glob(f".{part.name}.old-*")]
    for stale in leftovers:
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run
    tmp = part.parent / f".{part.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    n = len(rows)
    paths = list(rows["path"])
    seconds = _durations(paths)
    order = np.argsort(-seconds, kind="stable")  # longest first: T'max known early
    has_heads = asp is not None or band is not None
    needed = tuple(dict.fromkeys(cfg.layers + ((cfg.head_layer,) if has_heads else ())))
    store = np.dtype(cfg.dtype)
    tokens: dict = {}
    utt: dict = {}
    small: dict = {"n_time": np.zeros(n, np.int32)}
    t0 = time.perf_counter()
    batches = encode_batches(model, paths, length_batches(order, seconds, cfg.batch_size,
                                                          cfg.max_batch_seconds),
                             channel=channel,
                             loader=loader, layers=needed, precision=cfg.precision,
                             device=device)
    for rows_b, grids, valid in batches:
        res = _batch_arrays(grids, valid, asp, band, cfg)
        if not tokens:  # first (longest) batch fixes T'max and the dims
            for layer in cfg.layers:
                t_max, _, d = res["grid"][layer].shape[1:]
                tokens[layer] = np.lib.format.open_memmap(
                    tmp / f"tokens_L{layer}.npy", mode="w+", dtype=store, shape=(n, t_max, 8, d))
                utt[layer] = np.zeros((n, d), np.float32)
            if res["asp"] is not None:
                small["asp"] = np.zeros((n,) + res["asp"].shape[1:], np.float32)
            if res["band"] is not None:
                small["band_att"] = np.zeros((n,) + res["band"].shape[1:], np.float32)
        for layer in cfg.layers:
            g = res["grid"][layer]
            if g.shape[1] > tokens[layer].shape[1]:
                raise RuntimeError(f"clip batch has {g.shape[1]} time patches, more than the "
                                   f"longest clip's {tokens[layer].shape[1]}")
            tokens[layer][rows_b, : g.shape[1]] = g
            utt[layer][rows_b] = res["utt"][layer]
        small["n_time"][rows_b] = res["n_time"]
        if "asp" in small:
            small["asp"][rows_b] = res["asp"]
        if "band_att" in small:
            small["band_att"][rows_b] = res["band"]
        bar.update(len(rows_b))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    for layer, mm in tokens.items():
        mm.flush()
        np.save(tmp / f"utt_L{layer}.npy", utt[layer].astype(store))
    del tokens
    np.save(tmp / "n_time.npy", small["n_time"])
    for name in ("asp", "band_att"):
        if name in small:
            np.save(tmp / f"{name}.npy", small[name].astype(store))
    _write_index(tmp / _INDEX, rows)
    facts = {
        "machine": str(rows["machine"].iloc[0]), "split": str(rows["split"].iloc[0]),
        "channel": channel, "n_clips": n, "n_time_max": int(small["n_time"].max(initial=0)),
        "layers": list(cfg.layers), "fingerprint": fingerprint,
        "seconds": round(seconds, 3), "clips_per_s": round(n / max(seconds, 1e-9), 3),
        "batch_size": cfg.batch_size, "device": str(device), "num_threads": torch.get_num_threads(),
        "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic.write_text(tmp / _PART_JSON, json.dumps(facts, indent=2), fsync=True)
    for f in tmp.iterdir():  # arrays on disk before the marker says so
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    atomic.write_text(tmp / _DONE, fingerprint, fsync=True)  # the part is complete from here on
    if part.exists():  # a stale or half-written part: move it away, then swap in the new one
        old = part.parent / f".{part.name}.old-{os.getpid()}"
        os.replace(part, old)
        os.replace(tmp, part)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, part)
    return facts


def extract_features(table, model, heads, cfg: ExtractConfig | None,
                     store_root: str | os.PathLike, progress: bool = True,
                     loader: Callable | None = None) -> "FeatureStore":
    """Encode every clip of ``table`` with the frozen encoder into a `FeatureStore`.

    table: clip table (columns path, name, machine, split, ... ; see asdlib.data); one part
        per (machine, split, channel), rows in table order.
    model: BEATs module (``extract`` API) or an official checkpoint path.
    heads: None, ``(asp, band)`` (either may be None) or a heads checkpoint path.
    cfg: `ExtractConfig` (None = defaults). store_root: parent folder; the store is
        ``store_root/<key>``.
    loader: ``loader(path, channel=, sample_rate=) -> (wave (N,), sr)``; default
        ``asdlib.audio.load_clip``.
    Finished parts with the same clips are reused; the rest are (re)computed. Model and heads
    are put in eval mode and moved to ``cfg.device`` for the duration, then restored to
    their train/eval state (they stay on the device). The returned store's ``run_stats``
    holds this run's `ExtractStats`.
    """
    import torch

    cfg = cfg or ExtractConfig()
    if loader is None:
        from asdlib.audio import load_clip as loader_fn
    else:
        loader_fn = loader
    missing = {"path", "name", "machine", "split"} - set(table.columns)
    if missing:
        raise ValueError(f"clip table lacks columns {sorted(missing)}")
    model, model_info = _resolve_model(model)
    asp, band, heads_info = _resolve_heads(heads)
    params = _key_params(model_info, heads_info, cfg, loader)
    root = Path(store_root) / params["key"]
    root.mkdir(parents=True, exist_ok=True)
    params_path = root / _PARAMS
    if not params_path.is_file():
        full = {**params, "encoder": model_info, "heads": heads_info,
                "channels": list(cfg.channels), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic.write_text(params_path, json.dumps(full, indent=2, sort_keys=True), fsync=True)

    plan, reused = [], 0
    table = table.reset_index(drop=True)
    for (machine, split), rows in table.groupby(["machine", "split"], sort=True):
        rows = rows.reset_index(drop=True)
        fingerprint = dataset_fingerprint(rows)
        for channel in cfg.channels:
            part = root / _safe_name(machine, "machine") / _safe_name(split, "split") / channel
            if _part_done(part, fingerprint):
                reused += 1
                if (part / _INDEX).read_text() != rows.to_csv(index=False):
                    _write_index(part / _INDEX, rows)  # labels/metadata updated, audio same
            else:
                plan.append((part, rows, channel, fingerprint))

    facts = []
    if plan:
        device = resolve_device(cfg.device)
        modules = [m for m in (model, asp, band) if m is not None]
        was_training = [m.training for m in modules]
        threads = torch.get_num_threads()
        try:
            if cfg.num_threads:
                torch.set_num_threads(cfg.num_threads)
            for m in modules:
                m.to(device).eval()
            bar = progress_bar(sum(len(p[1]) for p in plan), "extraction", "clips", progress)
            try:
                for part, rows, channel, fingerprint in plan:
                    bar.set_postfix_str(f"{part.parent.parent.name}/{part.parent.name}/{channel}")
                    facts.append(_build_part(part, rows, channel, model, asp, band, cfg,
                                             loader_fn, device, fingerprint, bar))
            finally:
                bar.close()
        finally:
            torch.set_num_threads(threads)
            for m, flag in zip(modules, was_training):
                m.train(flag)

    store = FeatureStore(root)
    n_clips = sum(f["n_clips"] for f in facts)
    seconds = sum(f["seconds"] for f in facts)
    store.run_stats = ExtractStats(
        n_clips=n_clips, n_parts_computed=len(facts), n_parts_reused=reused,
        seconds=round(seconds, 3), clips_per_s=round(n_clips / seconds, 3) if seconds else 0.0,
        size_bytes=store.size_bytes())
    return store


# --------------------------------------------------------------------------- reading

class FeatureStore:
    """Read access to one extraction (``store_root/<key>``); arrays are memory-mapped.

    params: the resolved parameters (params.json). run_stats: `ExtractStats` of the
    extraction that returned this object, None when opened for reading.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        params_path = self.path / _PARAMS
        if not params_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a feature store (no {_PARAMS})")
        self.params: dict = json.loads(params_path.read_text())
        self.run_stats: ExtractStats | None = None

    @classmethod
    def open(cls, store_root: str | os.PathLike, model, heads=None,
             cfg: ExtractConfig | None = None, loader: Callable | None = None) -> "FeatureStore":
        """The store extracted with exactly these parameters (FileNotFoundError if none)."""
        return cls(Path(store_root) / store_key(model, heads, cfg, loader))

    @property
    def key(self) -> str:
        return self.params["key"]

    @property
    def layers(self) -> list[int | str]:
        return list(self.params["extract"]["layers"])

    def _stored_layer(self, layer: int | str) -> int | str:
        """The stored layer that ``layer`` names; -1 and L (an L-layer encoder's last hidden
        state, BEATs indexing 0..L) are the same layer; "embed" is itself."""
        if layer == EMBED:
            if EMBED in self.layers:
                return EMBED
            raise KeyError(f"layer {EMBED!r} not stored; stored layers: {self.layers}")
        layer = int(layer)
        if layer in self.layers:
            return layer
        n = self.params.get("encoder", {}).get("num_layers")
        if n is not None and -(n + 1) <= layer <= n:
            for stored in self.layers:
                if stored != EMBED and -(n + 1) <= stored <= n \
                        and stored % (n + 1) == layer % (n + 1):
                    return stored
        raise KeyError(f"layer {layer} not stored; stored layers: {self.layers}")

    def _part_facts(self) -> list[dict]:
        facts = []
        for done in sorted(self.path.glob(f"*/*/*/{_DONE}")):
            part = done.parent
            if any(p.startswith(".") for p in part.relative_to(self.path).parts):
                continue  # temporary folders
            facts.append({**json.loads((part / _PART_JSON).read_text()), "path": str(part)})
        return facts

    def parts(self):
        """DataFrame of the finished parts: machine, split, channel, n_clips, n_time_max,
        seconds, clips_per_s, path."""
        import pandas as pd

        cols = ["machine", "split", "channel", "n_clips", "n_time_max", "seconds",
                "clips_per_s", "path"]
        return pd.DataFrame([{c: f[c] for c in cols} for f in self._part_facts()], columns=cols)

    def has_part(self, machine: str, split: str, channel: str = "near") -> bool:
        return _part_done(self.path / machine / split / channel)

    def _part(self, machine: str, split: str, channel: str) -> Path:
        part = self.path / machine / split / channel
        if not _part_done(part):
            have = [f"{f['machine']}/{f['split']}/{f['channel']}" for f in self._part_facts()]
            raise KeyError(f"no finished part {machine}/{split}/{channel} in {self.path}; "
                           f"parts: {have}")
        return part

    def load(self, machine: str, split: str, layer: int = -1,
             channel: str = "near") -> ClipFeatures:
        """`ClipFeatures` of one part; tokens (N, T'max, 8, D), utt, asp, band_att are
        read-only np.memmap. asp/band_att come from ``head_layer`` whatever ``layer``.
        KeyError names what is stored when the part or layer is missing."""
        import pandas as pd

        part = self._part(machine, split, channel)
        layer = self._stored_layer(layer)
        index = _read_index(part / _INDEX)
        opt = lambda name: (np.load(part / f"{name}.npy", mmap_mode="r")  # noqa: E731
                            if (part / f"{name}.npy").is_file() else None)
        return ClipFeatures(
            tokens=np.load(part / f"tokens_L{layer}.npy", mmap_mode="r"),
            n_time=np.load(part / "n_time.npy"),
            utt=np.load(part / f"utt_L{layer}.npy", mmap_mode="r"),
            asp=opt("asp"), band_att=opt("band_att"),
            domain=np.array([None if pd.isna(v) else v for v in index["domain"]]
                            if "domain" in index else [None] * len(index), dtype=object),
            names=np.array(index["name"].tolist(), dtype=object),
        )

    def index(self, machine: str, split: str, channel: str = "near"):
        """The clip-table rows of one part (row i = clip i of `load`)."""
        return _read_index(self._part(machine, split, channel) / _INDEX)

    def size_bytes(self) -> int:
        """Bytes on disk of every file in the store."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def stats(self) -> ExtractStats:
        """Aggregate cost of all finished parts (as recorded when each was built)."""
        facts = self._part_facts()
        n = sum(f["n_clips"] for f in facts)
        seconds = sum(f["seconds"] for f in facts)
        return ExtractStats(n_clips=n, n_parts_computed=len(facts), n_parts_reused=0,
                            seconds=round(seconds, 3),
                            clips_per_s=round(n / seconds, 3) if seconds else 0.0,
                            size_bytes=self.size_bytes())

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, parts={len(self._part_facts())})"
