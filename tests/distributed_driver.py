"""Adaptation and extraction on a tiny dataset, as one process or under torchrun; run by
tests/test_distributed.py (``python -m torch.distributed.run --nproc_per_node 2 ...``).

    distributed_driver.py <data root> <out dir>

Writes ``<out>/adapted/{encoder,heads}.pt`` (2 epochs, mixup on, full adaptation of the tiny
encoder) and a feature store under ``<out>/features`` (a fixed random tiny encoder, so the
store does not depend on the adaptation).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asdlib import data, distributed, encoder, features  # noqa: E402
from asdlib.adaptation import training  # noqa: E402


def main(root: str, out: str) -> None:
    rank, size = distributed.init("cpu")
    table = data.scan_dataset(root)
    cfg = training.AdaptConfig(epochs=2, batch_size=8, lr=3e-3, crop_seconds=1.0, mixup=True,
                               device="cpu", num_threads=1)
    training.adapt(encoder.build_beats("tiny", seed=0), table, cfg, Path(out) / "adapted",
                   progress=False, resume=False)
    extract = features.ExtractConfig(layers=(-1, features.EMBED), device="cpu", batch_size=4,
                                     num_threads=1)
    store = features.extract_features(table, encoder.build_beats("tiny", seed=1), None, extract,
                                      Path(out) / "features", progress=False)
    print(f"rank {rank}/{size}: {store.run_stats.n_parts_computed} parts computed", flush=True)
    if size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
