"""Feature store: round trip, padding, resume, cache keys, half-written parts, memory maps.

Stand-ins (a fake encoder with the BEATs ``extract`` API, fake heads, a soundfile loader)
keep these tests independent of the real encoder; one integration test uses the real
``build_beats("tiny")`` when ``asdlib.encoder`` is present.
"""

from __future__ import annotations

import dataclasses

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch import nn

from asdlib.features import (ClipFeatures, ExtractConfig, FeatureStore, extract_features,
                             store_key)

SR = 16000
HOP = 160  # samples per time patch of the stand-in encoder (8 bands x 20 samples)
D = 6
E = 4


class Interrupted(RuntimeError):
    """Raised by the stand-in encoder to simulate a crash."""


class FakeOut:
    def __init__(self, grids, valid):
        self._grids, self.time_valid = grids, valid

    def grid(self, layer):
        return self._grids[layer]


class FakeEncoder(nn.Module):
    """``extract`` like BEATs: (B, N) wave -> per layer a (B, T', 8, D) grid, T' = N // HOP.

    Padded patches get non-zero values (the store must zero them). Counts calls; raises
    ``Interrupted`` on call number ``fail_at``.
    """

    def __init__(self, seed: int = 0, n_layers: int = 2, fail_at: int | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cfg = SimpleNamespace(encoder_embed_dim=D, encoder_layers=n_layers)
        self.proj = nn.Parameter(torch.randn(n_layers + 1, 20, D, generator=g))
        self.calls = 0
        self.fail_at = fail_at

    def extract(self, wav, padding_mask=None, layers=(-1,)):
        self.calls += 1
        time.sleep(getattr(self, "delay", 0.0))
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise Interrupted(f"simulated crash at encoder call {self.calls}")
        b, n = wav.shape
        t = n // HOP
        x = wav[:, : t * HOP].reshape(b, t, 8, 20)
        if padding_mask is None:
            valid = torch.ones(b, t, dtype=torch.bool)
        else:
            valid = ~padding_mask[:, : t * HOP].reshape(b, t, HOP).any(-1)
        grids = {layer: torch.tanh(30 * x @ self.proj[layer]) + 0.5 for layer in layers}
        return FakeOut(grids, valid)


class FakeASP(nn.Module):
    """(B, T', 8, D), (B, T') -> (B, E): linear map of the masked mean."""

    def __init__(self, seed: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(D, E)

    def forward(self, grid, time_valid):
        w = time_valid[:, :, None, None].float()
        return self.lin((grid * w).sum((1, 2)) / (8 * w.sum((1, 2, 3))).clamp(min=1)[:, None])


class FakeBand(nn.Module):
    """(B, T', 8, D), (B, T') -> (B, 8, D): scaled masked mean over time per band."""

    def __init__(self, seed: int = 2):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(D, generator=torch.Generator().manual_seed(seed)))

    def forward(self, grid, time_valid):
        w = time_valid[:, :, None, None].float()
        return (grid * w).sum(1) / w.sum(1).clamp(min=1) * self.scale


def fake_load(path, channel="near", sample_rate=16000):
    """Stand-in for asdlib.audio.load_clip on the stereo test wavs."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return {"near": data[:, 0], "far": data[:, 1], "both": data.T}[channel].copy(), sr


def make_table(root, lengths=None, seed=0) -> pd.DataFrame:
    """Stereo wavs (near, far) of a few patches each and their clip table.

    lengths: {(machine, split): [n_patches, ...]}; each clip has an extra remainder of
    samples that does not fill a patch.
    """
    lengths = lengths or {("fan", "train"): [7, 12, 5], ("fan", "test"): [9, 4],
                          ("pump", "train"): [6, 6, 11], ("pump", "test"): [8, 10]}
    rng = np.random.default_rng(seed)
    rows = []
    for (machine, split), patches in lengths.items():
        folder = root / machine / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, n_patch in enumerate(patches):
            domain = "source" if i % 2 == 0 else "target"
            label = "normal" if split == "train" or i == 0 else "anomaly"
            name = f"section_00_{domain}_{split}_{label}_{i:04d}_a_{i}.wav"
            wave = rng.uniform(-0.5, 0.5, size=(n_patch * HOP + 37, 2)).astype(np.float32)
            sf.write(folder / name, wave, SR, subtype="FLOAT")
            if split == "test" and i == len(patches) - 1:
                domain = label = None  # an unlabeled clip
            rows.append(dict(path=str(folder / name), name=name, machine=machine, section="00",
                             split=split, domain=domain, label=label, index=i,
                             attributes=f"a_{i}", dataset="dev"))
    table = pd.DataFrame(rows)
    for col in ("domain", "label"):  # typed as asdlib.data does: object with None
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    return table


def reference(model, asp, band, path, channel="near", layer=-1):
    """Unbatched, unpadded stand-in outputs of one clip (float32)."""
    wave = torch.from_numpy(fake_load(path, channel)[0])[None]
    with torch.no_grad():
        out = model.extract(wave, layers=(layer,))
        grid, valid = out.grid(layer), out.time_valid
        return (grid[0].numpy(), asp(grid, valid)[0].numpy(), band(grid, valid)[0].numpy())


def run(table, root, model=None, heads="default", progress=False, **cfg):
    model = model or FakeEncoder()
    heads = (FakeASP(), FakeBand()) if heads == "default" else heads
    cfg = ExtractConfig(**{"batch_size": 2, "device": "cpu", **cfg})
    return extract_features(table, model, heads, cfg, root, progress=progress, loader=fake_load)


def all_arrays(store: FeatureStore) -> dict:
    """{(machine, split, channel, layer, field): array} of a whole store (copies)."""
    res = {}
    for _, p in store.parts().iterrows():
        for layer in store.layers:
            f = store.load(p.machine, p.split, layer=layer, channel=p.channel)
            for field in ("tokens", "n_time", "utt", "asp", "band_att"):
                value = getattr(f, field)
                if value is not None:
                    res[(p.machine, p.split, p.channel, layer, field)] = np.array(value)
    return res


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


# --------------------------------------------------------------------------- tests

def test_round_trip(tmp_path):
    table = make_table(tmp_path / "data")
    model, asp, band = FakeEncoder(), FakeASP(), FakeBand()
    store = extract_features(table, model, (asp, band), ExtractConfig(
        layers=(-1, 0), batch_size=2, device="cpu"), tmp_path / "store", progress=False,
        loader=fake_load)

    assert store.path.parent == tmp_path / "store" and store.path.name == store.key
    parts = store.parts()
    assert sorted(zip(parts.machine, parts.split)) == sorted(
        table.groupby(["machine", "split"]).groups)
    assert (parts.channel == "near").all()
    for (machine, split), rows in table.groupby(["machine", "split"]):
        rows = rows.reset_index(drop=True)
        index = store.index(machine, split)
        pd.testing.assert_frame_equal(index, rows)  # types too: section "00", index int, None
        for layer in (-1, 0):
            f = store.load(machine, split, layer=layer)
            assert isinstance(f, ClipFeatures) and len(f) == len(rows)
            assert f.tokens.dtype == np.float16 and f.tokens.shape[2:] == (8, D)
            assert list(f.names) == list(rows.name)
            assert list(f.domain) == list(rows.domain)
            for i, path in enumerate(rows.path):
                grid, a_ref, b_ref = reference(model, asp, band, path, layer=layer)
                t = len(grid)
                assert f.n_time[i] == t
                np.testing.assert_allclose(f.tokens[i, :t], grid, rtol=2e-3, atol=2e-3)
                assert not f.tokens[i, t:].any()
                mean = f.tokens[i, :t].astype(np.float64).mean((0, 1))
                np.testing.assert_allclose(f.utt[i], mean, rtol=2e-3, atol=2e-3)
                np.testing.assert_allclose(f.utt[i], grid.mean((0, 1)), rtol=2e-3, atol=2e-3)
                # heads always see head_layer (-1), whichever layer is loaded
                _, a_ref, b_ref = reference(model, asp, band, path, layer=-1)
                np.testing.assert_allclose(f.asp[i], a_ref, rtol=2e-3, atol=2e-3)
                np.testing.assert_allclose(f.band_att[i], b_ref, rtol=2e-3, atol=2e-3)
    # the 2-layer stand-in's last hidden state is both -1 and 2; -3 is hidden state 0
    np.testing.assert_array_equal(store.load("fan", "test", layer=2).tokens,
                                  store.load("fan", "test", layer=-1).tokens)
    np.testing.assert_array_equal(store.load("fan", "test", layer=-3).utt,
                                  store.load("fan", "test", layer=0).utt)
    with pytest.raises(KeyError):
        store.load("fan", "test", layer=1)
    stats = store.run_stats
    assert stats.n_clips == len(table) and stats.n_parts_computed == 4 and stats.clips_per_s > 0
    assert stats.size_bytes == store.size_bytes() > 0
    params = json.loads((store.path / "params.json").read_text())
    assert params["key"] == store.key and params["extract"]["layers"] == [-1, 0]
    assert params["encoder"]["cfg"]["encoder_embed_dim"] == D


def test_mixed_lengths_in_one_batch(tmp_path):
    lengths = {("fan", "train"): [3, 14, 1, 9, 6]}
    table = make_table(tmp_path / "data", lengths)
    model = FakeEncoder()
    store = run(table, tmp_path / "store", model=model, heads=None, batch_size=8)
    assert model.calls == 1  # one padded batch
    f = store.load("fan", "train")
    np.testing.assert_array_equal(f.n_time, lengths[("fan", "train")])
    assert f.tokens.shape[1] == 14
    valid = f.valid_time()
    assert not f.tokens[~valid].any()  # zero past n_time, although the encoder's pad != 0
    assert f.tokens[valid].all()
    for i, path in enumerate(table.path):  # padding does not leak into the valid tokens
        grid = reference(model, FakeASP(), FakeBand(), path)[0]
        np.testing.assert_allclose(f.tokens[i, : len(grid)], grid, rtol=2e-3, atol=2e-3)
    assert f.asp is None and f.band_att is None


def test_batches_are_bounded_by_padded_audio(tmp_path):
    """A long clip cannot pad a whole batch to its length: each encoder call holds at most
    max_batch_seconds of padded audio (a longer clip alone), and the features are the same
    as with one batch."""
    lengths = {("fan", "train"): [3, 14, 1, 9, 6, 120]}  # the last clip is 10x the others
    table = make_table(tmp_path / "data", lengths)
    seen = []
    model = FakeEncoder()
    plain = model.extract

    def recording(wav, padding_mask=None, layers=(-1,)):
        seen.append(tuple(wav.shape))
        return plain(wav, padding_mask, layers)

    model.extract = recording
    limit = 30 * HOP / SR  # 30 patches of audio per call
    store = run(table, tmp_path / "bounded", model=model, heads=None, batch_size=8,
                max_batch_seconds=limit)
    assert len(seen) > 1
    for b, n in seen:
        assert b == 1 or b * n <= limit * SR
    whole = run(table, tmp_path / "whole", model=FakeEncoder(), heads=None, batch_size=8)
    np.testing.assert_allclose(store.load("fan", "train").tokens, whole.load("fan", "train").tokens,
                               rtol=1e-6, atol=1e-6)


def test_length_batches():
    from asdlib.features import length_batches

    seconds = np.array([10.0, 10.0, 60.0, 10.0, 2.0])
    order = [2, 0, 1, 3, 4]
    assert [b.tolist() for b in length_batches(order, seconds, 8)] == [order]
    assert [b.tolist() for b in length_batches(order, seconds, 2)] == [[2, 0], [1, 3], [4]]
    bounded = length_batches(order, seconds, 8, max_seconds=40.0)
    assert [b.tolist() for b in bounded] == [[2], [0, 1, 3, 4]]


def test_reading_is_memory_mapped(tmp_path):
    store = run(make_table(tmp_path / "data"), tmp_path / "store")
    f = store.load("pump", "test")
    for arr in (f.tokens, f.utt, f.asp, f.band_att):
        assert isinstance(arr, np.memmap)
        with pytest.raises(ValueError):
            arr[0] = 0  # read-only
    assert isinstance(f.subset(np.array([1, 0])).tokens, np.ndarray)


def test_resume_after_interruption(tmp_path):
    table = make_table(tmp_path / "data")
    # parts run in sorted order: fan/test (2 clips, 1 call), fan/train (3 clips, 2 calls), ...
    crashing = FakeEncoder(fail_at=3)  # the crash hits the 2nd part's 2nd batch
    with pytest.raises(Interrupted):
        run(table, tmp_path / "store", model=crashing)
    key = store_key(FakeEncoder(), (FakeASP(), FakeBand()),
                    ExtractConfig(batch_size=2, device="cpu"), loader=fake_load)
    partial = FeatureStore(tmp_path / "store" / key)
    assert partial.has_part("fan", "test")
    assert not partial.has_part("fan", "train")  # the half-done part is not readable
    with pytest.raises(KeyError):
        partial.load("fan", "train")
    assert list(partial.parts().split) == ["test"]

    resumed_model = FakeEncoder()
    resumed = run(table, tmp_path / "store", model=resumed_model)
    n_calls = {k: math.ceil(len(r) / 2) for k, r in table.groupby(["machine", "split"])}
    assert resumed_model.calls == sum(n_calls.values()) - n_calls[("fan", "test")]
    assert resumed.run_stats.n_parts_reused == 1 and resumed.run_stats.n_parts_computed == 3
    assert not list(resumed.path.rglob(".*tmp*"))  # leftovers of the crash are gone

    clean = run(table, tmp_path / "clean")
    assert clean.key == resumed.key
    assert_same(all_arrays(resumed), all_arrays(clean))


KILL_SCRIPT = """
import sys, pandas as pd
from test_features import FakeEncoder, run
model = FakeEncoder()
model.delay = 0.25  # slow enough to be killed inside a part (not a parameter: same key)
run(pd.read_pickle(sys.argv[1]), sys.argv[2], model=model)
"""


def test_resume_after_kill(tmp_path):
    """SIGKILL while a part is being written: nothing half-written is readable, a re-run
    redoes only the unfinished parts and matches an uninterrupted run."""
    table = make_table(tmp_path / "data")
    table.to_pickle(tmp_path / "table.pkl")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), str(Path(__file__).parents[1])])}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "table.pkl"),
                             str(tmp_path / "store")], env=env)
    deadline = time.time() + 60
    while not list((tmp_path / "store").glob("*/*/*/near/DONE")):
        assert proc.poll() is None, "extraction ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait()

    killed = FeatureStore(next((tmp_path / "store").iterdir()))
    finished = killed.parts()
    assert 1 <= len(finished) < 4
    for _, p in finished.iterrows():  # whatever is listed loads completely
        f = killed.load(p.machine, p.split)
        assert np.isfinite(np.asarray(f.tokens)).all() and len(f) == p.n_clips

    model = FakeEncoder()
    resumed = run(table, tmp_path / "store", model=model)
    assert resumed.path == killed.path
    assert resumed.run_stats.n_parts_reused == len(finished)
    n_calls = {k: math.ceil(len(r) / 2) for k, r in table.groupby(["machine", "split"])}
    assert model.calls == sum(n_calls.values()) - sum(
        n_calls[(m, sp)] for m, sp in zip(finished.machine, finished.split))
    assert_same(all_arrays(resumed), all_arrays(run(table, tmp_path / "clean")))


def test_cache_key_and_reuse(tmp_path):
    table = make_table(tmp_path / "data")
    first = run(table, tmp_path / "store")
    again_model = FakeEncoder()
    again = run(table, tmp_path / "store", model=again_model, batch_size=3, num_threads=1)
    assert again.key == first.key  # batch size / threads do not change the values
    assert again_model.calls == 0 and again.run_stats.n_parts_reused == 4

    base = dict(model=FakeEncoder(), heads=(FakeASP(), FakeBand()), cfg=ExtractConfig())
    key = lambda **kw: store_key(**{**base, **kw}, loader=fake_load)  # noqa: E731
    changed_weights = FakeEncoder()
    with torch.no_grad():
        changed_weights.proj[0, 0, 0] += 1e-3
    variants = {
        "layers": key(cfg=ExtractConfig(layers=(-1, 0))),
        "channel": key(cfg=ExtractConfig(channel="far")),
        "both": key(cfg=ExtractConfig(channel="both")),
        "dtype": key(cfg=ExtractConfig(dtype="float32")),
        "precision": key(cfg=ExtractConfig(precision="bfloat16")),
        "head_layer": key(cfg=ExtractConfig(head_layer=0)),
        "weights": key(model=changed_weights),
        "encoder_seed": key(model=FakeEncoder(seed=5)),
        "asp_head": key(heads=(FakeASP(seed=7), FakeBand())),
        "band_head": key(heads=(FakeASP(), FakeBand(seed=7))),
        "no_heads": key(heads=None),
        "loader": store_key(**base),
    }
    same = key(cfg=ExtractConfig(batch_size=5, device="cpu", num_threads=1))
    assert same == key() == first.key
    assert len(set(variants.values()) | {same}) == len(variants) + 1, variants

    other = run(table, tmp_path / "store", layers=(0,))
    assert other.key != first.key and other.run_stats.n_parts_computed == 4
    assert FeatureStore.open(tmp_path / "store", FakeEncoder(), (FakeASP(), FakeBand()),
                             ExtractConfig(), loader=fake_load).path == first.path
    with pytest.raises(FileNotFoundError):
        FeatureStore.open(tmp_path / "store", FakeEncoder(seed=9), None, loader=fake_load)


def test_changed_dataset_recomputes_only_its_part(tmp_path):
    table = make_table(tmp_path / "data")
    first = run(table, tmp_path / "store")
    before = all_arrays(first)
    path = table.path[(table.machine == "pump") & (table.split == "train")].iloc[0]
    sf.write(path, np.full((3 * HOP, 2), 0.25, np.float32), SR, subtype="FLOAT")  # rewritten
    table.loc[table.machine == "fan", "label"] = "normal"  # metadata only: no recompute

    model = FakeEncoder()
    second = run(table, tmp_path / "store", model=model)
    assert second.key == first.key
    assert model.calls == 2 and second.run_stats.n_parts_computed == 1
    assert second.load("pump", "train").n_time[0] == 3
    assert list(second.index("fan", "test").label) == ["normal", "normal"]
    after = all_arrays(second)
    for k in before:
        if k[:2] != ("pump", "train"):
            np.testing.assert_array_equal(before[k], after[k])


def test_half_written_part_is_ignored_and_recomputed(tmp_path):
    table = make_table(tmp_path / "data")
    store = run(table, tmp_path / "store")
    expected = all_arrays(store)
    part = store.path / "pump" / "test" / "near"
    (part / "DONE").unlink()  # as if killed before the marker
    tokens = part / "tokens_L-1.npy"
    tokens.write_bytes(tokens.read_bytes()[:100])  # and a truncated array
    junk = store.path / "fan" / "train" / ".near.tmp-999"  # a crashed run's temp folder
    junk.mkdir()
    (junk / "DONE").write_text("x")

    reader = FeatureStore(store.path)
    assert not reader.has_part("pump", "test")
    assert len(reader.parts()) == 3  # neither the half part nor the temp folder is listed
    with pytest.raises(KeyError):
        reader.load("pump", "test")

    model = FakeEncoder()
    redone = run(table, tmp_path / "store", model=model)
    assert model.calls == 1 and redone.run_stats.n_parts_computed == 1
    assert_same(all_arrays(redone), expected)


def test_both_channels_are_separate_parts(tmp_path):
    table = make_table(tmp_path / "data")
    both = run(table, tmp_path / "store", channel="both")
    assert sorted(set(both.parts().channel)) == ["far", "near"] and len(both.parts()) == 8
    near_only = run(table, tmp_path / "store", channel="near")
    assert near_only.key != both.key
    near, far = both.load("fan", "train", channel="near"), both.load("fan", "train", channel="far")
    np.testing.assert_array_equal(near.tokens, near_only.load("fan", "train").tokens)
    assert not np.array_equal(near.tokens, far.tokens)
    model = FakeEncoder()
    grid = reference(model, FakeASP(), FakeBand(), table.path[0], channel="far")[0]
    np.testing.assert_allclose(both.load(table.machine[0], table.split[0], channel="far")
                               .tokens[0, : len(grid)], grid, rtol=2e-3, atol=2e-3)
    with pytest.raises(KeyError):
        near_only.load("fan", "train", channel="far")
    with pytest.raises(KeyError):
        near_only.load("fan", "train", layer=0)  # layer not stored


def test_reduced_precision_and_float32_storage(tmp_path):
    table = make_table(tmp_path / "data", {("fan", "train"): [5, 9]})
    exact = run(table, tmp_path / "store", dtype="float32").load("fan", "train")
    assert exact.tokens.dtype == np.float32 and exact.asp.dtype == np.float32
    low = run(table, tmp_path / "store", precision="bfloat16").load("fan", "train")
    np.testing.assert_allclose(low.tokens, exact.tokens, atol=0.3)  # tanh(30 x): steep
    np.testing.assert_allclose(low.utt, exact.utt, atol=0.05)


def test_config_validation():
    with pytest.raises(ValueError):
        ExtractConfig(channel="left")
    with pytest.raises(ValueError):
        ExtractConfig(layers=())
    with pytest.raises(ValueError):
        ExtractConfig(dtype="int8")
    assert ExtractConfig(layers=[3, -1]).layers == (3, -1)
    assert ExtractConfig(channel="both").channels == ("near", "far")


def test_real_tiny_encoder(tmp_path):
    """Integration with the real encoder, heads and audio loader (default ``loader``)."""
    from asdlib import encoder
    from asdlib.adaptation import heads as adaptation

    lengths = {("fan", "train"): [200, 130, 160], ("fan", "test"): [170]}  # 1.3 to 2.0 s
    table = make_table(tmp_path / "data", lengths)
    model = encoder.build_beats("tiny", seed=0)
    d = model.cfg.encoder_embed_dim
    torch.manual_seed(0)
    heads = (adaptation.ASPHead(d, emb_dim=16), adaptation.BandAttentivePooling(d))
    cfg = ExtractConfig(layers=(-1, 1, "embed"), batch_size=2, device="cpu")
    store = extract_features(table, model, heads, cfg, tmp_path / "store", progress=False)
    f = store.load("fan", "train")
    embedded = store.load("fan", "train", layer="embed")
    assert embedded.tokens.shape[-1] == model.cfg.embed_dim  # its own width
    frames = [1 + (n * HOP + 37 - 400) // 160 for n in lengths[("fan", "train")]]
    np.testing.assert_array_equal(f.n_time, [t // 16 for t in frames])
    assert f.tokens.shape == (3, frames[0] // 16, 8, d)
    assert f.asp.shape == (3, 16) and f.band_att.shape == (3, 8, d)
    assert not f.tokens[~f.valid_time()].any()
    for i in (1, 2):  # padded in its batch, yet equal to the clip encoded alone
        wave = torch.from_numpy(fake_load(table.path[i])[0])[None]
        with torch.no_grad():
            out = model.extract(wave, layers=(-1,), embed=True)
            alone = out.grid(-1)
            emb = heads[0](alone, out.time_valid)[0].numpy()
            before_norm = out.embed_grid()[0].numpy()                  # (T', 8, E), hop 16
            shifted = model.patch_embedding_grid(out.fbank[:, 8:])[0].numpy()  # from frame 8
        alone = alone[0].numpy()
        # the stored patch embedding overlaps the patches by half (embed_hop 8): the even
        # steps are the encoder's own patches, the odd ones start 8 frames later
        n = len(before_norm)
        assert embedded.hop_frames == 8 and embedded.n_time[i] == 2 * n - 1
        np.testing.assert_allclose(embedded.tokens[i, 0:2 * n - 1:2], before_norm,
                                   rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(embedded.tokens[i, 1:2 * n - 1:2], shifted[: n - 1],
                                   rtol=1e-2, atol=1e-2)
        assert not embedded.tokens[i, 2 * n - 1:].any()
        np.testing.assert_allclose(f.tokens[i, : len(alone)], alone, rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(f.utt[i], alone.mean((0, 1)), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(f.asp[i], emb, rtol=1e-2, atol=1e-2)
    assert np.array_equal(store.load("fan", "train", layer=model.num_layers).tokens, f.tokens)
    np.testing.assert_allclose(embedded.utt, [embedded.tokens[i, :k].astype(np.float32).mean((0, 1))
                                              for i, k in enumerate(embedded.n_time)], atol=1e-2)
    own = extract_features(table, model, heads, dataclasses.replace(cfg, embed_hop=16),
                           tmp_path / "store", progress=False)   # the encoder's own grid
    assert own.key != store.key
    grid16 = own.load("fan", "train", layer="embed")
    assert grid16.hop_frames == 16 and np.array_equal(grid16.n_time, f.n_time)
    t = f.tokens.shape[1]
    np.testing.assert_allclose(grid16.tokens[:, :t], embedded.tokens[:, ::2][:, :t], atol=1e-2)
    assert FeatureStore.open(tmp_path / "store", model, heads, cfg).key == store.key
    low = extract_features(table, model, heads, ExtractConfig(precision="bfloat16"),
                           tmp_path / "store", progress=False)  # via extract(dtype=)
    assert low.key != store.key
    np.testing.assert_allclose(low.load("fan", "train").utt, f.utt, atol=0.1)
    encoder.save_beats(model, tmp_path / "tiny.pt")  # a checkpoint path gives the same key
    assert store_key(tmp_path / "tiny.pt", heads, cfg) == store.key


def test_token_count_keeps_the_tokens_inside_the_valid_patches():
    from asdlib.features import token_count

    n = np.array([0, 1, 2, 62])
    assert token_count(n, 16).tolist() == [0, 1, 2, 62]
    assert token_count(n, 8).tolist() == [0, 1, 3, 123]
    # hop 5 over 3 patches (48 frames): tokens start at 0, 5, ..., 30 (the next would end at 51)
    assert token_count([3], 5).tolist() == [7]
    with pytest.raises(ValueError, match="embed_hop"):
        ExtractConfig(embed_hop=0)
