"""Tests of the synthetic DCASE-2026-layout dataset (asdlib.synth).

One `tiny` dataset (all seven machines, ~3 s to generate) is shared by the layout, format
and detectability tests; determinism and resume tests use an even smaller custom preset,
as do the evaluation split (five 2026 evaluation machines, unlabelled test names, ground
truth on the side) and the mono year set (2025 names, near channel only).
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asdlib import synth

NAME_RE = re.compile(r"section_00_(source|target)_(train|test)_(normal|anomaly)_(\d{4})_(.+)\.wav")
MINI = synth.Preset(n_source_train=3, n_target_train=2, n_test_per_cell=3, seconds=1.0)
MINI_MACHINES = ["fan", "valveEmu"]


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative posix path -> hex)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _wav_hashes(root: Path) -> dict[str, str]:
    return {k: v for k, v in _hashes(root).items() if k.endswith(".wav")}


def _raw(root: Path) -> Path:
    return root / "dev_data" / "raw"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_tiny")
    return synth.generate_dataset(root, "tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_mini")
    return synth.generate_dataset(root, MINI, seed=0, machines=MINI_MACHINES, progress=False,
                                  workers=1)


# --------------------------------------------------------------------------- presets, plan

def test_presets():
    assert set(synth.PRESETS) >= {"tiny", "demo", "dcase"}
    dcase = synth.PRESETS["dcase"]
    assert (dcase.n_source_train, dcase.n_target_train, dcase.n_test_per_cell, dcase.seconds,
            dcase.sample_rate) == (990, 10, 50, 10.0, 16000)
    tiny, demo = synth.PRESETS["tiny"], synth.PRESETS["demo"]
    assert tiny.clips_per_machine < demo.clips_per_machine < dcase.clips_per_machine
    assert all(p.sample_rate == 16000 for p in synth.PRESETS.values())
    with pytest.raises(ValueError, match="unknown preset"):
        synth.resolve_preset("huge")


def test_plan_is_independent_of_machine_subset():
    full = {s.relpath: s for s in synth.clip_plan("tiny")}
    part = synth.clip_plan("tiny", ["valveEmu"])
    assert all(full[s.relpath] == s for s in part)
    assert len(full) == 7 * synth.PRESETS["tiny"].clips_per_machine
    with pytest.raises(ValueError, match="unknown machine"):
        synth.clip_plan("tiny", ["pump"])


# --------------------------------------------------------------------------- layout

def test_names_and_counts(tiny):
    p = synth.PRESETS["tiny"]
    raw = _raw(tiny)
    assert sorted(d.name for d in raw.iterdir()) == sorted(synth.MACHINES)
    for machine in synth.MACHINES:
        cells: dict[tuple, list[int]] = {}
        for split in ("train", "test"):
            for wav in (raw / machine / split).iterdir():
                m = NAME_RE.fullmatch(wav.name)
                assert m, wav.name
                domain, name_split, label, index, attributes = m.groups()
                assert name_split == split
                assert split == "test" or label == "normal"
                cells.setdefault((split, domain, label), []).append(int(index))
                if machine == "ToyCarEmu":
                    assert attributes == "noAttribute"
                else:
                    assert "noAttribute" not in attributes
        expected = {("train", "source", "normal"): p.n_source_train,
                    ("train", "target", "normal"): p.n_target_train}
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                expected[("test", domain, label)] = p.n_test_per_cell
        assert {k: len(v) for k, v in cells.items()} == expected, machine
        for key, indices in cells.items():  # indices run 0000.. within each cell
            assert sorted(indices) == list(range(expected[key])), (machine, key)


def test_attribute_csv_matches_names(tiny):
    raw = _raw(tiny)
    for machine in synth.MACHINES:
        with open(raw / machine / "attributes_00.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["file_name", "d1p", "d1v", "d2p", "d2v", "d3p", "d3v"]
        listed = {r[0] for r in rows[1:]}
        on_disk = {f"{machine}/{p.parent.name}/{p.name}"
                   for p in (raw / machine).glob("*/*.wav")}
        assert listed == on_disk
        for row in rows[1:]:
            attributes = NAME_RE.fullmatch(row[0].split("/")[-1]).group(5)
            values = "_".join(v for v in row[1:] if v)
            assert values == attributes, row


def test_source_target_conditions_differ(tiny):
    """The domain shift shows in the attributes (hidden for ToyCarEmu)."""
    for machine in synth.MACHINES:
        if machine == "ToyCarEmu":
            continue
        names = [p.name for p in (_raw(tiny) / machine / "train").glob("*.wav")]
        attrs = {d: {NAME_RE.fullmatch(n).group(5) for n in names if f"_{d}_" in n}
                 for d in ("source", "target")}
        assert attrs["source"].isdisjoint(attrs["target"]), machine


def test_ground_truth_kinds(tiny):
    raw = _raw(tiny)
    for machine in synth.MACHINES:
        with open(raw / machine / "ground_truth_kinds.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        kinds = {r["name"]: r["kind"] for r in rows}
        assert len(kinds) == len(rows)
        test_names = {p.name for p in (raw / machine / "test").glob("*.wav")}
        assert set(kinds) == test_names
        for name, kind in kinds.items():
            if "_anomaly_" in name:
                assert kind in synth.KINDS, (name, kind)
            else:
                assert kind == "normal", (name, kind)
        assert {k for k in kinds.values() if k != "normal"} == set(synth.KINDS), machine


def test_scan_by_asdlib_data(tiny):
    """The dataset passes the project's own layout validation."""
    from asdlib import data

    table = data.scan_dataset(tiny)
    assert len(table) == 7 * synth.PRESETS["tiny"].clips_per_machine
    assert set(data.read_anomaly_kinds(tiny, "fan")) == {"normal", *synth.KINDS}


# --------------------------------------------------------------------------- audio

def test_wav_format(tiny):
    p = synth.PRESETS["tiny"]
    wavs = sorted(_raw(tiny).rglob("*.wav"))
    for wav in wavs[::17]:
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == \
            (16000, 2, p.n_samples, "PCM_16"), wav.name
        data, sr = sf.read(wav, dtype="int16")
        assert data.dtype == np.int16 and data.shape == (p.n_samples, 2)
        assert np.abs(data).max() < 32767, "clipped"
        assert data[:, 0].std() > 100 and data[:, 1].std() > 100
        assert not np.array_equal(data[:, 0], data[:, 1])


def test_far_channel_has_lower_snr(tiny):
    """Machine-to-noise ratio, from the rendered parts, is far lower on the far channel;
    the written channels are (near, far) in that order."""
    p = synth.PRESETS["tiny"]
    plan = synth.clip_plan(p)
    for spec in plan[::23]:
        parts = synth.render_clip(spec, p, seed=0)
        near_snr = 10 * np.log10(np.mean(parts.near_machine ** 2) / np.mean(parts.near_noise ** 2))
        far_snr = 10 * np.log10(np.mean(parts.far_machine ** 2) / np.mean(parts.far_noise ** 2))
        assert near_snr > 20.0 and -0.5 < far_snr < 15.5, (spec.name, near_snr, far_snr)
        data, _ = sf.read(_raw(tiny) / spec.relpath, dtype="float64")
        for channel, machine_part in ((0, parts.near_machine), (1, parts.far_machine)):
            residual = data[:, channel] * 32768 / 32767 - machine_part
            snr = 10 * np.log10(np.mean(machine_part ** 2) / np.mean(residual ** 2))
            assert snr == pytest.approx(near_snr if channel == 0 else far_snr, abs=0.5)


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes(mini, tmp_path):
    again = synth.generate_dataset(tmp_path / "again", MINI, seed=0, machines=MINI_MACHINES,
                                   progress=False, workers=2)
    assert _hashes(mini) == _hashes(again)


def test_clip_does_not_depend_on_what_else_is_generated(mini, tmp_path):
    """One machine alone gives the same files as within a larger run."""
    alone = synth.generate_dataset(tmp_path / "alone", MINI, seed=0, machines=["valveEmu"],
                                   progress=False, workers=1)
    theirs = {k: v for k, v in _hashes(mini).items() if k.startswith("dev_data/raw/valveEmu/")}
    ours = {k: v for k, v in _hashes(alone).items() if k.startswith("dev_data/raw/")}
    assert ours == theirs


def test_other_seed_other_audio(mini, tmp_path):
    other = synth.generate_dataset(tmp_path / "other", MINI, seed=1, machines=MINI_MACHINES,
                                   progress=False, workers=1)
    a, b = _wav_hashes(mini), _wav_hashes(other)
    assert a.keys() == b.keys()  # same names: attributes follow the index, not the seed
    assert all(a[k] != b[k] for k in a)


def test_interrupted_run_resumes_identically(mini, tmp_path):
    import shutil

    root = tmp_path / "resume"
    shutil.copytree(mini, root)
    reference = _hashes(root)
    wavs = sorted(_raw(root).rglob("*.wav"))
    victim, truncated = wavs[3], wavs[-2]
    victim.unlink()  # killed before this clip was renamed into place ...
    stale = victim.with_name(f".{victim.name}.12345.tmp")
    stale.write_bytes(b"RIFF half a file")  # ... leaving its temporary file behind
    truncated.write_bytes(truncated.read_bytes()[:1000])  # a foreign partial file
    (_raw(root) / "fan" / "ground_truth_kinds.csv").unlink()
    assert len(synth.missing_clips(root, MINI, MINI_MACHINES)) == 3

    synth.ensure_dataset(root, MINI, seed=0, machines=MINI_MACHINES, progress=False, workers=1)
    assert not stale.exists()
    assert not list(root.rglob("*.tmp"))
    assert _hashes(root) == reference


def test_complete_dataset_is_not_rendered_again(mini, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("rendered a clip of a complete dataset")

    monkeypatch.setattr(synth.files, "render_clip", fail)  # the writer's reference
    assert synth.ensure_dataset(mini, MINI, seed=0, machines=MINI_MACHINES,
                                progress=False) == mini


def test_other_settings_in_same_root_refused(mini):
    with pytest.raises(synth.SynthError, match="seed"):
        synth.ensure_dataset(mini, MINI, seed=3, machines=MINI_MACHINES, progress=False)
    with pytest.raises(synth.SynthError, match="preset"):
        synth.generate_dataset(mini, "tiny", seed=0, machines=MINI_MACHINES, progress=False)


def test_older_generator_version_is_regenerated(mini, tmp_path):
    import json
    import shutil

    root = tmp_path / "old"
    shutil.copytree(mini, root)
    reference = _hashes(root)
    info = json.loads((root / "synth_info.json").read_text())
    info["generator_version"] = synth.GENERATOR_VERSION - 1
    (root / "synth_info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    leftover = _raw(root) / "fan" / "train" / "section_00_source_train_normal_0099_old_1.wav"
    leftover.write_bytes(b"a clip an older plan had")
    synth.ensure_dataset(root, MINI, seed=0, machines=MINI_MACHINES, progress=False, workers=1)
    assert not leftover.exists()
    assert _hashes(root) == reference


def test_ensure_dataset_checks_a_manifest(mini, tmp_path):
    """The finished files must match the manifest byte for byte; a changed clip is named."""
    from asdlib import data

    table = data.scan_dataset(mini)
    manifest_path = tmp_path / "manifest.csv"
    data.write_manifest(data.build_manifest(table, mini), manifest_path)
    assert synth.ensure_dataset(mini, MINI, seed=0, machines=MINI_MACHINES,
                                manifest=manifest_path, progress=False) == mini
    clip = Path(table["path"].iloc[0])
    original = clip.read_bytes()
    try:
        clip.write_bytes(original[:-2] + bytes([original[-2] ^ 1, original[-1]]))
        with pytest.raises(data.ManifestMismatch, match=clip.name):
            synth.ensure_dataset(mini, MINI, seed=0, machines=MINI_MACHINES,
                                 manifest=manifest_path, progress=False)
    finally:
        clip.write_bytes(original)


def test_variants_shift_faults_and_keep_the_default(tmp_path):
    """The default variant renders exactly what the generator rendered before variants;
    "shifted" draws from the same seed with other fault settings, and a folder of one
    variant refuses another."""
    spec = next(s for s in synth.clip_plan(MINI, ["fan"]) if s.kind == "transient")
    default = synth.render_clip(spec, MINI, seed=3)
    again = synth.render_clip(spec, MINI, seed=3, variant="default")
    np.testing.assert_array_equal(default.near, again.near)
    shifted = synth.render_clip(spec, MINI, seed=3, variant="shifted")
    assert not np.allclose(default.near, shifted.near)
    root = synth.generate_dataset(tmp_path / "s", MINI, seed=0, machines=["fan"],
                                  progress=False, variant="shifted", workers=1)
    with pytest.raises(synth.SynthError, match="variant"):
        synth.ensure_dataset(root, MINI, seed=0, machines=["fan"], progress=False)
    # the same variant again is accepted (its ranges are read back as JSON lists)
    assert synth.ensure_dataset(root, MINI, seed=0, machines=["fan"], progress=False,
                                variant="shifted") == root
    with pytest.raises(ValueError, match="unknown variant"):
        synth.resolve_variant("louder")


def test_seed_uses_stable_hash():
    spec = synth.clip_plan(MINI, ["fan"])[0]
    entropy = synth.clip_seed(7, spec).entropy
    digest = hashlib.sha256(b"fan").digest()[:8]
    assert entropy[:2] == [7, int.from_bytes(digest, "little")]
    with pytest.raises(ValueError):
        synth.clip_seed(-1, spec)


# --------------------------------------------------------------------------- detectability

def _band_frames(x: np.ndarray, n_fft: int = 1024, hop: int = 512, n_bands: int = 24) -> np.ndarray:
    """Log energy of 24 log-spaced bands (100-7600 Hz) per frame: (frames, bands)."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    band = np.digitize(np.fft.rfftfreq(n_fft, 1 / 16000), np.geomspace(100, 7600, n_bands + 1)) - 1
    return np.log(np.stack([power[:, band == b].sum(1) for b in range(n_bands)], axis=1) + 1e-10)


def test_anomalies_are_detectable(tiny):
    """A plain max-over-time band-energy deviation from the training statistics (near
    channel) separates transient and narrowband faults from normal clips, per machine."""
    from sklearn.metrics import roc_auc_score

    raw = _raw(tiny)
    aucs: dict[str, list[float]] = {"transient": [], "narrowband": []}
    for machine in synth.MACHINES:
        train = np.concatenate([_band_frames(sf.read(p, dtype="float32")[0][:, 0])
                                for p in sorted((raw / machine / "train").glob("*.wav"))])
        mean, std = train.mean(0), train.std(0) + 1e-6
        with open(raw / machine / "ground_truth_kinds.csv", newline="") as handle:
            kinds = {r["name"]: r["kind"] for r in csv.DictReader(handle)}
        peak, sustained = {}, {}
        for name in kinds:
            z = (_band_frames(sf.read(raw / machine / "test" / name, dtype="float32")[0][:, 0])
                 - mean) / std
            peak[name] = (z - np.median(z, axis=0)).max()  # sudden rise over the clip's own level
            sustained[name] = ((z[:-2] + z[1:-1] + z[2:]) / 3).max()
        for kind, score in (("transient", peak), ("narrowband", sustained)):
            names = [n for n, k in kinds.items() if k in ("normal", kind)]
            aucs[kind].append(roc_auc_score([kinds[n] == kind for n in names],
                                            [score[n] for n in names]))
    for kind, values in aucs.items():
        assert np.mean(values) > 0.6, (kind, np.round(values, 2))


def test_concurrent_generation_refused(mini):
    import json
    import socket

    from asdlib import locking

    lock = mini / synth.LOCK_FILE
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "then",
                                "command": "another generator"}))  # pid 1 is alive
    try:
        with pytest.raises(locking.LockHeld, match="in use by pid 1"):
            synth.generate_dataset(mini, MINI, seed=0, machines=MINI_MACHINES, progress=False)
    finally:
        lock.unlink()
    lock.write_text(json.dumps({"pid": 999999999, "host": socket.gethostname()}))
    synth.generate_dataset(mini, MINI, seed=0, machines=MINI_MACHINES, progress=False)
    assert not lock.exists()  # a dead generator's lock was taken over, then released


# --------------------------------------------------------------------------- evaluation split

EVAL_NAME_RE = re.compile(r"section_00_(\d{4})\.wav")


@pytest.fixture(scope="module")
def evalset(tmp_path_factory) -> Path:
    """MINI, development fan plus the five evaluation machines."""
    root = tmp_path_factory.mktemp("synth_eval")
    return synth.generate_dataset(root, MINI, seed=0, machines=["fan", *synth.EVAL_MACHINES],
                                  datasets=("dev", "eval"), progress=False, workers=1)


def _eval_raw(root: Path) -> Path:
    return root / "eval_data" / "raw"


def _truth(root: Path, folder: str, machine: str) -> list[list[str]]:
    path = root / synth.GROUND_TRUTH_DIR / folder / synth.GROUND_TRUTH_FILE.format(machine=machine)
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_eval_plan_and_machines():
    assert len(synth.EVAL_MACHINES) == 5
    assert set(synth.EVAL_MACHINES).isdisjoint(synth.MACHINES)
    plan = synth.clip_plan(MINI, dataset="eval")
    assert len(plan) == 5 * MINI.clips_per_machine
    assert {s.machine for s in plan} == set(synth.EVAL_MACHINES)
    assert plan == synth.clip_plan(MINI, dataset="eval")  # no seed, no randomness in names
    with pytest.raises(ValueError, match="unknown machine"):
        synth.clip_plan(MINI, ["fan"], dataset="eval")
    with pytest.raises(ValueError, match="unknown machine"):
        synth.generate_dataset("/nonexistent/never", MINI, machines=["ToyDrone"])  # dev only
    with pytest.raises(ValueError, match="datasets"):
        synth.missing_clips("/nonexistent/never", MINI, datasets=("test",))


def test_eval_test_clips_are_unlabelled(evalset):
    """Test clips are named section_00_<iiii>.wav, indices 0000.. without a gap; no csv in
    the machine folder tells their domain, label or kind."""
    raw = _eval_raw(evalset)
    assert sorted(d.name for d in raw.iterdir()) == sorted(synth.EVAL_MACHINES)
    for machine in synth.EVAL_MACHINES:
        names = [p.name for p in (raw / machine / "test").iterdir()]
        matches = [EVAL_NAME_RE.fullmatch(n) for n in names]
        assert all(matches), names
        assert sorted(int(m.group(1)) for m in matches) == list(range(4 * MINI.n_test_per_cell))
        assert sorted(p.name for p in (raw / machine).iterdir()) == \
            ["attributes_00.csv", "test", "train"]
        with open(raw / machine / "attributes_00.csv", newline="") as handle:
            listed = [r[0] for r in csv.reader(handle)][1:]
        assert all(name.startswith(f"{machine}/train/") for name in listed)


def test_eval_training_clips_are_like_dev(evalset):
    """Training clips: development names and counts, the same WAV format, an attributes
    csv that matches the names, a source -> target shift in the attributes (hidden for
    BlowerDustCollector)."""
    from asdlib import data

    raw = _eval_raw(evalset)
    table = data.scan_dataset(evalset, datasets=("eval",))  # the layout validation passes
    assert len(table) == 5 * MINI.clips_per_machine
    assert table.loc[table["split"] == "test", "label"].isna().all()
    for machine in synth.EVAL_MACHINES:
        wavs = sorted((raw / machine / "train").glob("*.wav"))
        groups = [NAME_RE.fullmatch(p.name).groups() for p in wavs]
        assert {g[1:3] for g in groups} == {("train", "normal")}
        counts = {d: sum(g[0] == d for g in groups) for d in ("source", "target")}
        assert counts == {"source": MINI.n_source_train, "target": MINI.n_target_train}
        attrs = {d: {g[4] for g in groups if g[0] == d} for d in ("source", "target")}
        if synth.model_for(machine).hidden:
            assert attrs == {"source": {"noAttribute"}, "target": {"noAttribute"}}
        else:
            assert attrs["source"].isdisjoint(attrs["target"]), machine
        for wav in wavs[::3]:
            info = sf.info(wav)
            assert (info.samplerate, info.channels, info.frames, info.subtype) == \
                (16000, 2, MINI.n_samples, "PCM_16"), wav.name
            pcm, _ = sf.read(wav, dtype="int16")
            assert 100 < pcm[:, 0].std() and np.abs(pcm).max() < 32767, wav.name


def test_eval_ground_truth_covers_every_test_clip(evalset):
    """Four headerless files per machine (labels, domains, development-style names, kinds)
    list every test clip exactly once, in name order; both labels and both domains occur,
    each (domain, label) cell with its planned count; the files agree with each other and
    the official evaluator's reader reads them."""
    from asdlib import data, metrics

    for machine in synth.EVAL_MACHINES:
        on_disk = sorted(p.name for p in (_eval_raw(evalset) / machine / "test").glob("*.wav"))
        rows = {folder: _truth(evalset, folder, machine) for folder in synth.GROUND_TRUTH_FOLDERS}
        for folder, folder_rows in rows.items():
            assert [r[0] for r in folder_rows] == on_disk, (machine, folder)
            assert all(len(r) == 2 for r in folder_rows), (machine, folder)
        label = {n: v for n, v in rows["ground_truth_data"]}
        domain = {n: v for n, v in rows["ground_truth_domain"]}
        kind = {n: v for n, v in rows["ground_truth_kinds"]}
        assert set(label.values()) == set(domain.values()) == {"0", "1"}
        cells = {}
        for name, full in rows["ground_truth_attributes"]:
            clip = data.parse_clip_name(full)
            assert (clip.split, clip.label, clip.domain) == \
                ("test", "anomaly" if label[name] == "1" else "normal",
                 "target" if domain[name] == "1" else "source"), (machine, name, full)
            assert (kind[name] in synth.KINDS) == (label[name] == "1"), (machine, name)
            assert kind[name] in synth.KINDS or kind[name] == "normal"
            cells[(clip.domain, clip.label)] = cells.get((clip.domain, clip.label), 0) + 1
        assert cells == {(d, lab): MINI.n_test_per_cell
                         for d in ("source", "target") for lab in ("normal", "anomaly")}
        gt = metrics.read_ground_truth(evalset / synth.GROUND_TRUTH_DIR, machine)
        assert sorted(gt["name"]) == on_disk and gt["label"].sum() == 2 * MINI.n_test_per_cell


def test_eval_order_mixes_domains_and_labels():
    """The public order is a seeded shuffle: it is not the plan's (domain, label) order,
    and the first half of the names holds both domains and both labels."""
    for machine in synth.EVAL_MACHINES:
        tests = [s for s in synth.clip_plan("tiny", [machine], "eval") if s.split == "test"]
        order = [s.eval_index for s in tests]
        assert sorted(order) == list(range(len(tests))) and order != sorted(order)
        first_half = [s for s in tests if s.eval_index < len(tests) // 2]
        assert {s.domain for s in first_half} == {"source", "target"}, machine
        assert {s.label for s in first_half} == {"normal", "anomaly"}, machine
        assert all(s.labelled_name != s.name for s in tests)


def test_eval_same_seed_same_bytes(evalset, tmp_path):
    """The evaluation split regenerates byte for byte (another worker count, without the
    development machine); another seed changes every clip but no name."""
    again = synth.generate_dataset(tmp_path / "again", MINI, seed=0, datasets=("eval",),
                                   progress=False, workers=2)
    ours = {k: v for k, v in _hashes(evalset).items() if k.startswith("eval_")}
    assert ours == {k: v for k, v in _hashes(again).items() if k.startswith("eval_")}
    other = synth.generate_dataset(tmp_path / "other", MINI, seed=1, machines=["Sander"],
                                   datasets=("eval",), progress=False, workers=1)
    a = {k: v for k, v in _wav_hashes(evalset).items() if "/Sander/" in k}
    b = _wav_hashes(other)
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


def test_new_models_render_deterministically():
    """Each new sound model renders the same samples from the same seed, others from
    another one, in both domains and for every fault kind."""
    for machine, dataset, year in [*((m, "eval", 2026) for m in synth.EVAL_MACHINES),
                                   ("ToyTrain", "dev", 2025)]:
        plan = synth.clip_plan(MINI, [machine], dataset, year)
        picked = {(s.domain, s.kind): s for s in plan if s.split == "test"}
        assert len(picked) == 8, machine
        for spec in picked.values():
            a = synth.render_clip(spec, MINI, seed=5)
            b = synth.render_clip(spec, MINI, seed=5)
            np.testing.assert_array_equal(a.near, b.near)
            np.testing.assert_array_equal(a.far, b.far)
            assert np.all(np.isfinite(a.near)) and a.near.shape == (MINI.n_samples,)
            assert not np.allclose(a.near, synth.render_clip(spec, MINI, seed=6).near)


def test_eval_resumes_and_adds_to_a_dev_root(mini, evalset, tmp_path):
    """A development root gains the evaluation split without a changed byte or info key of
    its own; a lost evaluation clip and ground-truth file are listed and restored."""
    import json
    import shutil

    root = tmp_path / "grow"
    shutil.copytree(mini, root)
    info = json.loads((root / synth.INFO_FILE).read_text())
    assert set(info) == {"generator", "generator_version", "seed", "preset", "machines_complete"}
    dev_before = _hashes(root / "dev_data")
    synth.ensure_dataset(root, MINI, seed=0, machines=[*MINI_MACHINES, "Sander"],
                         datasets=("dev", "eval"), progress=False, workers=1)
    assert _hashes(root / "dev_data") == dev_before
    info = json.loads((root / synth.INFO_FILE).read_text())
    assert info["eval_machines_complete"] == ["Sander"]
    theirs = {k: v for k, v in _hashes(evalset).items() if "Sander" in k}
    assert {k: v for k, v in _hashes(root).items() if "Sander" in k} == theirs

    clip = _eval_raw(root) / "Sander" / "test" / "section_00_0005.wav"
    clip.unlink()
    truth = synth.ground_truth_paths(root, "Sander")[1]
    truth.unlink()
    assert synth.missing_clips(root, MINI, ["Sander"], datasets=("eval",)) == \
        ["eval_data/raw/Sander/test/section_00_0005.wav",
         truth.relative_to(root).as_posix()]
    synth.ensure_dataset(root, MINI, seed=0, machines=["Sander"], datasets=("eval",),
                         progress=False, workers=1)
    assert {k: v for k, v in _hashes(root).items() if "Sander" in k} == theirs


# --------------------------------------------------------------------------- mono year sets

def test_mono_year_set(mini, tmp_path):
    """year=2025: the DCASE 2025 development names, mono clips (the near channel), in the
    same layout; the loaders read them; the 2025 fan is the 2026 fan's near channel."""
    from asdlib import audio, data

    machines = ["fan", "ToyTrain", "bearing"]
    assert set(synth.dataset_machines("dev", 2025)) == \
        {"bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"}
    root = synth.generate_dataset(tmp_path / "y2025", MINI, seed=0, machines=machines,
                                  year=2025, progress=False, workers=1)
    raw = _raw(root)
    assert sorted(p.name for p in raw.iterdir()) == sorted(machines)
    table = data.scan_dataset(root)
    assert len(table) == 3 * MINI.clips_per_machine
    assert set(data.read_anomaly_kinds(root, "bearing")) == {"normal", *synth.KINDS}
    manifest = data.build_manifest(table, root)
    assert set(manifest["channels"]) == {1}
    for wav in sorted(raw.rglob("*.wav"))[::7]:
        assert NAME_RE.fullmatch(wav.name), wav.name
        info = sf.info(wav)
        assert (info.channels, info.frames, info.subtype) == (1, MINI.n_samples, "PCM_16")
    wav = sorted((raw / "ToyTrain" / "test").glob("*.wav"))[0]
    wave, sr = audio.load_clip(wav)
    assert wave.shape == (MINI.n_samples,) and sr == 16000
    with pytest.raises(audio.AudioError):
        audio.load_clip(wav, channel="far")
    for wav in sorted((raw / "fan").rglob("*.wav")):
        mono, _ = sf.read(wav, dtype="int16")
        stereo, _ = sf.read(_raw(mini) / "fan" / wav.parent.name / wav.name, dtype="int16")
        np.testing.assert_array_equal(mono, stereo[:, 0])
    with pytest.raises(synth.SynthError, match="year"):
        synth.ensure_dataset(root, MINI, seed=0, machines=["fan"], progress=False)
    with pytest.raises(ValueError, match="no eval split"):
        synth.generate_dataset(tmp_path / "never", MINI, year=2025, datasets=("dev", "eval"))
    with pytest.raises(ValueError, match="unknown year"):
        synth.clip_plan(MINI, year=2019)
