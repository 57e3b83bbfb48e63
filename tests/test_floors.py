"""The encoder-free floors: frame features, the frame-level kNN against brute force, and a
click that the frame floor finds while the clip mean hides it."""

import numpy as np
import pandas as pd
import soundfile as sf

from asdlib import floors

SR = 16000


def _table(root, n_train=6, n_test=4, click_at=None, seed=0):
    """Noise clips of 1 s (one machine); test clip ``click_at`` gets a 10 ms click."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            wave = 0.05 * rng.standard_normal(SR)
            label = "normal"
            if split == "test" and i == click_at:
                wave[8000:8160] += 0.8 * np.hanning(160)
                label = "anomaly"
            domain = "source" if i % 2 == 0 else "target"
            name = f"section_00_{domain}_{split}_{label}_{i:04d}_a_1.wav"
            sf.write(root / split / name, wave.astype(np.float32), SR, subtype="FLOAT")
            rows.append(dict(path=str(root / split / name), name=name, machine="fan",
                             split=split, domain=domain, label=label,
                             kind="transient" if label == "anomaly" else "normal"))
    return pd.DataFrame(rows)


def test_frame_features_stack_the_neighbours():
    wave = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    cfg = floors.FrameFloorConfig(n_mels=16, context=1)
    feats = floors.frame_features(wave, SR, cfg)
    mel = floors.log_mel(wave, SR, 16)
    assert feats.shape == (len(mel), 48)
    np.testing.assert_array_equal(feats[:, 16:32], mel)           # the frame itself
    np.testing.assert_array_equal(feats[1:, :16], mel[:-1])       # the frame before
    np.testing.assert_array_equal(feats[:-1, 32:], mel[1:])       # the frame after
    np.testing.assert_array_equal(feats[0, :16], mel[0])          # edges repeated


def test_frame_floor_equals_brute_force(tmp_path):
    table = _table(tmp_path, click_at=1)
    cfg = floors.FrameFloorConfig(n_mels=16, top=5)
    got = floors.frame_floor(table, cfg=cfg, progress=False).set_index("name")["score"]
    train = [floors.frame_features(sf.read(p, dtype="float32")[0], SR, cfg)
             for p in table.loc[table["split"] == "train", "path"]]
    bank = np.concatenate(train)
    mean, std = bank.mean(0), bank.std(0) + 1e-5
    bank = (bank - mean) / std
    for row in table[table["split"] == "test"].itertuples():
        q = (floors.frame_features(sf.read(row.path, dtype="float32")[0], SR, cfg) - mean) / std
        d = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1)).min(1)
        np.testing.assert_allclose(got[row.name], np.sort(d)[-5:].mean(), rtol=1e-4)


def test_a_short_click_is_seen_by_the_frame_floor_not_the_clip_mean(tmp_path):
    table = _table(tmp_path, n_test=6, click_at=3, seed=1)
    frame = floors.frame_floor(table, progress=False).set_index("name")["score"]
    clip = floors.clip_floor(table, progress=False)
    clip = clip[~clip["is_self"]].set_index("name")["score"]
    click = table.loc[table["label"] == "anomaly", "name"].iloc[0]
    assert frame.idxmax() == click
    # in 1 s of noise a 10 ms click stands 16 % above every normal clip's frames; the clip
    # mean (cosine distance ~3e-5) does not single it out
    assert frame[click] > 1.1 * frame.drop(click).max()
    z_frame = (frame[click] - frame.drop(click).mean()) / frame.drop(click).std()
    z_clip = (clip[click] - clip.drop(click).mean()) / clip.drop(click).std()
    assert z_frame > 10 and z_clip < 3


def test_a_bank_over_the_limit_is_a_seeded_subset(tmp_path):
    table = _table(tmp_path, click_at=0)
    small = floors.FrameFloorConfig(n_mels=16, max_bank_frames=50, seed=3)
    a = floors.frame_floor(table, cfg=small, progress=False)["score"].to_numpy()
    b = floors.frame_floor(table, cfg=small, progress=False)["score"].to_numpy()
    full = floors.frame_floor(table, cfg=floors.FrameFloorConfig(n_mels=16),
                              progress=False)["score"].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert (a >= full - 1e-5).all()  # fewer bank frames: never nearer
