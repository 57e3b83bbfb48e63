"""Adaptation and sharded extraction under torchrun (gloo, 2 CPU processes) against one
process: the same encoder within a stated tolerance and the same feature store."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asdlib import distributed, encoder, synth

DRIVER = Path(__file__).with_name("distributed_driver.py")
#: Weights after two epochs: the two runs differ only in the order of float additions
#: (gradient shares summed across processes).
WEIGHT_TOLERANCE = 1e-4
#: The bias of an attention pooling's last layer shifts every logit of a softmax alike: its
#: gradient is zero up to rounding, and Adam turns that rounding into steps of the size of
#: the learning rate, different in every run. It is compared by nothing.
SHIFT_INVARIANT = "attention.2.bias"


def test_shards_are_balanced_and_deterministic():
    sizes = [1000, 200, 1000, 200, 50]
    shards = distributed.assign_shards(sizes, 2)
    assert shards == distributed.assign_shards(sizes, 2)
    load = [sum(s for s, o in zip(sizes, shards) if o == r) for r in range(2)]
    assert sorted(load) == [1200, 1250]
    assert distributed.assign_shards(sizes, 1) == [0] * 5
    assert distributed.world() == (0, 1)          # no process group in the test process


def _run(cmd, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(DRIVER.parents[1])}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    root = synth.generate_dataset(tmp / "data", "tiny", seed=0, machines=["fan", "ToyCar"],
                                  progress=False, workers=1)
    single, multi = tmp / "single", tmp / "multi"
    _run([sys.executable, str(DRIVER), str(root), str(single)], single)
    log = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", str(DRIVER), str(root), str(multi)], multi)
    return single, multi, log


def test_two_processes_adapt_to_the_same_encoder(runs):
    single, multi, _ = runs
    for name in ("encoder.pt", "heads.pt"):
        a = torch.load(single / "adapted" / name, weights_only=False)
        b = torch.load(multi / "adapted" / name, weights_only=False)
        flat_a, flat_b = dict(_tensors(a)), dict(_tensors(b))
        assert flat_a and flat_a.keys() == flat_b.keys()
        worst = max(float((flat_a[k].float() - flat_b[k].float()).abs().max())
                    for k in flat_a if not k.endswith(SHIFT_INVARIANT))
        print(f"{name}: largest weight difference {worst:.2e}")
        assert worst < WEIGHT_TOLERANCE, (name, worst)
    # the same losses, epoch by epoch
    history = [json.loads((run / "adapted" / "history.json").read_text()) for run in (single, multi)]
    np.testing.assert_allclose([h["loss"] for h in history[1]], [h["loss"] for h in history[0]],
                               rtol=1e-5)
    assert [h["acc"] for h in history[1]] == [h["acc"] for h in history[0]]
    # adaptation did move the weights, so the comparison above means something
    adapted = torch.load(single / "adapted" / "encoder.pt", weights_only=False)["model"]
    fresh = encoder.build_beats("tiny", seed=0).state_dict()
    moved = max(float((adapted[k].float() - fresh[k].float()).abs().max())
                for k in fresh if k in adapted)
    assert moved > 100 * WEIGHT_TOLERANCE


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}/{k}")


def test_sharded_extraction_writes_the_single_process_store(runs):
    single, multi, log = runs
    assert "rank 0/2" in log and "rank 1/2" in log
    # the two processes print to one pipe: their lines may interleave
    computed = [int(n) for n in re.findall(r"rank \d/2: (\d+) parts computed", log)]
    assert sorted(computed) == [2, 2]             # four parts (2 machines x 2 splits), 2 each
    (sa,), (sb,) = list((single / "features").iterdir()), list((multi / "features").iterdir())
    assert sa.name == sb.name                      # same store key
    files_a = sorted(p.relative_to(sa) for p in sa.rglob("*.npy"))
    files_b = sorted(p.relative_to(sb) for p in sb.rglob("*.npy"))
    assert files_a == files_b and len(files_a) >= 4 * 3
    for rel in files_a:
        np.testing.assert_allclose(np.load(sb / rel), np.load(sa / rel), rtol=0, atol=1e-6,
                                   err_msg=str(rel))


@pytest.mark.slow
def test_torchrun_steps_are_reused_by_the_pipeline(tmp_path):
    """The documented flow: the pipeline's step 00, ``torchrun -m asdlib.distributed_steps``
    (2 gloo processes) for adaptation and extraction, then the pipeline's steps 01-02 find
    the adapted encoder complete (no epoch trained again) and every store part done."""
    from asdlib import experiment, pipeline

    config, results = experiment.RunConfig(run="dist", preset="tiny"), tmp_path / "results"
    run_dir = pipeline.run_pipeline(config, results, steps=("00_data",), log=lambda line: None)
    log = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "asdlib.distributed_steps",
                str(run_dir)], tmp_path)
    assert "store " in log
    run = experiment.Run.open(run_dir)
    adapted = run.current("adapted", "01_finetune")
    state = torch.load(adapted / "state.pt", weights_only=False)
    assert state["epoch"] == experiment.adapt_config(run.config).epochs
    store_dir = next((run.work / "features").iterdir())
    done_before = {p: p.stat().st_mtime_ns for p in store_dir.rglob("DONE")}
    assert len(done_before) == 2 * len(set(run.clip_table()["machine"]))
    pipeline.run_pipeline(config, results, steps=("01_finetune", "02_extract"),
                          log=lambda line: None)
    after = torch.load(adapted / "state.pt", weights_only=False)
    assert after["history"] == state["history"]                 # nothing trained again
    assert {p: p.stat().st_mtime_ns for p in store_dir.rglob("DONE")} == done_before
