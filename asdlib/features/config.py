"""What an extraction stores and how: `ExtractConfig`, and what it cost: `ExtractStats`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from asdlib.audio import CHANNELS
from asdlib.features.clips import EMBED, PATCH_FRAMES

#: Bump when a code change alters stored values or the layout: old stores get a new key.
FORMAT_VERSION = 2
STORAGE_DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")


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
    embed_hop: frames between the stored patch-embedding (`EMBED`) tokens. 16 is the
        encoder's own patch grid; the default 8 overlaps the 16-frame patches by half, so
        that a short event near a patch boundary lies wholly inside some token (measured
        per fault kind in docs/EXPERIMENTS.md). The hidden states keep the 16-frame grid.

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
    embed_hop: int = 8

    VALUE_FIELDS: ClassVar[tuple[str, ...]] = ("layers", "channel", "head_layer", "dtype",
                                               "precision", "embed_hop")

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
        if not 1 <= int(self.embed_hop) <= PATCH_FRAMES:
            raise ValueError(f"embed_hop must be 1..{PATCH_FRAMES} frames, got {self.embed_hop}")
        object.__setattr__(self, "embed_hop", int(self.embed_hop))
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
