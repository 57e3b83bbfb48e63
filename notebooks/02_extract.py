# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (asdlib)
#     language: python
#     name: asdlib
# ---

# %% [markdown]
# # 02 · Feature extraction with the adapted encoder
#
# The adapted encoder is frozen and every clip becomes: the token grid (T', 8, D) of the
# chosen layer, its utterance mean, the ASP embedding and the band-attentive vectors. They
# go to an on-disk store (float16, memory-mapped) keyed by the encoder's and the heads'
# content hashes and the extraction parameters, so a changed setting never reuses stale
# features and an interrupted extraction resumes where it stopped.

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline

# %%
import json

import pandas as pd

from asdlib import adaptation, encoder, experiment, features

run = experiment.Run.open(run_dir)
out = run.step("02_extract")
cfg = run.config
table = pd.read_csv(run.dir / "00_data" / "clip_table.csv", dtype={"name": str})
adapted = run.work / "01_finetune"
model = encoder.load_beats(adapted / "encoder.pt", device=cfg.resolved_device())
heads = adaptation.load_heads(adapted / "heads.pt")
extract_cfg = experiment.extract_config(cfg)

# %%
store = features.extract_features(table, model, heads, extract_cfg, run.work / "features")
run.set_feature_store(store.path)

# %% [markdown]
# ## What the store holds

# %%
stats = store.params
print(json.dumps({k: stats[k] for k in sorted(stats) if k != "clips"}, indent=1,
                 default=str)[:2000])
print(f"store size: {store.size_bytes() / 2**20:.1f} MiB")
(out / "store.json").write_text(json.dumps({"path": str(store.path.relative_to(run.dir)),
                                            "size_mib": store.size_bytes() / 2**20},
                                           indent=1))
