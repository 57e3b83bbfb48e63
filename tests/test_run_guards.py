"""Runs you can trust: options checked first, one run per name, caches keyed by data and
code, kernel deaths and interruptions reported in a line, stale temporaries removed,
notices on the console. Stand-in notebooks keep these fast."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from asdlib import data, experiment, fingerprint, locking, pipeline, synth
from asdlib.experiment import PROJECT_ROOT, RunConfig

HEADER = (PROJECT_ROOT / "notebooks" / "00_data.py").read_text().split("# %% [markdown]")[0]


def _notebooks(folder: Path, **cells: str) -> Path:
    """Stand-in notebooks: {step: code of its cells, separated by '# %%' lines}."""
    folder.mkdir(parents=True, exist_ok=True)
    for step, code in cells.items():
        (folder / f"{step}.py").write_text(
            HEADER + '# %% tags=["parameters"]\nrun_dir = ".."\n\n# %%\n' + textwrap.dedent(code))
    return folder


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """A DCASE-layout data root of one tiny synthetic machine (fan), copied so tests may
    change its clips."""
    src = synth.ensure_dataset(PROJECT_ROOT / "data" / "synth_tiny_seed0", "tiny", seed=0,
                               progress=False)
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(src / "dev_data" / "raw" / "fan", root / "dev_data" / "raw" / "fan")
    return root


def _copy_root(small_root, tmp_path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    return root


def _run(config, results, steps=("00_data",), **kw):
    logs = []
    pipeline.run_pipeline(config, results, steps=steps, log=logs.append, **kw)
    return logs


# ------------------------------------------------------------------ options first


def test_every_bad_option_is_reported_before_anything_is_written(tmp_path):
    results = tmp_path / "results"
    run_dir = results / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("the good run's config")
    not_a_checkpoint = tmp_path / "enc.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    config = RunConfig(run="r", data_root=str(tmp_path / "nowhere"), encoder=str(not_a_checkpoint),
                       fusion_config=str(tmp_path / "missing.json"), device="cuda:7",
                       recipe="fast", fine_search="fastest", embed_hop=32)
    with pytest.raises(pipeline.ConfigProblems) as err:
        _run(config, results)
    message = str(err.value)
    for part in ("--data-root", "--encoder", "--fusion-config", "--device", "--recipe",
                 "--fine-search", "--embed-hop"):
        assert part in message, part
    assert (run_dir / "config.json").read_text() == "the good run's config"
    assert not (run_dir / pipeline.LOCK_FILE).exists()


def test_embed_hop_reaches_the_extraction_settings():
    from asdlib.features import ExtractConfig

    assert experiment.extract_config(RunConfig()).embed_hop == ExtractConfig().embed_hop == 8
    assert experiment.extract_config(RunConfig(embed_hop=16)).embed_hop == 16
    args = pipeline.build_parser().parse_args(["--embed-hop", "4"])
    assert args.embed_hop == 4 and pipeline.build_parser().parse_args([]).embed_hop is None


def test_recipe_follows_the_encoder_not_the_data_root(tmp_path, small_root):
    assert experiment.recipe(RunConfig(data_root=str(small_root))) == "cpu"
    assert experiment.recipe(RunConfig(encoder="BEATs_iter3.pt")) == "gpu"
    assert experiment.recipe(RunConfig(encoder="BEATs_iter3.pt", recipe="cpu")) == "cpu"
    cpu = experiment.adapt_config(RunConfig(data_root=str(small_root)))
    gpu = experiment.adapt_config(RunConfig(encoder="BEATs_iter3.pt"))
    assert (cpu.mode, cpu.crop_seconds) == ("full", 2.0) and (gpu.mode, gpu.amp) == ("lora", True)
    line = experiment.describe_recipe(RunConfig(data_root=str(small_root)))
    assert line.startswith("recipe cpu (the project's small encoder)")


# ------------------------------------------------------------------ one run per name


def test_a_second_run_of_the_same_name_refuses(tmp_path, monkeypatch, small_root):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", _notebooks(tmp_path / "nb", **{"00_data": "x = 1\n"}))
    results = tmp_path / "results"
    lock = results / "r" / pipeline.LOCK_FILE
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(),
                                "started": "09:00", "command": "make run"}))
    config = RunConfig(run="r", data_root=str(small_root))
    with pytest.raises(locking.LockHeld, match="in use by pid 1 .*make run"):
        _run(config, results)
    assert not (results / "r" / "config.json").exists()
    lock.write_text(json.dumps({"pid": 999999999, "host": socket.gethostname()}))  # dead
    _run(config, results)
    assert not lock.exists()


# ------------------------------------------------------------------ caches keyed by data


def test_a_changed_clip_reruns_the_steps_and_nothing_else_does(tmp_path, monkeypatch, small_root):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", _notebooks(tmp_path / "nb", **{"00_data": "x = 1\n"}))
    root = _copy_root(small_root, tmp_path)
    config, results = RunConfig(run="r", data_root=str(root)), tmp_path / "results"

    def step_line(logs):
        return next(line for line in logs if line.startswith("[1/1] 00_data"))

    assert "running" in step_line(_run(config, results))
    assert "skipped" in step_line(_run(config, results))
    clip = next((root / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))
    wave, sr = sf.read(clip, dtype="int16")
    wave[100] ^= 1  # one sample, one bit: the content changed
    sf.write(clip, wave, sr, subtype="PCM_16")
    logs = _run(config, results)
    assert "running" in step_line(logs)
    assert any("1 file(s) hashed" in line for line in logs)


def _manifest_run(tmp_path, rows) -> experiment.Run:
    run = experiment.Run(tmp_path / "run", RunConfig(run="run"))
    manifest = pd.DataFrame(rows, columns=data.MANIFEST_COLUMNS)
    data.write_manifest(manifest, run.step("00_data") / "data_manifest.csv")
    return run


def test_adapted_encoder_key_follows_settings_weights_training_data_and_code(tmp_path):
    from asdlib.adaptation.training import AdaptConfig
    from asdlib.encoder import build_beats

    row = dict(machine="fan", section="00", domain="source", label="normal", index=0,
               attributes="", channels=2, sample_rate=16000, samples=32000)
    rows = [dict(row, path="dev_data/raw/fan/train/a.wav", split="train", sha256="1" * 64),
            dict(row, path="dev_data/raw/fan/test/b.wav", split="test", sha256="2" * 64)]
    model, cfg = build_beats("tiny", seed=0), AdaptConfig.demo()
    key = experiment.adaptation_key(_manifest_run(tmp_path / "a", rows), model, cfg)
    assert experiment.adaptation_key(_manifest_run(tmp_path / "b", rows), model, cfg) == key
    assert set(key) == {"adapt", "start", "data", "code"}
    changed_test = [rows[0], dict(rows[1], sha256="3" * 64)]  # adaptation reads train clips only
    assert experiment.adaptation_key(_manifest_run(tmp_path / "c", changed_test), model, cfg) == key
    changed_train = [dict(rows[0], sha256="4" * 64), rows[1]]
    assert experiment.adaptation_key(_manifest_run(tmp_path / "d", changed_train), model, cfg)["data"] != key["data"]
    other = _manifest_run(tmp_path / "e", rows)
    assert experiment.adaptation_key(other, model, AdaptConfig.demo(lr=1e-3))["adapt"] != key["adapt"]
    assert experiment.adaptation_key(other, build_beats("tiny", seed=1), cfg)["start"] != key["start"]
    assert key["code"] == fingerprint.module_code_hash("asdlib.adaptation.training")


def test_code_keys_change_with_the_code_they_run(tmp_path):
    """In a copy of the package: an edit to a module in a cache's import closure changes
    its code key; an edit elsewhere does not."""
    copy = tmp_path / "copy"
    shutil.copytree(PROJECT_ROOT / "asdlib", copy / "asdlib",
                    ignore=shutil.ignore_patterns("__pycache__", "assets"))
    probe = ("from asdlib import fingerprint as f; print(f.module_code_hash('asdlib.adaptation.training'),"
             " f.module_code_hash('asdlib.features'))")

    def keys():
        out = subprocess.run([sys.executable, "-c", probe], cwd=copy, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(copy)}, check=True)
        return out.stdout.split()

    before = keys()
    assert keys() == before  # nothing changed: reuse
    with open(copy / "asdlib" / "fusion.py", "a") as handle:  # neither imports fusion
        handle.write("\n# an edit outside both closures\n")
    assert keys() == before
    with open(copy / "asdlib" / "encoder" / "layers.py", "a") as handle:  # both run the encoder
        handle.write("\n# an edit to the encoder\n")
    after = keys()
    assert after[0] != before[0] and after[1] != before[1]
    with open(copy / "asdlib" / "adaptation" / "lora.py", "a") as handle:  # training only
        handle.write("\n# an edit to LoRA\n")
    last = keys()
    assert last[0] != after[0] and last[1] == after[1]


def test_feature_store_key_holds_the_code(monkeypatch):
    """The store key changes with the extraction's code hash (and with its settings)."""
    from asdlib import features
    from asdlib.encoder import build_beats
    from asdlib.features import ExtractConfig

    model = build_beats("tiny", seed=0)
    key = features.store_key(model)
    assert key == features.store_key(model)
    assert features.store_key(model, cfg=ExtractConfig(dtype="float32")) != key
    real = fingerprint.module_code_hash
    monkeypatch.setattr(fingerprint, "module_code_hash",
                        lambda name: "edited" if name == "asdlib.features" else real(name))
    assert features.store_key(model) != key


# ------------------------------------------------------------------ failures in a line


def test_a_dead_kernel_is_reported_with_its_cell_and_likely_cause(tmp_path, monkeypatch, small_root):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", _notebooks(tmp_path / "nb", **{"00_data": """\
        x = 1

        # %%
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
        """}))
    with pytest.raises(pipeline.StepFailed) as err:
        _run(RunConfig(run="r", data_root=str(small_root)), tmp_path / "results")
    message = str(err.value)
    assert "kernel died in cell 3" in message and "import os, signal" in message
    assert "out of memory" in message


def test_an_interruption_prints_one_line_and_keeps_finished_steps(tmp_path, small_root):
    nb = _notebooks(tmp_path / "nb", **{"00_data": "x = 1\n",
                                        "01_finetune": "import time\ntime.sleep(60)\n"})
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from asdlib import pipeline
        pipeline.NOTEBOOK_DIR = Path({str(nb)!r})
        sys.exit(pipeline.main(sys.argv[1:]))
        """))
    started = tmp_path / "results" / "r" / "notebooks" / "01_finetune.ipynb"
    for how in (signal.SIGINT, signal.SIGTERM):
        started.unlink(missing_ok=True)  # the first round's copy must not start the clock
        proc = subprocess.Popen(
            [sys.executable, str(driver), "--run", "r", "--data-root", str(small_root),
             "--results-root", str(tmp_path / "results"), "--steps", "00_data", "01_finetune"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 60
        while not started.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)  # papermill writes the output notebook as the kernel starts
        time.sleep(4)  # the kernel is in its sleep
        if how == signal.SIGINT:
            os.killpg(proc.pid, how)  # Ctrl-C in a terminal reaches the whole process group
        else:
            proc.send_signal(how)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (how, err)
        assert "Traceback" not in err
        assert err.strip().splitlines() == [
            "pipeline interrupted during step 01_finetune; finished steps are kept, run the same "
            "command to continue"], (how, err)
        state = json.loads((tmp_path / "results" / "r" / "pipeline_state.json").read_text())
        assert "00_data" in state and "01_finetune" not in state
        assert not (tmp_path / "results" / "r" / pipeline.LOCK_FILE).exists()


def test_stale_temporaries_are_removed(tmp_path, monkeypatch, small_root):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", _notebooks(tmp_path / "nb", **{"00_data": "x = 1\n"}))
    run_dir = tmp_path / "results" / "r"
    part = run_dir / "work" / "features" / "k" / "fan" / "train"
    part.mkdir(parents=True)
    stale = [run_dir / ".config.json.4242.tmp", part / ".near.tmp-4242",
             run_dir / "notebooks" / ".00_data.src.ipynb"]
    stale[0].write_text("half")
    stale[1].mkdir()
    stale[2].parent.mkdir(parents=True)
    stale[2].write_text("{}")
    logs = _run(RunConfig(run="r", data_root=str(small_root)), tmp_path / "results")
    assert not any(p.exists() for p in stale)
    assert any("removed 3 temporary file(s)" in line for line in logs)


def test_notices_reach_the_console(tmp_path, monkeypatch, small_root):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", _notebooks(tmp_path / "nb", **{"00_data": """\
        import warnings
        warnings.warn("something the user should know", UserWarning)
        """}))
    root = _copy_root(small_root, tmp_path)
    clips = sorted((root / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))
    wave, _ = sf.read(clips[0], dtype="float32")
    sf.write(clips[0], wave[::2], 8000, subtype="PCM_16")  # another sample rate
    sf.write(clips[1], sf.read(clips[1], dtype="float32")[0][:, 0], 16000, subtype="PCM_16")  # mono
    logs = _run(RunConfig(run="r", data_root=str(root)), tmp_path / "results")
    notices = [line for line in logs if "notice:" in line]
    assert any("resampled to 16000 Hz" in line and clips[0].name in line for line in notices)
    assert any("mixed channel counts" in line and clips[1].name in line for line in notices)
    assert any("UserWarning: something the user should know" in line for line in notices)
