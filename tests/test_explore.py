"""The run explorer (`asdlib.explore`) on a small fake run: tables, thresholds, metrics,
worst clips, a clip's scores and maps, and the widget driven by ``.value`` assignments."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asdlib import explore, fusion, metrics

SR = 16000
CLIP_SECONDS = 0.5
#: Test clips per machine: (domain, label, kind), twice each.
TEST_GROUPS = [("source", "normal", "normal"), ("target", "normal", "normal"),
               ("source", "anomaly", "transient"), ("target", "anomaly", "narrowband")] * 2
BRANCHES = {"03_subband": ["utt_knn", "adabeam"], "04_patch": ["fine_broad", "fine_selective"],
            "05_ldn": ["utt_knn+ldn"]}
SYSTEMS = {"System 1": ["fine_selective"], "System 4": ["adabeam", "utt_knn"]}
MACHINES = ("fan", "pump")
N_BANK = 6
N_TIME = int(CLIP_SECONDS * 100) // 16  # valid map patches of a clip (16 frames of 10 ms)


def write_fake_run(results: Path, name: str = "fake", seed: int = 0,
                   labelled: bool = True) -> Path:
    """A finished run under ``results/<name>``, as the pipeline writes it, over stereo wavs
    in ``results/../data_<name>``: two machines of 8 test clips and 6 bank clips each,
    five branches in three score tables, two fused systems, maps of two branches.
    ``labelled`` False: an evaluation set's run (test clips without label and kind)."""
    rng = np.random.default_rng(seed)
    run_dir, data = results / name, results.parent / f"data_{name}"
    clips, scores, maps = [], [], {}
    for m, machine in enumerate(MACHINES):
        test_names = []
        for i, (domain, label, kind) in enumerate(TEST_GROUPS):
            clip = f"section_00_{domain}_test_{label}_{i:04d}_a_{m}.wav"
            path = Path("dev_data/raw") / machine / "test" / clip
            (data / path).parent.mkdir(parents=True, exist_ok=True)
            t = np.arange(int(CLIP_SECONDS * SR)) / SR
            near = 0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t)
            far = 0.5 * near + 0.05 * rng.standard_normal(len(t))
            sf.write(data / path, np.stack([near, far], axis=1), SR)
            clips.append({"path": path.as_posix(), "name": clip, "machine": machine,
                          "split": "test", "domain": domain, "label": label, "kind": kind})
            test_names.append(clip)
        bank_names = [f"section_00_source_train_normal_{i:04d}_a_{m}.wav" for i in range(N_BANK)]
        for clip in bank_names:
            clips.append({"path": f"dev_data/raw/{machine}/train/{clip}", "name": clip,
                          "machine": machine, "split": "train", "domain": "source",
                          "label": "normal", "kind": "normal"})
        for step, branches in BRANCHES.items():
            for branch in branches:
                for clip, (domain, label, kind) in zip(test_names, TEST_GROUPS):
                    score = rng.normal(1.0 if label == "anomaly" else 0.0, 0.7)
                    scores.append((step, {"machine": machine, "name": clip, "branch": branch,
                                          "score": score, "is_self": False, "domain": domain,
                                          "label": label, "kind": kind}))
                for clip in bank_names:
                    scores.append((step, {"machine": machine, "name": clip, "branch": branch,
                                          "score": rng.normal(0.0, 0.5), "is_self": True}))
        maps[machine] = {"names": np.asarray(test_names), "n_time": np.full(8, N_TIME),
                         **{b: rng.random((8, N_TIME + 2, 8)).astype(np.float16)
                            for b in BRANCHES["04_patch"]}}
    table = pd.DataFrame(clips).assign(section="00", index=0, attributes="a", dataset="dev",
                                       sha256="0" * 64)
    rows = pd.DataFrame([r for _, r in scores]).assign(step=[s for s, _ in scores])
    fused, config = fusion.run_systems(fusion.calibrate(rows.drop(columns="step")), SYSTEMS,
                                       grid=(0.5, 1.0))
    if not labelled:  # weights as if frozen from a development run, labels dropped
        table.loc[table["split"] == "test", ["label", "kind"]] = None
        rows.loc[~rows["is_self"], ["label", "kind"]] = None
        fused = fused[fused["selection"] == "dev"].assign(label=None, kind=None)
    (run_dir / "00_data").mkdir(parents=True)
    table.to_csv(run_dir / "00_data" / "clip_table.csv", index=False)
    (run_dir / "config.json").write_text(json.dumps({"run": name, "data_root": str(data)}))
    for step in BRANCHES:
        (run_dir / step).mkdir()
        rows[rows["step"] == step].drop(columns="step").to_csv(run_dir / step / "scores.csv",
                                                                index=False)
    (run_dir / "04_patch" / "maps").mkdir()
    for machine, arrays in maps.items():
        np.savez_compressed(run_dir / "04_patch" / "maps" / f"{machine}.npz", **arrays)
    (run_dir / "06_fusion").mkdir()
    fused.to_csv(run_dir / "06_fusion" / "fused_scores.csv", index=False)
    config.save(run_dir / "06_fusion" / "fusion_config.json")
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_fake_run(tmp_path_factory.mktemp("explore") / "results")


@pytest.fixture(scope="module")
def tables(run_dir):
    return explore.load_run(run_dir)


def test_lists_finished_runs_and_caches_their_tables(run_dir, tables):
    (run_dir.parent / "unfinished" / "00_data").mkdir(parents=True)
    assert explore.list_runs(run_dir.parent) == ["fake"]
    assert explore.load_run(run_dir) is tables
    assert tables.machines == list(MACHINES) and tables.systems == list(SYSTEMS)
    assert tables.sources == list(SYSTEMS) + [b for bs in BRANCHES.values() for b in bs]
    assert set(tables.fused["selection"]) == {"dev"}
    assert all(Path(p).exists() for p in tables.clips.loc[tables.clips["split"] == "test", "path"])
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        explore.load_run(run_dir.parent / "unfinished")


def test_a_rewritten_file_reloads_the_run(tmp_path):
    run_dir = write_fake_run(tmp_path / "results", seed=1)
    first = explore.load_run(run_dir)
    fused = run_dir / "06_fusion" / "fused_scores.csv"
    stat = fused.stat()
    os.utime(fused, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert explore.load_run(run_dir) is not first


def test_source_scores_are_the_runs_rows(run_dir, tables):
    fused = pd.read_csv(run_dir / "06_fusion" / "fused_scores.csv")
    want = fused[(fused["machine"] == "pump") & (fused["system"] == "System 4")
                 & (fused["selection"] == "dev")].sort_values("name")
    got = explore.source_scores(tables, "pump", "System 4")
    assert got["name"].tolist() == want["name"].tolist()
    np.testing.assert_allclose(got["score"], want["score"])
    branch = explore.source_scores(tables, "fan", "fine_broad")
    scores = pd.read_csv(run_dir / "04_patch" / "scores.csv")
    want = scores[(scores["machine"] == "fan") & (scores["branch"] == "fine_broad")
                  & ~scores["is_self"]].sort_values("name")
    np.testing.assert_allclose(branch["score"], want["score"])
    assert list(branch.columns) == ["name", "score", "domain", "label", "kind"]
    with pytest.raises(KeyError, match="neither a system"):
        explore.source_scores(tables, "fan", "no_such_branch")


def test_thresholds_reproduce_the_runs_decisions(run_dir, tables):
    fused = tables.fused
    for machine in MACHINES:
        for system in SYSTEMS:
            rows = fused[(fused["machine"] == machine) & (fused["system"] == system)]
            threshold = explore.decision_threshold(tables, machine, system)
            assert ((rows["score"] > threshold).astype(int) == rows["decision"]).all()
            # the boundary visible in the decisions brackets it
            assert rows.loc[rows["decision"] == 0, "score"].max() <= threshold
            flagged = rows.loc[rows["decision"] == 1, "score"].to_numpy()
            assert np.min(flagged, initial=np.inf) > threshold
    own = tables.scores
    own = own[(own["machine"] == "fan") & (own["branch"] == "adabeam") & own["is_self"]]
    assert explore.decision_threshold(tables, "fan", "adabeam") == pytest.approx(
        np.percentile(own["score"], fusion.DECISION_PERCENTILE))


def test_metrics_are_the_official_ones(tables):
    rows = explore.source_scores(tables, "fan", "System 1")
    want = metrics.machine_metrics(rows["label"], rows["score"], rows["domain"])
    got = explore.score_metrics(rows)
    assert (got["AUC_s"], got["AUC_t"], got["pAUC"]) == (want["auc_s"], want["auc_t"], want["pauc"])
    assert got["hmean"] == pytest.approx(metrics.hmean(list(want.values())))
    table = explore.metrics_table(tables, "fan")
    assert list(table.index) == tables.sources
    assert table.loc["System 1", "AUC_t"] == want["auc_t"]
    threshold = explore.decision_threshold(tables, "fan", "System 1")
    normal = rows[rows["label"] == "normal"]
    assert table.loc["System 1", "false alarms"] == (normal["score"] > threshold).sum()
    assert table.loc["System 1", "misses"] == (rows["label"].eq("anomaly")
                                               & rows["score"].le(threshold)).sum()


def test_worst_clips_are_the_highest_normals_and_lowest_anomalies(tables):
    rows = explore.source_scores(tables, "pump", "utt_knn")
    threshold = float(rows["score"].median())
    worst = explore.worst_clips(rows, threshold, 2)
    alarms, misses = worst[worst["error"] == "false alarm"], worst[worst["error"] == "miss"]
    normal = rows.loc[rows["label"] == "normal", "score"].sort_values(ascending=False)
    anomaly = rows.loc[rows["label"] == "anomaly", "score"].sort_values()
    assert alarms["score"].tolist() == normal.head(2).tolist()
    assert misses["score"].tolist() == anomaly.head(2).tolist()
    assert alarms["wrong"].tolist() == (normal.head(2) > threshold).tolist()
    assert misses["wrong"].tolist() == (anomaly.head(2) <= threshold).tolist()


def test_a_clips_scores_in_every_branch_and_system(run_dir, tables):
    name = explore.source_scores(tables, "fan", "System 1")["name"].iloc[3]
    table = explore.clip_scores(tables, "fan", name)
    assert list(table.index) == tables.sources
    scores = pd.read_csv(run_dir / "03_subband" / "scores.csv")
    want = scores[(scores["machine"] == "fan") & (scores["name"] == name) & ~scores["is_self"]]
    for branch, score in zip(want["branch"], want["score"]):
        assert table.loc[branch, "score"] == pytest.approx(score)
    z = fusion.calibrate(tables.scores[tables.scores["machine"] == "fan"])
    z = z[(z["name"] == name) & ~z["is_self"] & (z["branch"] == "adabeam")]["z"].iloc[0]
    assert table.loc["adabeam", "z"] == pytest.approx(z)
    assert np.isnan(table.loc["System 4", "z"])
    fused = tables.fused
    decision = fused[(fused["machine"] == "fan") & (fused["system"] == "System 4")
                     & (fused["name"] == name)]["decision"].iloc[0]
    assert bool(table.loc["System 4", "flagged"]) == bool(decision)


def test_a_clips_maps_and_path(run_dir, tables):
    name = explore.source_scores(tables, "pump", "System 1")["name"].iloc[5]
    maps = explore.clip_maps(tables, "pump", name)
    saved = np.load(run_dir / "04_patch" / "maps" / "pump.npz")
    i = list(saved["names"]).index(name)
    assert set(maps) == {"fine_broad", "fine_selective"}
    assert maps["fine_selective"].shape == (N_TIME, 8)
    np.testing.assert_array_equal(maps["fine_selective"],
                                  saved["fine_selective"][i, :N_TIME].astype(np.float32))
    path = Path(explore.clip_path(tables, "pump", name))
    assert path.name == name and path.exists()


def test_map_cells_sit_on_their_tokens(tmp_path):
    from asdlib import plots, scoring

    amap = np.arange(5 * 8, dtype=np.float32).reshape(5, 8)
    fig = plots.localisation_maps([np.zeros((200, 128))], [amap], ["clip"], hop_frames=8)
    spectrogram, cells = fig.axes[0].get_images()
    assert spectrogram.get_extent() == pytest.approx([0, 0.48, 0, 128])  # 4 * 8 + 16 frames
    assert cells.get_extent() == pytest.approx([0.04, 0.44, 0, 128])     # step t: 8t+4..8t+12
    fig = plots.localisation_maps([np.zeros((200, 128))], [amap], ["clip"])
    assert fig.axes[0].get_images()[1].get_extent() == pytest.approx([0, 0.8, 0, 128])
    np.savez(tmp_path / "fan.npz", names=np.array(["a"]), n_time=np.array([5]), hop_frames=8)
    np.savez(tmp_path / "pump.npz", names=np.array(["a"]), n_time=np.array([5]))
    assert scoring.map_hop_frames(tmp_path, "fan") == 8
    assert scoring.map_hop_frames(tmp_path, "pump") == 16   # saved before the hop was kept


def outputs_html(out) -> str:
    return "".join(o["data"].get("text/html", "") for o in out.outputs)


def outputs_png(out) -> list:
    return [o["data"]["image/png"] for o in out.outputs if "image/png" in o["data"]]


def test_widget_changes_machine_and_shows_a_picked_clip(tmp_path):
    pytest.importorskip("ipywidgets")
    run_dir = write_fake_run(tmp_path / "results")
    write_fake_run(tmp_path / "results", name="other", seed=2)
    tables = explore.load_run(run_dir)
    view = explore.Explorer(run_dir, source="System 1", n_clips=2)
    assert view.run.options == ("fake", "other") and view.machine.value == "fan"
    assert "AUC_s" in view.summary.value and len(outputs_png(view.plot)) == 1
    assert view.clip.value is None and "<audio" not in outputs_html(view.clip_view)
    assert view.clip_table.value == ""

    view.machine.value = "pump"
    assert "<b>pump</b>" in view.summary.value
    listed = [value for _, value in view.clip.options]
    rows = explore.source_scores(tables, "pump", "System 1")
    assert sorted(listed) == sorted(rows["name"])
    worst = explore.worst_clips(rows, explore.decision_threshold(tables, "pump", "System 1"), 2)
    assert listed[:4] == worst["name"].tolist()
    assert view.clip.options[0][0].startswith("false alarm")

    view.clip.value = listed[2]  # the worst miss
    html = outputs_html(view.clip_view)
    assert html.count("<audio") == 2 and "data:audio/wav;base64" in html and listed[2] in html
    table = view.clip_table.value  # the clip's score in every system and branch
    assert listed[2] in table and all(s in table for s in tables.sources)
    score = explore.clip_scores(tables, "pump", listed[2]).loc["fine_broad", "score"]
    assert f"{score:.3f}" in table
    assert len(outputs_png(view.clip_view)) == 1  # spectrogram with the maps over it
    plot = outputs_png(view.plot)[0]

    near = outputs_png(view.clip_view)[0]
    view.channel.value = "far"
    assert outputs_png(view.clip_view)[0] != near and html.count("<audio") == 2
    view.source.value = "adabeam"
    assert "adabeam" in view.summary.value and view.clip.value == listed[2]
    assert outputs_png(view.plot)[0] != plot

    view.run.value = "other"  # same machine and clip names: the clip stays picked
    other = explore.clip_scores(explore.load_run(run_dir.parent / "other"), "pump", listed[2])
    assert view.clip.value == listed[2]
    assert f"{other.loc['fine_broad', 'score']:.3f}" in view.clip_table.value

    view.machine.value = "fan"  # another machine: nothing picked, no audio
    assert view.clip.value is None and "<audio" not in outputs_html(view.clip_view)


def test_a_run_without_labels(tmp_path):
    """An evaluation set's run: no metrics and no worst clips, but thresholds, flagged
    counts, the clip list by score and a picked clip's players and maps."""
    pytest.importorskip("ipywidgets")
    run_dir = write_fake_run(tmp_path / "results", name="eval", labelled=False)
    tables = explore.load_run(run_dir)
    rows = explore.source_scores(tables, "fan", "System 4")
    assert not explore.labelled(rows) and rows["label"].isna().all()
    assert explore.worst_clips(rows, 0.0, 3).empty
    table = explore.metrics_table(tables, "fan")
    threshold = explore.decision_threshold(tables, "fan", "System 4")
    assert table[["AUC_s", "AUC_t", "pAUC", "hmean"]].isna().all().all()
    assert table.loc["System 4", "flagged"] == (rows["score"] > threshold).sum()
    assert table["false alarms"].isna().all()

    view = explore.Explorer(run_dir)
    assert "no labels" in view.summary.value and len(outputs_png(view.plot)) == 1
    listed = [value for _, value in view.clip.options]
    assert listed == rows.sort_values("score", ascending=False)["name"].tolist()
    view.clip.value = listed[0]
    assert outputs_html(view.clip_view).count("<audio") == 2
    assert "no label" in outputs_html(view.clip_view) and len(outputs_png(view.clip_view)) == 1
