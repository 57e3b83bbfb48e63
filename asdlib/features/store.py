"""The on-disk feature store: parts built atomically by `extract_features`, read memory-
mapped through `FeatureStore` (layout in `asdlib.features`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from asdlib import atomic, distributed
from asdlib.devices import resolve_device
from asdlib.features.clips import EMBED, PATCH_FRAMES, ClipFeatures, token_count
from asdlib.features.config import ExtractConfig, ExtractStats
from asdlib.features.encoding import batch_arrays, clip_durations, encode_batches, length_batches
from asdlib.features.keys import (dataset_fingerprint, key_params, resolve_heads, resolve_model,
                                  store_key)
from asdlib.progress import bar as progress_bar

_DONE = "DONE"
_INDEX = "index.csv"
_PART_JSON = "part.json"
_PARAMS = "params.json"


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
    seconds = clip_durations(paths)
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
                             device=device, embed_hop=cfg.embed_hop)
    for rows_b, grids, valid in batches:
        res = batch_arrays(grids, valid, asp, band, cfg)
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
    holds this run's `ExtractStats` (of this process's parts).
    Under torchrun (`asdlib.distributed`) each process builds the parts assigned to it
    (balanced by clip count) and returns once every process has finished: the store is the
    one a single process writes.
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
    model, model_info = resolve_model(model)
    asp, band, heads_info = resolve_heads(heads)
    params = key_params(model_info, heads_info, cfg, loader)
    root = Path(store_root) / params["key"]
    root.mkdir(parents=True, exist_ok=True)
    rank, n_procs = distributed.world()
    params_path = root / _PARAMS
    if rank == 0 and not params_path.is_file():
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
    distributed.barrier()   # params.json written before any process builds a part
    if n_procs > 1:
        shard = distributed.assign_shards([len(p[1]) for p in plan], n_procs)
        plan = [p for p, owner in zip(plan, shard) if owner == rank]

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
    distributed.barrier()   # every part done before anyone reads the store

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
        n_time = np.load(part / "n_time.npy")
        hop = PATCH_FRAMES
        if layer == EMBED:  # its own time grid (`ExtractConfig.embed_hop`)
            hop = int(self.params["extract"].get("embed_hop", PATCH_FRAMES))
            n_time = token_count(n_time, hop).astype(n_time.dtype)
        return ClipFeatures(
            tokens=np.load(part / f"tokens_L{layer}.npy", mmap_mode="r"),
            n_time=n_time,
            utt=np.load(part / f"utt_L{layer}.npy", mmap_mode="r"),
            asp=opt("asp"), band_att=opt("band_att"),
            domain=np.array([None if pd.isna(v) else v for v in index["domain"]]
                            if "domain" in index else [None] * len(index), dtype=object),
            names=np.array(index["name"].tolist(), dtype=object), hop_frames=hop,
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
