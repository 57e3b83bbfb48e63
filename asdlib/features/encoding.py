"""Running the frozen encoder over clips: length-bounded batches, padded forward passes,
masked means, and the per-batch arrays a store part keeps."""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable

import numpy as np

from asdlib.audio import SAMPLE_RATE, padded_tensors
from asdlib.features.clips import EMBED, PATCH_FRAMES, token_count
from asdlib.features.config import ExtractConfig


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


def clip_durations(paths) -> np.ndarray:
    """Clip durations in seconds from the wav headers (for length-sorted batching)."""
    import soundfile as sf

    return np.array([sf.info(str(p)).duration for p in paths], dtype=np.float64)


def encode_batches(model, paths, batches, *, channel: str = "near",
                   loader: Callable | None = None, layers: tuple[int, ...] = (-1,),
                   precision: str = "float32", device="cpu", embed_hop: int = PATCH_FRAMES):
    """Encode clips batch by batch with a frozen encoder (no gradients).

    The loop shared by the feature store and `asdlib.scoring.utterance_embeddings`.
    paths: the clip files; batches: positions in ``paths``, one array per encoder call, in
    encoding order (`length_batches` bounds their padded audio). Clips are read with ``loader(path, channel=,
    sample_rate=16000)`` (default ``asdlib.audio.load_clip``) and zero-padded to the longest
    of their batch; the padding mask goes to ``model.extract`` only when a clip is padded.
    precision: encoder compute dtype ("float32"; "bfloat16"/"float16" are passed as
    ``extract(dtype=)`` when the encoder takes it, else run under autocast).
    embed_hop: frames between the `EMBED` tokens (16: the encoder's patch grid; smaller:
    ``model.patch_embedding_grid`` on the batch's fbank, T_e time steps).
    Yields ``(rows, grids, valid)`` per batch: rows (B,) the batch's positions in
    ``paths``, sorted; grids {layer: (B, T', 8, D) float32 tensor} for ``layers`` (the
    `EMBED` grid (B, T_e, 8, E)); valid (B, T') bool tensor, True for the valid time
    patches (all True when the encoder reports none), on the grids' device.
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
                strided = EMBED in layers and embed_hop != PATCH_FRAMES
                if strided and not hasattr(model, "patch_embedding_grid"):
                    raise TypeError(f"embed_hop={embed_hop} needs an encoder with "
                                    "patch_embedding_grid (asdlib BEATs)")
                extra = {"embed": True} if EMBED in layers and not strided else {}
                out = model.extract(wav, padding_mask=mask, layers=hidden, **kwargs, **extra)
                grids = {layer: (model.patch_embedding_grid(out.fbank, embed_hop) if strided
                                 else out.embed_grid()) if layer == EMBED else out.grid(layer)
                         for layer in layers}
            grids = {layer: g.float() for layer, g in grids.items()}  # heads run in float32
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


def batch_arrays(grids: dict, valid, asp, band, cfg: ExtractConfig) -> dict:
    """What the store keeps of one encoded batch (see `encode_batches`).

    Returns numpy arrays: "grid" {layer: (B, T', 8, D) in the storage dtype, zero past
    n_time}, float32 "utt" {layer: (B, D)}, "asp" (B, E) or None, "band" (B, 8, D) or None,
    and int32 "n_time" (B,) (valid 16-frame patches; the valid `EMBED` tokens are
    ``token_count(n_time, cfg.embed_hop)``).
    """
    import torch

    store_dtype = getattr(torch, cfg.dtype)
    res: dict = {"grid": {}, "utt": {}}
    with torch.no_grad():
        for layer in cfg.layers:
            layer_valid = valid
            if layer == EMBED:  # its own time grid, every cfg.embed_hop frames
                n_embed = torch.as_tensor(token_count(valid.sum(1).cpu().numpy(), cfg.embed_hop))
                steps = torch.arange(grids[layer].shape[1])
                layer_valid = (steps[None, :] < n_embed[:, None]).to(valid.device)
            g, utt = masked_grid_mean(grids[layer], layer_valid)
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
