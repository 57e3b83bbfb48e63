"""Tests of asdlib.adaptation: heads, ArcFace, proxy classes, modes, LoRA merge, resume."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from asdlib.adaptation import heads, lora, losses, training
from asdlib.adaptation import small_encoder as small
from asdlib import encoder


def _tiny(seed: int = 0):
    return encoder.build_beats("tiny", seed=seed)


def _wave(b: int = 2, seconds: float = 1.5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(b, int(seconds * 16000), generator=g)).clamp(-1, 1)


def _final_tokens(model, wav, padding_mask=None) -> torch.Tensor:
    with torch.no_grad():
        return model.extract(wav, padding_mask=padding_mask, layers=(-1,)).tokens[-1]


# --------------------------------------------------------------------------- heads


def _grid_pair(seed: int = 0):
    """A grid (2, 6, 8, 12) whose clip 1 has 4 valid time patches, and its mask."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(2, 6, 8, 12, generator=g)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    return grid, valid


def test_asp_head_shape_and_padding_changes_nothing():
    torch.manual_seed(0)
    head = heads.ASPHead(12, emb_dim=5).eval()
    grid, valid = _grid_pair()
    out = head(grid, valid)
    assert out.shape == (2, 5)
    noisy = grid.clone()
    noisy[1, 4:] = 1e3 * torch.randn(2, 8, 12)
    assert torch.allclose(head(noisy, valid), out, atol=1e-6)
    alone = head(grid[1:, :4], None)  # the clip cut to its valid part
    assert torch.allclose(alone, out[1:], atol=1e-5)
    assert torch.isfinite(head(grid, torch.zeros_like(valid))).all()  # no valid patch: no NaN


def test_band_pooling_shape_weights_and_padding():
    torch.manual_seed(0)
    head = heads.BandAttentivePooling(12).eval()
    grid, valid = _grid_pair(1)
    out = head(grid, valid)
    assert out.shape == (2, 8, 12)
    w = head.weights(grid, valid)
    assert w.shape == (2, 6, 8)
    assert torch.allclose(w.sum(1), torch.ones(2, 8), atol=1e-6)
    assert (w[1, 4:] == 0).all()
    noisy = grid.clone()
    noisy[1, 4:] = 1e3
    assert torch.allclose(head(noisy, valid), out, atol=1e-6)
    assert torch.allclose(head(grid[1:, :4]), out[1:], atol=1e-5)
    # the attention is shared by the bands: a band permutation permutes the outputs
    perm = torch.randperm(8)
    assert torch.allclose(head(grid[:, :, perm], valid), out[:, perm], atol=1e-6)


def test_mean_tokens_ignores_padding():
    grid, valid = _grid_pair(2)
    u = losses.mean_tokens(grid, valid)
    assert u.shape == (2, 12)
    assert torch.allclose(u[1], grid[1, :4].mean(dim=(0, 1)), atol=1e-6)
    assert torch.allclose(u[0], grid[0].mean(dim=(0, 1)), atol=1e-6)


# --------------------------------------------------------------------------- ArcFace


def test_arcface_matches_direct_formula():
    torch.manual_seed(0)
    arc = heads.ArcFace(4, 5, scale=30.0, margin=0.2)
    emb = torch.randn(3, 4, dtype=torch.float64)
    arc = arc.double()
    y = torch.tensor([0, 3, 4])
    w = arc.weight.detach()
    direct = []
    for i in range(3):
        cos = [float(emb[i] @ w[j] / (emb[i].norm() * w[j].norm())) for j in range(5)]
        theta = math.acos(cos[y[i]])
        assert theta + 0.2 < math.pi  # the plain region of the margin
        logits = [30.0 * (math.cos(theta + 0.2) if j == y[i] else cos[j]) for j in range(5)]
        direct.append(-logits[y[i]] + math.log(sum(math.exp(v) for v in logits)))
    assert arc(emb, y).item() == pytest.approx(float(np.mean(direct)), rel=1e-9, abs=1e-9)


def test_arcface_margin_zero_is_scaled_softmax_on_cosine():
    torch.manual_seed(1)
    arc = heads.ArcFace(6, 4, scale=16.0, margin=0.0)
    emb, y = torch.randn(7, 6), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    cos = F.normalize(emb, dim=1) @ F.normalize(arc.weight, dim=1).t()
    assert torch.allclose(arc(emb, y), F.cross_entropy(16.0 * cos, y), atol=1e-6)


@pytest.mark.parametrize("easy", [False, True])
def test_arcface_is_finite_at_the_extremes(easy):
    arc = heads.ArcFace(3, 2, margin=0.5, easy_margin=easy)
    with torch.no_grad():
        arc.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    emb = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]], requires_grad=True)
    loss = arc(emb, torch.tensor([0, 0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    if easy:  # easy margin jumps back to the plain cosine at 90 degrees, by design
        return
    # the true-class logit never rises when the angle grows (monotone continuation)
    theta = torch.linspace(0, math.pi, 181)
    e = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)], 1)
    logit = arc.logits(e, torch.zeros(181, dtype=torch.long))[:, 0]
    assert (logit[1:] <= logit[:-1] + 1e-4).all()


# --------------------------------------------------------------------------- classes


def test_proxy_classes_split_hidden_attributes_by_domain():
    table = pd.DataFrame({
        "machine": ["fan", "fan", "fan", "pump", "pump", "pump", "valve"],
        "attributes": ["spd_1", "spd_2", "SPD_1", "noAttribute", "noAttribute", "", ""],
        "domain": ["source", "target", "source", "source", "target", "target", "source"],
        "split": ["train"] * 7,
    })
    labels, names = training.proxy_classes(table)
    assert names == sorted(names)
    got = [names[i] for i in labels]
    assert got == ["fan|spd_1", "fan|spd_2", "fan|spd_1", "pump|noattribute|source",
                   "pump|noattribute|target", "pump|noattribute|target",
                   "valve|noattribute|source"]
    with pytest.raises(ValueError, match="training clips only"):
        training.proxy_classes(table.assign(split=["train"] * 6 + ["test"]))


def test_training_rows_keep_only_normal_train_clips():
    table = pd.DataFrame({"split": ["train", "test", "test", "train"],
                          "label": ["normal", "normal", "anomaly", None]})
    assert training.training_rows(table)["split"].tolist() == ["train", "train"]


# --------------------------------------------------------------------------- modes, LoRA


def test_lora_identity_at_init_and_merge_equals_unmerged():
    model = _tiny().eval()
    official = list(_tiny().state_dict().keys())
    wav = _wave()
    base = _final_tokens(model, wav)
    names = lora.set_trainable(model, "lora", lora_rank=4, lora_alpha=8.0)
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)
    n_proj = sum(1 for k in official if k.endswith(("q_proj.weight", "k_proj.weight",
                                                    "v_proj.weight", "out_proj.weight")))
    assert len(names) == 2 * n_proj
    assert torch.equal(_final_tokens(model, wav), base)

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = model.extract(wav, layers=(-1,)).tokens[-1]
        loss = (out[:, :, 0] ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    unmerged = _final_tokens(model, wav)
    assert not torch.allclose(unmerged, base, atol=1e-4)  # the step changed the model
    lora.merge_lora(model)
    assert list(model.state_dict().keys()) == official
    assert torch.allclose(_final_tokens(model, wav), unmerged, atol=1e-5)


def test_merged_lora_checkpoint_loads_as_plain_beats(tmp_path):
    model = _tiny()
    lora.add_lora(model, rank=2, alpha=2.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.05)
    wav = _wave(1)
    expected = _final_tokens(model.eval(), wav)
    lora.merge_lora(model)
    encoder.save_beats(model, tmp_path / "m.pt")
    loaded = encoder.load_beats(tmp_path / "m.pt")
    assert torch.allclose(_final_tokens(loaded.eval(), wav), expected, atol=1e-5)


def test_last_n_and_frozen_modes_freeze_the_right_parameters():
    model = _tiny()
    n_layers = len(model.encoder.layers)
    names = lora.set_trainable(model, "last_n", last_n=1)
    prefix = f"encoder.layers.{n_layers - 1}."
    assert names and all(n.startswith(prefix) for n in names)
    assert len(names) == sum(1 for n, _ in model.named_parameters() if n.startswith(prefix))
    assert lora.set_trainable(model, "frozen") == []
    assert len(lora.set_trainable(model, "full")) == len(list(model.parameters()))
    with pytest.raises(ValueError):
        lora.set_trainable(model, "last_n", last_n=n_layers + 1)


def test_training_loss_decreases_in_a_few_steps():
    torch.manual_seed(0)
    model = _tiny()
    lora.set_trainable(model, "full")
    dim = model.cfg.encoder_embed_dim
    train_heads = losses.TrainingHeads(dim, 16, 3, 30.0, 0.2, False)
    params = [p for p in model.parameters() if p.requires_grad] + list(train_heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    wav, y = _wave(6, 1.0, seed=3), torch.tensor([0, 1, 2, 0, 1, 2])
    terms = losses.loss_terms(training.AdaptConfig())
    assert [t.name for t in terms] == ["proxy"]
    history = []
    for _ in range(6):
        out = model.extract(wav, layers=(-1,))
        batch = losses.Batch(model, train_heads, wav, out.fbank, out.grid(-1), out.time_valid,
                             y, y, 1.0)
        loss = losses.total_loss(terms, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0]


def test_loss_terms_follow_the_config():
    cfg = training.AdaptConfig.demo()
    assert [t.name for t in losses.loss_terms(cfg)] == ["proxy", "reconstruction", "spectrum",
                                                       "utterance"]
    assert [t.weight for t in losses.loss_terms(cfg)][1:] == [cfg.recon_weight,
                                                              cfg.spectrum_weight,
                                                              cfg.utt_loss_weight]


def test_micro_batches_bound_the_padded_audio():
    lengths = np.array([16000, 96000, 32000, 16000, 960000])  # 1, 6, 2, 1 and 60 s
    assert [list(g) for g in training.micro_batches(lengths, 10 ** 7)] == [[0, 1, 2, 3, 4]]
    groups = training.micro_batches(lengths, 200000)
    assert sorted(np.concatenate(groups).tolist()) == [0, 1, 2, 3, 4]
    for g in groups:
        assert len(g) == 1 or len(g) * lengths[g].max() <= 200000
    assert [4] in [list(g) for g in groups]  # the 60 s clip alone


# --------------------------------------------------------------------------- adapt, resume


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Clip table of two machines of the tiny synthetic dataset (one with hidden attributes)
    and their near-channel training waves, cut to 1.5 s."""
    from asdlib import synth
    from asdlib.data import scan_dataset

    root = tmp_path_factory.mktemp("synth_tiny")
    synth.generate_dataset(root, preset="tiny", seed=1, machines=["ToyCarEmu", "fan"],
                           progress=False)
    table = scan_dataset(root)
    rows = training.training_rows(table)
    waves, row_of = training.load_training_waves(rows, "near")
    return table, ([w[:24000] for w in waves], row_of), root


def _cfg(**kw) -> training.AdaptConfig:
    base = dict(mode="lora", epochs=2, batch_size=8, lr=2e-3, crop_seconds=1.0,
                specaugment=True, mixup=True, lora_rank=2, seed=3, device="cpu",
                emb_dim=16, utt_loss_weight=0.5)
    base.update(kw)
    return training.AdaptConfig(**base)


def test_adapt_writes_official_encoder_and_heads(tiny_data, tmp_path):
    table, waves, _ = tiny_data
    model = _tiny()
    hist = training.adapt(model, table, _cfg(epochs=1), tmp_path, progress=False, waves=waves)
    assert list(hist.columns) == ["epoch", "loss", "acc", "band_acc", "lr", "seconds"]
    assert len(hist) == 1 and np.isfinite(hist["loss"]).all()
    loaded = encoder.load_beats(tmp_path / "encoder.pt")
    assert list(loaded.state_dict().keys()) == list(_tiny().state_dict().keys())
    asp, band = heads.load_heads(tmp_path / "heads.pt")
    grid = torch.randn(2, 3, 8, loaded.cfg.encoder_embed_dim)
    assert asp(grid).shape == (2, 16) and band(grid).shape == (2, 8, loaded.cfg.encoder_embed_dim)
    # the saved cfg is the loaded one (training-time switches restored)
    assert torch.load(tmp_path / "encoder.pt", weights_only=True)["cfg"] == \
        torch.load(_save(_tiny(), tmp_path / "ref.pt"), weights_only=True)["cfg"]


def test_long_clips_train_in_micro_batches(tiny_data, tmp_path):
    """Whole clips over ``max_batch_seconds`` of padded audio train as micro-batches: no
    forward pass holds more, and the weights equal the one-pass run (gradients add up)."""
    table, (waves, row_of), _ = tiny_data
    waves = [w if i % 5 else np.tile(w, 4) for i, w in enumerate(waves)]  # some 4x longer
    cfg = _cfg(mode="full", epochs=1, crop_seconds=None, specaugment=False, mixup=False,
               utt_loss_weight=0.0)
    whole = _tiny()
    full = training.adapt(whole, table, cfg, tmp_path / "whole", progress=False,
                          waves=(waves, row_of))
    seen = []
    model = _tiny()
    plain = model.extract

    def recording(wav, padding_mask=None, **kw):
        seen.append(tuple(wav.shape))
        return plain(wav, padding_mask=padding_mask, **kw)

    model.extract = recording
    bound = 3.0
    chunked = training.adapt(model, table, dataclasses.replace(cfg, max_batch_seconds=bound),
                             tmp_path / "chunked", progress=False, waves=(waves, row_of))
    assert any(b < cfg.batch_size for b, _ in seen)
    assert all(b == 1 or b * n <= bound * 16000 for b, n in seen)
    np.testing.assert_allclose(chunked["loss"], full["loss"], rtol=1e-6)
    # the key projections' biases have no true gradient (a softmax ignores them): Adam turns
    # rounding noise there into steps of ~lr / 100, hence the absolute tolerance
    for (name, a), b in zip(whole.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4, msg=name)


def _save(model, path):
    encoder.save_beats(model, path)
    return path


class _Crash(RuntimeError):
    pass


def _crash_after_first(epoch, history):
    if epoch == 1:
        raise _Crash


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_resume_after_interruption_gives_identical_weights(tiny_data, tmp_path, mode):
    table, waves, _ = tiny_data
    cfg = _cfg(mode=mode)
    straight = _tiny()
    h1 = training.adapt(straight, table, cfg, tmp_path / "a", progress=False, waves=waves)

    with pytest.raises(_Crash):
        training.adapt(_tiny(), table, cfg, tmp_path / "b", progress=False, waves=waves,
                callback=_crash_after_first)
    assert not (tmp_path / "b" / "encoder.pt").exists()
    resumed = _tiny()  # a fresh process would rebuild the same starting encoder
    h2 = training.adapt(resumed, table, cfg, tmp_path / "b", progress=False, waves=waves)

    sa = torch.load(tmp_path / "a" / "encoder.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "encoder.pt", weights_only=True)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ha = torch.load(tmp_path / "a" / "heads.pt", weights_only=True)
    hb = torch.load(tmp_path / "b" / "heads.pt", weights_only=True)
    for part in ("asp", "band"):
        assert all(torch.equal(ha[part]["state"][k], hb[part]["state"][k]) for k in ha[part]["state"])
    cols = ["epoch", "loss", "acc", "band_acc", "lr"]
    pd.testing.assert_frame_equal(h1[cols], h2[cols])

    with pytest.raises(ValueError, match="other settings"):
        training.adapt(_tiny(), table, _cfg(mode=mode, lr=1e-4), tmp_path / "b", progress=False,
                waves=waves)


def test_config_presets_and_device():
    demo, dcase = training.AdaptConfig.demo(), training.AdaptConfig.dcase()
    assert demo.mode in lora.MODES and dcase.mode == "lora" and dcase.device == "cuda"
    assert training.AdaptConfig.demo(epochs=3).epochs == 3
    with pytest.raises(ValueError):
        training.AdaptConfig(mode="nope")
    from asdlib import devices

    assert devices.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(devices.DeviceError, match="no CUDA device is visible"):
            devices.resolve_device("cuda")
        assert devices.resolve_device("auto").type == "cpu"
    assert "not a torch device" in devices.device_problem("gpu0")


def test_pretrain_script_writes_a_loadable_float16_checkpoint(tiny_data, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "pretrain_small.py"
    spec = importlib.util.spec_from_file_location("pretrain_small", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, _, root = tiny_data
    hist = mod.pretrain_small([root], tmp_path / "p.pt", config="tiny", epochs=2,
                              batch_size=8, crop_seconds=1.0, progress=False, gain_db=6.0,
                              zero_mean=True, visible_weight=1.0, summary_weight=1.0)
    assert len(hist) == 2 and hist[1]["loss"] < hist[0]["loss"]
    ckpt = torch.load(tmp_path / "p.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    model = encoder.load_beats(tmp_path / "p.pt")
    assert list(model.state_dict()) == list(_tiny().state_dict())
    assert model.patch_embedding.weight.float().mean(dim=(2, 3)).abs().max() < 1e-3
    both = mod.pretrain_small([root], tmp_path / "b.pt", config="tiny", epochs=1,
                              batch_size=8, crop_seconds=1.0, progress=False,
                              channel="both")
    from asdlib.data import scan_dataset

    n_train = len(training.training_rows(scan_dataset(root)))
    assert hist[0]["examples"] == n_train and both[0]["examples"] == 2 * n_train


def test_small_asset_is_a_plain_small_beats():
    """The shipped start of the embedded default (scripts/pretrain_small.py) loads strictly."""
    model = small.starting_encoder("small")
    ref = encoder.build_beats("small", seed=0)
    assert list(model.state_dict()) == list(ref.state_dict())
    assert model.cfg == ref.cfg
    assert small.SMALL_ASSET.stat().st_size < 10 * 2**20
    w = model.state_dict()["patch_embedding.weight"]
    assert not torch.equal(w, ref.state_dict()["patch_embedding.weight"])  # trained, not init
    assert w.mean(dim=(2, 3)).abs().max() < 1e-3  # zero-mean patch filters
    tiny = small.starting_encoder("tiny")  # no asset: random init
    assert list(tiny.state_dict()) == list(_tiny().state_dict())


def test_zero_mean_patches_and_reconstruction_term(tiny_data, tmp_path):
    """zero_mean_patches keeps the patch filters zero-mean through training; the
    reconstruction term adds to the loss and changes the weights."""
    table, waves, _ = tiny_data
    plain = _tiny()
    h0 = training.adapt(plain, table, _cfg(epochs=1), tmp_path / "a", progress=False, waves=waves)
    kept = _tiny()
    h1 = training.adapt(kept, table, _cfg(epochs=1, zero_mean_patches=True, recon_weight=5.0,
                                   gain_db=6.0), tmp_path / "b", progress=False, waves=waves)
    assert plain.patch_embedding.weight.mean(dim=(2, 3)).abs().max() > 1e-4
    assert kept.patch_embedding.weight.mean(dim=(2, 3)).abs().max() < 1e-6
    assert h1["loss"].iloc[0] > h0["loss"].iloc[0]
    fb = small.fbank_patches(kept, torch.from_numpy(waves[0][0][None]))
    assert fb.shape[2:] == (8, 256) and abs(float(fb.mean())) < 1e-5  # level-free target
    wav = torch.from_numpy(waves[0][0][None])
    assert torch.equal(small.fbank_patches(kept, wav, kept.extract(wav).fbank), fb)


def _spectrum_patches(spectra: torch.Tensor, n_time: int = 3) -> torch.Tensor:
    """(B, 128) mean spectra -> (B, T', 8, 256) patches whose mean over time is that spectrum."""
    b = spectra.shape[0]
    bands = spectra.reshape(b, 1, 8, 1, 16).expand(b, n_time, 8, 16, 16)
    return bands.reshape(b, n_time, 8, 256)


def test_spectrum_geometry_loss_is_one_minus_the_distance_correlation():
    g = torch.Generator().manual_seed(0)
    spectra = torch.randn(6, 128, generator=g)
    patches = _spectrum_patches(spectra)
    # utterance vectors whose cosine distances grow with the spectral distances: loss near 0
    aligned = torch.cat([torch.ones(6, 1) * 30.0, spectra], dim=1)
    assert float(small.spectrum_geometry_loss(aligned, patches)) < 0.05
    # distances unrelated to the spectra: loss near 1; the loss is scale-free
    other = torch.randn(6, 64, generator=g)
    loss = float(small.spectrum_geometry_loss(other, patches))
    assert 0.5 < loss < 1.5
    assert float(small.spectrum_geometry_loss(3.0 * other, patches)) == pytest.approx(loss, abs=1e-5)
    # the exact value on a hand-made case: spectral distances 1, 2, 1 vs utterance ones
    spec = torch.zeros(3, 128)
    spec[1, 0], spec[2, 0] = 1.0, 2.0
    utt = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), dim=1)
    d_utt = torch.tensor([1 - 0.5 ** 0.5, 1.0, 1 - 0.5 ** 0.5])
    d_spec = torch.tensor([1.0, 2.0, 1.0])
    corr = torch.corrcoef(torch.stack([(d_utt + 1e-4).log(), (d_spec + 1e-4).log()]))[0, 1]
    assert float(small.spectrum_geometry_loss(utt, _spectrum_patches(spec))) == pytest.approx(
        1 - float(corr), abs=1e-5)
    # padded time patches do not count
    padded = _spectrum_patches(spec, n_time=4)
    padded[:, 3] = 1e3
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[:, 3] = False
    assert float(small.spectrum_geometry_loss(utt, padded, valid)) == pytest.approx(
        1 - float(corr), abs=1e-5)


def test_spectrum_term_trains(tiny_data, tmp_path):
    table, waves, _ = tiny_data
    h0 = training.adapt(_tiny(), table, _cfg(epochs=1, mixup=False), tmp_path / "a", progress=False,
                 waves=waves)
    model = _tiny()
    h1 = training.adapt(model, table, _cfg(epochs=1, mixup=False, spectrum_weight=2.0), tmp_path / "b",
                 progress=False, waves=waves)
    assert h1["loss"].iloc[0] > h0["loss"].iloc[0]  # the term adds to the loss

