"""End to end: the whole notebook pipeline on the tiny preset, its outputs, step caching,
failure reporting, and nbval against the committed reference notebooks.

The reference notebooks in ``tests/nbval_reference/`` are the executed tiny-run notebooks
(``make nbval-reference`` rewrites them): a change in any checked result table is a
deliberate, reviewed change of those files.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from asdlib import experiment, fingerprint, notebook_check, pipeline
from asdlib.experiment import PROJECT_ROOT, STEPS, RunConfig

RUN = "tiny-ci"
RESULTS = PROJECT_ROOT / "results"
REFERENCE = Path(__file__).parent / "nbval_reference"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run():
    logs = []
    run_dir = pipeline.run_pipeline(RunConfig(run=RUN, preset="tiny"), RESULTS,
                                    log=logs.append)
    return run_dir, logs


def test_every_step_executed(tiny_run):
    run_dir, _ = tiny_run
    state = json.loads((run_dir / "pipeline_state.json").read_text())
    assert list(state) == list(STEPS)
    for step in STEPS:
        assert (run_dir / "notebooks" / f"{step}.ipynb").exists()


def test_table1_has_four_systems_and_both_floors(tiny_run):
    run_dir, _ = tiny_run
    table = pd.read_csv(run_dir / "07_results" / "table1.csv")
    for s in ("System 1", "System 2", "System 3", "System 4", "log-mel clip kNN",
              "log-mel frame kNN", "System 1 (LOMO)"):
        assert s in table.columns
    machines = set(table["machine"]) - {"Overall"}
    assert len(machines) == 7
    overall = table[(table["machine"] == "Overall") & (table["metric"] == "hmean")]
    values = overall[["System 1", "System 2", "System 3", "System 4"]].to_numpy()
    assert ((values > 0) & (values <= 100)).all()


def test_submission_files_in_official_format(tiny_run):
    run_dir, _ = tiny_run
    sub = run_dir / "06_fusion" / "submission" / "system_4"
    files = sorted(p.name for p in sub.iterdir())
    assert len(files) == 14
    scores = pd.read_csv(sub / files[0], header=None)
    assert scores.shape[1] == 2 and scores[0].str.endswith(".wav").all()
    decisions = pd.read_csv(next(sub.glob("decision_result_*")), header=None)
    assert set(decisions[1]) <= {0, 1}


def test_unchanged_steps_are_skipped(tiny_run):
    logs = []
    pipeline.run_pipeline(RunConfig(run=RUN, preset="tiny"), RESULTS, log=logs.append)
    skipped = [line for line in logs if "unchanged, skipped" in line]
    assert len(skipped) == len(STEPS)


def test_failing_step_is_named_and_earlier_work_kept(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    header = (PROJECT_ROOT / "notebooks" / "00_data.py").read_text().split("# %% [markdown]")[0]
    (nb_dir / "00_data.py").write_text(
        header + '# %% tags=["parameters"]\nrun_dir = ".."\n\n# %%\n'
        'from pathlib import Path\nPath(run_dir, "ok.txt").write_text("kept")\n')
    (nb_dir / "01_finetune.py").write_text(
        header + '# %% tags=["parameters"]\nrun_dir = ".."\n\n# %%\nx = 1\n\n# %%\n'
        'raise RuntimeError("deliberate failure")\n')
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nb_dir)
    with pytest.raises(pipeline.StepFailed) as err:
        pipeline.run_pipeline(RunConfig(run="broken", preset="tiny"), tmp_path / "results",
                              steps=("00_data", "01_finetune"), log=lambda *_: None)
    msg = str(err.value)
    assert "01_finetune" in msg and "deliberate failure" in msg and "cell" in msg
    run_dir = tmp_path / "results" / "broken"
    assert (run_dir / "ok.txt").read_text() == "kept"
    state = json.loads((run_dir / "pipeline_state.json").read_text())
    assert "00_data" in state and "01_finetune" not in state


def test_nbval_against_reference_notebooks(tiny_run):
    """Re-execute the reference notebooks that hold exactly portable checked cells
    (``# NBVAL_CHECK_OUTPUT``: counts and names) in the run and let nbval compare their text."""
    run_dir, _ = tiny_run
    refs = sorted(REFERENCE.glob("*.ipynb"))
    assert [p.stem for p in refs] == [s for s in STEPS if s != "08_explore"]
    exact = [p for p in refs if notebook_check.MARK_EXACT in p.read_text()]
    assert exact, "no reference notebook holds an exactly checked cell"
    check_dir = run_dir / "nbval"
    shutil.rmtree(check_dir, ignore_errors=True)
    check_dir.mkdir()
    for ref in exact:
        shutil.copy(ref, check_dir / ref.name)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-kernel-name", pipeline.KERNEL_NAME, "--nbval-cell-timeout", "900",
         "--nbval-sanitize-with", str(REFERENCE / "sanitize.cfg"), str(check_dir)],
        cwd=check_dir, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


# Result tables (``# CHECK_NUMBERS``) are compared numerically. On the tiny preset (4 test
# clips per domain and label) one normal/anomaly pair that swaps order moves a machine's
# AUC by 3.1 points and an Overall AUC (mean of 7 machines) by 0.45; near-tied scores swap
# between CPUs whose matrix kernels sum in another order, and training amplifies it
# (measured: an AMD EPYC (AVX2) against the reference's CPU, 0.45 points at most; an Intel
# Xeon with AMX, 0.45). The tolerance allows 3 such swaps, far below what a change of
# method or a bug moves (several points).
NUMBERS_ATOL = 1.5


def test_result_tables_match_the_references_within_tolerance(tiny_run):
    run_dir, _ = tiny_run
    sanitize = notebook_check.read_sanitize_cfg(REFERENCE / "sanitize.cfg")
    checked = [notebook_check.checked_outputs(p) for p in sorted(REFERENCE.glob("*.ipynb"))]
    assert sum(len(c) for c in checked) >= 7, "the result tables must stay checked"
    problems = notebook_check.compare_run(run_dir, REFERENCE, NUMBERS_ATOL, sanitize)
    assert not problems, "\n".join(problems[:40])


def test_import_closure_follows_asdlib_imports(tmp_path):
    """A step is keyed by the asdlib modules its notebook reaches, lazy imports included."""
    lib = PROJECT_ROOT / "asdlib"
    closure = set(fingerprint.import_closure(PROJECT_ROOT / "notebooks" / "03_subband.py"))
    # the notebook's own imports, their module-level imports (branches -> knn, ldn) and
    # the lazy ones inside functions (scoring.score_machine -> branches)
    assert {lib / f"{m}.py" for m in ("__init__", "experiment", "scoring", "plots", "metrics",
                                      "knn", "ldn", "branches/__init__", "branches/patch",
                                      "features/__init__", "features/store")} <= closure
    assert not closure & {lib / f"{m}.py" for m in ("fusion", "overview", "pipeline",
                                                    "preflight", "submission")}
    assert lib / "results.py" in fingerprint.import_closure(PROJECT_ROOT / "notebooks" / "07_results.py")
    src = tmp_path / "nb.py"
    src.write_text("import numpy\nimport asdlib.knn as k\nfrom asdlib.ldn import ldn_scores\n\n"
                   "def f():\n    from asdlib import atomic\n")
    assert fingerprint.import_closure(src) == sorted(lib / f"{m}.py" for m in ("__init__", "knn",
                                                                          "ldn", "atomic"))
    src.write_text("def broken(:\n")  # unparsable: counts as using the whole library
    assert fingerprint.import_closure(src) == sorted(lib.rglob("*.py"))


def test_clip_table_is_stored_relative_to_the_data_root(tiny_run):
    """The committed clip table names no folder of the machine that made it; the run reads
    it back with paths under its own data root."""
    from asdlib.experiment import Run

    run_dir, _ = tiny_run
    stored = pd.read_csv(run_dir / "00_data" / "clip_table.csv")
    assert not any(Path(p).is_absolute() for p in stored["path"])
    assert stored["path"].str.startswith("dev_data/raw/").all()
    run = Run.open(run_dir)
    table = run.clip_table()
    root = run.config.resolved_data_root()
    assert all(Path(p).is_file() and Path(p).is_relative_to(root) for p in table["path"])
    assert table["name"].tolist() == stored["name"].tolist()


def test_fresh_clone_runs_steps_whose_outputs_are_committed(tmp_path, monkeypatch):
    """The skip record lives under work/ (not committed): with it a step is skipped, without
    it (a fresh clone: committed outputs, no datasets or checkpoints) the step runs again."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    header = (PROJECT_ROOT / "notebooks" / "00_data.py").read_text().split("# %% [markdown]")[0]
    (nb_dir / "00_data.py").write_text(
        header + '# %% tags=["parameters"]\nrun_dir = ".."\n\n# %%\n'
        'from pathlib import Path\np = Path(run_dir, "runs.txt")\n'
        'p.write_text(p.read_text() + "x" if p.exists() else "x")\n')
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nb_dir)
    config, results = RunConfig(run="clone", preset="tiny"), tmp_path / "results"

    def run():
        logs = []
        pipeline.run_pipeline(config, results, steps=("00_data",), log=logs.append)
        return logs

    def step_line(logs):
        return next(line for line in logs if line.startswith("[1/1] 00_data"))

    run()
    assert "unchanged, skipped" in step_line(run())  # same checkout: skipped
    run_dir = results / "clone"
    assert (run_dir / "runs.txt").read_text() == "x"
    shutil.rmtree(run_dir / "work")  # what a fresh clone lacks
    assert "running" in step_line(run())
    assert (run_dir / "runs.txt").read_text() == "xx"
    assert json.loads((run_dir / "pipeline_state.json").read_text())["00_data"]["key"]


@pytest.fixture(scope="module")
def tiny_eval_run(tiny_run):
    """The tiny preset's evaluation split, run with the dev run's frozen fusion weights."""
    dev_dir, _ = tiny_run
    logs = []
    config = RunConfig(run=RUN + "-eval", preset="tiny", dataset="eval",
                       fusion_config=str(dev_dir / "06_fusion" / "fusion_config.json"))
    run_dir = pipeline.run_pipeline(config, RESULTS, log=logs.append)
    return run_dir, logs


def test_evaluation_split_runs_to_valid_submission_files(tiny_eval_run):
    from asdlib import metrics, submission, synth

    run_dir, _ = tiny_eval_run
    run = experiment.Run.open(run_dir)
    table = run.clip_table()
    assert set(table["machine"]) == set(synth.EVAL_MACHINES)
    assert table.loc[table["split"] == "test", "label"].isna().all()   # nothing leaked
    folders = sorted((run_dir / "06_fusion" / "submission").iterdir())
    assert [f.name for f in folders] == ["system_1", "system_2", "system_3", "system_4"]
    root = run.config.resolved_data_root()
    for folder in folders:
        report = submission.validate_submission(folder, root, dataset="eval")
        assert report.ok, report.problems
        assert report.machines == 5
    # the weights were applied unchanged, and the notebooks said why they show no metric
    frozen = json.loads((RESULTS / RUN / "06_fusion" / "fusion_config.json").read_text())
    assert json.loads((run_dir / "06_fusion" / "fusion_config.json").read_text())["weights"] \
        == frozen["weights"]
    executed = (run_dir / "notebooks" / "07_results.ipynb").read_text()
    assert experiment.NO_LABELS[:40] in executed and "valid" in executed
    # the generator's ground truth (never read by the pipeline) scores the submission
    scored = metrics.evaluate_submission(folders[0], root / synth.GROUND_TRUTH_DIR)
    assert 0.0 < scored.loc["Overall", "hmean"] <= 1.0


def test_both_microphones_run_through_fusion(tiny_run):
    """--channel both: adaptation on both microphones, both stored, every branch and floor
    scored per microphone and combined, the systems fused from the combined scores."""
    from asdlib import fusion, scoring

    near_dir, _ = tiny_run
    config = RunConfig(run=RUN + "-both", preset="tiny", channel="both")
    run_dir = pipeline.run_pipeline(config, RESULTS, steps=STEPS[:STEPS.index("06_fusion") + 1],
                                    log=lambda line: None)
    run, near_run = experiment.Run.open(run_dir), experiment.Run.open(near_dir)
    assert run.config.channel == "both" and experiment.adapt_config(run.config).channel == "both"
    stores = list((run_dir / "work" / "features").glob("*/*/*/far"))
    assert stores, "the far microphone's features were not stored"
    both, near = scoring.load_scores(run), scoring.load_scores(near_run)
    assert set(both["branch"]) == set(near["branch"])
    key = ["machine", "name", "branch", "is_self"]
    joined = both.merge(near, on=key, suffixes=("_both", "_near"))
    assert len(joined) == len(both) == len(near)
    assert not (joined["score_both"] - joined["score_near"]).abs().lt(1e-9).all()
    fused = pd.read_csv(run_dir / "06_fusion" / "fused_scores.csv", dtype={"name": str})
    for _, rows in fused.groupby(["system", "selection"]):
        assert 0.0 < fusion.official_of(rows) <= 1.0
    assert list((run_dir / "04_patch" / "maps").glob("*.npz"))


def test_mono_2025_set_runs_and_refuses_the_far_channel(tmp_path):
    """A DCASE 2025-style set (mono clips, the 2025 machine names) runs through Table 1 with
    the near channel; a channel that needs the far microphone stops before anything is
    written, naming a mono clip."""
    from asdlib import synth

    root = synth.ensure_dataset(tmp_path / "dcase2025", "tiny", seed=7, year=2025,
                                machines=["ToyTrain", "bearing"], progress=False)
    results_root = tmp_path / "results"
    for channel in ("far", "residual", "both"):
        with pytest.raises(pipeline.ConfigProblems, match=r"mono \(first: .*\.wav\)"):
            pipeline.run_pipeline(RunConfig(run=f"y2025-{channel}", data_root=str(root),
                                            channel=channel), results_root, log=lambda line: None)
        assert not (results_root / f"y2025-{channel}" / "config.json").exists()
    run_dir = pipeline.run_pipeline(RunConfig(run="y2025", data_root=str(root)), results_root,
                                    steps=STEPS[:STEPS.index("07_results") + 1],
                                    log=lambda line: None)
    table = pd.read_csv(run_dir / "07_results" / "table1.csv")
    assert set(table["machine"]) == {"ToyTrain", "bearing", "Overall"}
    official = table[(table["machine"] == "Overall") & (table["metric"] == "hmean")]
    assert 0 < float(official["System 3"].iloc[0]) <= 100


def test_executed_notebooks_name_no_folder_of_this_machine(tiny_run):
    run_dir, _ = tiny_run
    for notebook in sorted((run_dir / "notebooks").glob("*.ipynb")):
        text = notebook.read_text()
        assert str(PROJECT_ROOT) not in text, notebook.name
        meta = json.loads(text)["metadata"]["papermill"]
        assert meta["output_path"] == f"notebooks/{notebook.name}"
        assert meta["input_path"] == f"notebooks/{notebook.stem}.py"


def test_embed_hop_benchmark_reproduces_the_runs_fine_selective_branch(tiny_run, tmp_path):
    """benchmarks/embed_hop.py recomputes the patch embedding from the audio at each hop; at
    the run's own hop (`ExtractConfig.embed_hop`) its per-band maximum is the fine_selective
    branch (the run scores the float16 store, the benchmark float32: within the result-table
    tolerance)."""
    import importlib.util

    from asdlib.features import ExtractConfig

    run_dir, _ = tiny_run
    spec = importlib.util.spec_from_file_location(
        "embed_hop", PROJECT_ROOT / "benchmarks" / "embed_hop.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    hop = ExtractConfig().embed_hop
    bench.main([str(run_dir), "--hops", "16", str(hop), "--out", str(tmp_path / "hops.csv")])
    table = pd.read_csv(tmp_path / "hops.csv").set_index(["view", "aggregation"])
    assert set(table.index.get_level_values(0)) == {"hop 16 frames", f"hop {hop} frames"}
    branch = pd.read_csv(run_dir / "04_patch" / "branch_summary.csv", index_col=0)
    assert table.loc[(f"hop {hop} frames", "band max"), "official"] == pytest.approx(
        branch.loc["fine_selective", "hmean"], abs=NUMBERS_ATOL)
    assert (table["scoring s"] > 0).all()
