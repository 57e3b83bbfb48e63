"""Checks of a run's options before anything runs: every problem at once, nothing written.

`validate` is what `asdlib.pipeline` calls before it takes the run's lock: a missing GPU,
a checkpoint that is no BEATs checkpoint, a fusion file that is not one, a data root
without the DCASE layout or an unknown machine each cost no work and no earlier result.
"""

from __future__ import annotations

import re
from pathlib import Path

from asdlib.experiment import CHANNELS, DATASETS, FINE_SEARCHES, RECIPES, RunConfig


def validate(config: RunConfig) -> list[str]:
    """Every problem with a run's options, one line each (empty = runnable), checked before
    the first step so that a bad option costs no work and no earlier result."""
    from asdlib import devices, synth

    problems = []
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", config.run or ""):
        problems.append(f"--run {config.run!r}: use letters, digits, '.', '_' and '-'")
    if config.preset not in synth.PRESETS:
        problems.append(f"--preset {config.preset!r}: one of {sorted(synth.PRESETS)}")
    if config.channel not in CHANNELS:
        problems.append(f"--channel {config.channel!r}: one of {CHANNELS}")
    if config.dataset not in DATASETS:
        problems.append(f"--dataset {config.dataset!r}: one of {DATASETS}")
    elif config.dataset == "eval" and not config.fusion_config:
        problems.append("--dataset eval needs --fusion-config: the fusion weights chosen on a "
                        "development run (its 06_fusion/fusion_config.json)")
    if config.recipe not in RECIPES:
        problems.append(f"--recipe {config.recipe!r}: one of {RECIPES}")
    if config.fine_search not in FINE_SEARCHES:
        problems.append(f"--fine-search {config.fine_search!r}: one of {FINE_SEARCHES}")
    if config.embed_hop is not None:
        from asdlib.features import ExtractConfig

        try:  # the extraction settings' own check
            ExtractConfig(embed_hop=config.embed_hop)
        except ValueError as exc:
            problems.append(f"--embed-hop: {exc}")
    if config.num_threads < 0:
        problems.append(f"--threads {config.num_threads}: must be >= 0")
    if config.seed < 0:
        problems.append(f"--seed {config.seed}: must be >= 0")
    problem = devices.device_problem(config.device)
    if problem:
        problems.append(f"--device: {problem}")
    if config.encoder:
        from asdlib import checkpoints, encoder

        path = Path(config.encoder).expanduser()
        named = str(config.encoder).partition("@")[0] in checkpoints.CHECKPOINTS
        if not path.is_file() and not named and not str(config.encoder).startswith(("http://", "https://")):
            problems.append(f"--encoder {config.encoder}: no such file, and not a checkpoint "
                            f"name ({', '.join(checkpoints.CHECKPOINTS)}, optionally "
                            "@huggingface) or URL")
        elif path.is_file():
            try:
                encoder.load_beats(path, device="cpu")
            except encoder.CheckpointError as exc:
                problems.append(f"--encoder {config.encoder}: {exc}")
    else:
        from asdlib.encoder import CONFIGS

        if config.encoder_config not in CONFIGS:
            problems.append(f"--encoder-config {config.encoder_config!r}: one of "
                            f"{sorted(CONFIGS)}")
    if config.fusion_config:
        from asdlib.fusion import FusionConfig, SYSTEMS

        path = Path(config.fusion_config).expanduser()
        if not path.is_file():
            problems.append(f"--fusion-config {config.fusion_config}: no such file")
        else:
            try:
                frozen = FusionConfig.load(path)
                missing = sorted(set(SYSTEMS) - set(frozen.weights))
                if missing:
                    problems.append(f"--fusion-config {config.fusion_config}: no weights for {missing}")
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(f"--fusion-config {config.fusion_config}: not a fusion config "
                                f"written by 06_fusion ({exc})")
    if config.data_root:
        from asdlib import data

        root = Path(config.data_root).expanduser()
        if not root.is_dir():
            problems.append(f"--data-root {config.data_root}: no such folder")
        else:
            try:
                found = data.list_machines(root, config.dataset
                                           if config.dataset in DATASETS else "dev")
            except data.DatasetError as exc:
                problems.append(f"--data-root: {exc}")
            else:
                unknown = sorted(set(config.machines or []) - set(found))
                if unknown:
                    problems.append(f"--machines {unknown}: not under {root} (found: {found})")
    elif config.machines:
        unknown = sorted(set(config.machines) - set(synth.MACHINES))
        if unknown:
            problems.append(f"--machines {unknown}: the synthetic dataset has {list(synth.MACHINES)}")
    return problems
