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
