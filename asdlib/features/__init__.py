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
        n_time.npy        (N,) int32 valid time patches (of layer "embed", stored every
                          `ExtractConfig.embed_hop` frames: `token_count` of these)
        asp.npy           (N, E)     with an ASP head only
        band_att.npy      (N, 8, D)  with a band-attentive head only
        index.csv         the clip-table rows, row i = clip i
        part.json         part facts: dataset fingerprint, shapes, timing
        DONE              written last; holds the dataset fingerprint

``key`` hashes the encoder weights and config, the heads' weights, the value-affecting
`ExtractConfig` fields, the audio loader, `FORMAT_VERSION` and the source of the code the
extraction can run (`asdlib.fingerprint.module_code_hash` of this package: the encoder, the
heads, the audio loader), so an edit to that code never reuses old features. A part is built in a hidden
temporary folder and renamed into place after its ``DONE`` marker is written, so an
interrupted extraction leaves no readable half-part and a re-run skips finished parts.
A part whose clips changed (names, file sizes, mtimes) is recomputed.
"""


from __future__ import annotations

from asdlib.features.clips import EMBED, PATCH_FRAMES, ClipFeatures, token_count
from asdlib.features.config import (FORMAT_VERSION, PRECISIONS, STORAGE_DTYPES, ExtractConfig,
                                   ExtractStats)
from asdlib.features.encoding import encode_batches, length_batches, masked_grid_mean
from asdlib.features.keys import dataset_fingerprint, module_hash, store_key
from asdlib.features.store import FeatureStore, extract_features

__all__ = ["EMBED", "FORMAT_VERSION", "PATCH_FRAMES", "PRECISIONS", "STORAGE_DTYPES", "ClipFeatures",
           "ExtractConfig", "ExtractStats", "FeatureStore", "dataset_fingerprint",
           "encode_batches", "extract_features", "length_batches", "masked_grid_mean",
           "module_hash", "store_key", "token_count"]
