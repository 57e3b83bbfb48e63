"""The benchmark scripts that CI can run: the GPU readiness script on the CPU (every part but
the device), on small sizes."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_every_part_on_the_cpu(tmp_path):
    gpu_check = _load("gpu_check")
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "w")])
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert set(parts) == {"matmul_tflops", "encoder_parity", "encoder_speed", "adaptation_step",
                          "branch_parity", "branch_speed_dcase", "demo_end_to_end"}
    assert not [name for name, part in parts.items() if "error" in part], parts
    parity = parts["encoder_parity"]["result"]
    assert max(parity["cpu_vs_device_fp32"].values()) == 0.0  # the CPU against itself
    assert max(parity["device_bf16_vs_fp32"].values()) < 0.02
    assert max(parts["branch_parity"]["result"].values()) == 0.0
    assert parts["demo_end_to_end"]["result"]["clips"] == 7 * 32


def test_dcase_rehearsal_runs_every_step_at_a_small_size(tmp_path, capsys):
    """The rehearsal's quick form (tiny preset, tiny encoder): every step reports its wall
    time and peak memory, every branch its official score, and the search_dim run its
    deviation from the exact search."""
    rehearsal = _load("dcase_rehearsal")
    out = tmp_path / "out"
    rehearsal.main(["--work", str(tmp_path / "w"), "--preset", "tiny", "--config", "tiny",
                    "--out", str(out)])
    result = json.loads((out / "rehearsal.json").read_text())
    steps = result["steps"]
    assert list(steps) == ["data", "extract", "subband", "patch", "patch_dim64", "ldn"]
    assert all(s["wall_s"] >= 0 and s["peak_rss_gib"] > 0 for s in steps.values())
    wavs = list((tmp_path / "w" / "data").rglob("*.wav"))
    assert steps["extract"]["clips"] == len(wavs) > 0 and steps["extract"]["size_mib"] > 0
    assert set(steps["patch"]["official"]) == {"fine_broad", "fine_selective"}
    assert all(0 <= v <= 100 for s in ("subband", "patch", "ldn")
               for v in steps[s]["official"].values())
    assert result["bounded_vs_exact"]["max relative clip-score difference"] < 0.05
    assert "| patch_dim64 |" in (out / "rehearsal.md").read_text()

    # the speed-against-AUC benchmark's per-setting process on the same store
    speed = _load("speed_auc")
    exact = speed.run_child(f"dcase:{tmp_path / 'w'}", "exact (default)")
    ivf = speed.run_child(f"dcase:{tmp_path / 'w'}", "ivf 256 cells, 16 visited")
    assert exact["seconds"] > 0 and exact["peak_gib"] > 0
    assert list(exact["summary"].index) == ["fine_broad", "fine_selective"]
    # a tiny bank has fewer than 16 cells of 39 tokens: every cell is visited, so the
    # inverted file finds the exact neighbours
    assert abs(ivf["summary"].loc["fine_selective", "official"]
               - exact["summary"].loc["fine_selective", "official"]) < 0.5

    # a rerun reads the stored fit back and scores exactly as the first run
    _load("stored_fits").main([f"dcase:{tmp_path / 'w'}"])
    printed = capsys.readouterr().out
    assert "scores identical: True" in printed and "stored fits: 1 files" in printed
