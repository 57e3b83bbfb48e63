"""Steps 01 (adaptation) and 02 (extraction) of a run folder on several processes
(`asdlib.distributed`), for a machine with several GPUs. The run folder comes from the
pipeline (``--steps 00_data``); the pipeline's later run finds the adapted encoder (its
last checkpoint is complete) and the feature store's parts done, and goes on from there::

    python -m asdlib.pipeline --run big --data-root data/dcase2026 --steps 00_data
    torchrun --nproc_per_node 4 -m asdlib.distributed_steps big
    python -m asdlib.pipeline --run big --data-root data/dcase2026
"""

from __future__ import annotations

import argparse

from asdlib.distributed import barrier, init, local_device


def main(argv=None) -> None:
    """Adaptation and extraction of a run folder, in every process torchrun starts."""
    ap = argparse.ArgumentParser(description="Steps 01 (adaptation) and 02 (extraction) of a "
                                             "run on several processes, under torchrun.")
    # a positional: torchrun's own parser would take ``--run`` for an abbreviation of its
    # ``--run-path`` and stop
    ap.add_argument("run", help="run name or folder (created by asdlib.pipeline)")
    ap.add_argument("--results-root", default=None)
    ap.add_argument("--steps", nargs="*", default=["adapt", "extract"],
                    choices=["adapt", "extract"])
    args = ap.parse_args(argv)

    import dataclasses
    from pathlib import Path

    from asdlib import encoder, experiment, features
    from asdlib.adaptation import heads as adapted_heads
    from asdlib.adaptation import training

    root = Path(args.results_root) if args.results_root else experiment.PROJECT_ROOT / "results"
    folder = Path(args.run) if Path(args.run).is_dir() else root / args.run
    run = experiment.Run.open(folder)
    cfg = run.config
    rank, size = init(cfg.device)
    device = local_device(cfg.device)
    table = run.clip_table()
    if "adapt" in args.steps:
        adapt_cfg = dataclasses.replace(experiment.adapt_config(cfg), device=device)
        model = experiment.starting_encoder(cfg)
        work = run.keyed_dir("adapted", experiment.adaptation_key(run, model, adapt_cfg))
        training.adapt(model, table, adapt_cfg, work, progress=rank == 0, resume=True)
        if rank == 0:
            run.set_current("adapted", work)
        barrier()
    if "extract" in args.steps:
        adapted = run.current("adapted", "01_finetune")
        model = encoder.load_beats(adapted / "encoder.pt", device=device)
        heads = adapted_heads.load_heads(adapted / "heads.pt")
        extract_cfg = experiment.extract_config(
            cfg, head_layer=adapted_heads.heads_layer(adapted / "heads.pt"))
        extract_cfg = dataclasses.replace(extract_cfg, device=device)
        store = features.extract_features(table, model, heads, extract_cfg,
                                          run.work / "features", progress=rank == 0)
        if rank == 0:
            print(f"store {store.path}: {store.run_stats}")
    barrier()
    if size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
