"""DCASE-scale rehearsal: one machine at the challenge's size with the base encoder.

One synthetic machine at DCASE size (``dcase`` preset: 990 source + 10 target training
clips and 200 test clips of 10 s, stereo) is written, encoded by a randomly initialised
BEATs of the ``base`` configuration (the official checkpoints' shape: 12 layers, D = 768,
patch embedding 512; random weights: no checkpoint can be downloaded here, and the cost
does not depend on the weights) with freshly initialised ASP and band-attentive heads,
and scored by every branch of notebooks 03-05 the way `asdlib.scoring.score_machine` runs
them. Each step runs in its own process, so its peak resident memory (VmHWM) is its own;
each step's wall time, peak memory and, for extraction, the store size go to a table.

The fine-grained branches run twice: with the flat exact search (the default) and with
``search_dim`` (candidate search in the top principal directions, exact re-ranking;
`asdlib.bounded_knn`); the table gives the second's deviation from the first (clip
scores, official score) and its recall of the exact neighbours is in the JSON.

    PYTHONPATH=. python benchmarks/dcase_rehearsal.py --work /tmp/rehearsal

About 25 minutes on 2 cores. Writes ``results/rehearsal/rehearsal.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import peak_rss_gib  # noqa: E402

MACHINE = "fan"
SEARCH_DIM = 64
#: The rehearsal's sizes; ``--preset tiny --config tiny`` is the quick check the tests run.
PRESET, CONFIG = "dcase", "base"


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def step_data(work: Path, preset: str) -> dict:
    from asdlib import synth

    t0 = time.time()
    synth.generate_dataset(work / "data", preset, seed=0, machines=[MACHINE])
    return {"wall_s": time.time() - t0, "size_mib": folder_mib(work / "data" / "dev_data")}


def _table(work: Path):
    from asdlib import data

    return data.scan_dataset(work / "data", machines=[MACHINE])


def step_extract(work: Path, device: str, config: str) -> dict:
    import torch

    from asdlib import encoder, features
    from asdlib.adaptation.heads import ASPHead, BandAttentivePooling

    table = _table(work)
    model = encoder.build_beats(config, seed=0)
    dim = model.cfg.encoder_embed_dim
    torch.manual_seed(0)
    heads = (ASPHead(dim).eval(), BandAttentivePooling(dim).eval())
    cfg = features.ExtractConfig(layers=(-1, features.EMBED), device=device)
    t0 = time.time()
    store = features.extract_features(table, model, heads, cfg, work / "features")
    wall = time.time() - t0
    (work / "store.txt").write_text(str(store.path))
    return {"wall_s": wall, "clips": len(table), "clips_per_s": len(table) / wall,
            "size_mib": folder_mib(store.path), "layers": "final, embed",
            "D final / embed": f"{dim} / {model.cfg.embed_dim}"}


def step_branches(work: Path, specs_name: str, search_dim: int | None) -> dict:
    """One notebook's branches through `asdlib.scoring.score_machine`, as the pipeline runs
    them (the two fine-grained branches share one fitted scorer: the first one's time
    includes the fit)."""
    import numpy as np

    from asdlib import features, metrics, scoring

    table = _table(work)
    store = features.FeatureStore(Path((work / "store.txt").read_text()))
    specs = {"subband": scoring.SUBBAND_SPECS, "ldn": scoring.LDN_SPECS,
             "patch": scoring.PATCH_SPECS}[specs_name]
    if search_dim is not None:
        specs = scoring.with_params(specs, {"search_dim": search_dim})
    load = lambda split, layer: store.load(MACHINE, split, layer=layer)  # noqa: E731
    marks = [time.time()]
    scores, _ = scoring.score_machine(load, specs, MACHINE, table,
                                      log=lambda line: marks.append(time.time()))
    per_branch = {s.name: b - a for s, a, b in zip(specs, marks, marks[1:])}
    test = scores[~scores["is_self"]]
    official = {name: float(metrics.evaluate_table(g).loc["Overall", "hmean"]) * 100
                for name, g in test.groupby("branch", sort=False)}
    tag = f"{specs_name}" + (f"_dim{search_dim}" if search_dim else "")
    scores.to_csv(work / f"scores_{tag}.csv", index=False)
    return {"wall_s": marks[-1] - marks[0], "per_branch_s": per_branch,
            "official": official, "n_scores": int(np.isfinite(test["score"]).sum())}


def compare(work: Path) -> dict:
    """Deviation of the search_dim run's fine-grained scores from the exact ones."""
    import numpy as np
    import pandas as pd

    a = pd.read_csv(work / "scores_patch.csv")
    b = pd.read_csv(work / f"scores_patch_dim{SEARCH_DIM}.csv")
    key = ["branch", "name", "is_self"]
    m = a.merge(b, on=key, suffixes=("_exact", "_bounded"))
    rel = np.abs(m["score_bounded"] - m["score_exact"]) / np.abs(m["score_exact"]).clip(1e-9)
    return {"clips compared": len(m), "max relative clip-score difference": float(rel.max()),
            "median relative clip-score difference": float(rel.median())}


STEPS = {"data": lambda w, a: step_data(w, a.preset),
         "extract": lambda w, a: step_extract(w, a.device, a.config),
         "subband": lambda w, a: step_branches(w, "subband", None),
         "patch": lambda w, a: step_branches(w, "patch", None),
         f"patch_dim{SEARCH_DIM}": lambda w, a: step_branches(w, "patch", SEARCH_DIM),
         "ldn": lambda w, a: step_branches(w, "ldn", None)}


def run_child(step: str, args) -> dict:
    cmd = [sys.executable, __file__, "--work", str(args.work), "--device", args.device,
           "--preset", args.preset, "--config", args.config, "--child", step]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit(f"step {step} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    size = ("One DCASE-size machine ({m}: 1000 training + 200 test clips of 10 s)"
            if result["preset"] == "dcase" else "One machine ({m}, preset " + result["preset"] + ")")
    lines = [f"{size.format(m=MACHINE)}, {result['config']} configuration with random weights, "
             f"{result['cpu']}, {result['threads']} threads; `{result['command']}`", "",
             "| step | wall s | peak RSS GiB | size MiB | notes |", "|---|---:|---:|---:|---|"]
    for step, r in result["steps"].items():
        note = ""
        if "clips_per_s" in r:
            note = f"{r['clips_per_s']:.2f} clips/s; D {r['D final / embed']}"
        elif "per_branch_s" in r:
            note = "; ".join(f"{k} {v:.0f} s ({r['official'][k]:.1f})"
                             for k, v in r["per_branch_s"].items())
        size = f"{r['size_mib']:.0f}" if "size_mib" in r else "-"
        lines.append(f"| {step} | {r['wall_s']:.0f} | {r['peak_rss_gib']:.2f} | {size} | {note} |")
    c = result.get("bounded_vs_exact")
    if c:
        lines += ["", f"search_dim={SEARCH_DIM} against the exact search: max relative clip-score "
                      f"difference {c['max relative clip-score difference']:.2e} (median "
                      f"{c['median relative clip-score difference']:.2e}) over "
                      f"{c['clips compared']} scores."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/rehearsal"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default=PRESET, help="synthetic size (default dcase)")
    ap.add_argument("--config", default=CONFIG, help="encoder configuration (default base)")
    ap.add_argument("--steps", nargs="*", default=list(STEPS))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "rehearsal")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out = STEPS[args.child](args.work, args)
        out["peak_rss_gib"] = peak_rss_gib()
        print(json.dumps(out, default=float))
        return
    import platform

    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine()) if Path("/proc/cpuinfo").is_file() \
        else platform.machine()
    previous = args.out / "rehearsal.json"   # steps run earlier are kept unless rerun
    steps = json.loads(previous.read_text())["steps"] if previous.is_file() else {}
    if previous.is_file() and (json.loads(previous.read_text()).get("preset"),
                               json.loads(previous.read_text()).get("config")) != (args.preset, args.config):
        steps = {}                           # another size's steps are not kept
    result = {"cpu": cpu, "threads": torch.get_num_threads(), "preset": args.preset,
              "config": args.config,
              "command": "PYTHONPATH=. python benchmarks/dcase_rehearsal.py", "steps": steps}
    from asdlib import atomic

    args.out.mkdir(parents=True, exist_ok=True)
    for step in args.steps:   # the JSON is rewritten after every step: nothing lost on a stop
        print(f"{step} ...", flush=True)
        result["steps"][step] = run_child(step, args)
        print(f"  {result['steps'][step]['wall_s']:.0f} s, "
              f"{result['steps'][step]['peak_rss_gib']:.2f} GiB", flush=True)
        if {"patch", f"patch_dim{SEARCH_DIM}"} <= set(result["steps"]):
            result["bounded_vs_exact"] = compare(args.work)
        atomic.write_text(args.out / "rehearsal.json", json.dumps(result, indent=1, default=float))
        atomic.write_text(args.out / "rehearsal.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
