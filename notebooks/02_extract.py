# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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

from asdlib import encoder, experiment, features
from asdlib.adaptation import heads as adapted_heads

run = experiment.Run.open(run_dir)
out = run.step("02_extract")
cfg = run.config
table = run.clip_table()
adapted = run.current("adapted", "01_finetune")
model = encoder.load_beats(adapted / "encoder.pt", device=cfg.resolved_device())
heads = adapted_heads.load_heads(adapted / "heads.pt")
extract_cfg = experiment.extract_config(cfg, head_layer=adapted_heads.heads_layer(adapted / "heads.pt"))

# %%
store = features.extract_features(table, model, heads, extract_cfg, run.work / "features")
run.set_current("features", store.path)
run.prune("features", keep=store.path)  # stores of older encoders, settings or code

# %% [markdown]
# ## Throughput and size of the store

# %%
stats = store.stats()
print(f"{stats.n_clips} clips in {len(store.parts())} parts, "
      f"{stats.clips_per_s:.1f} clips/s when built, {stats.size_bytes / 2**20:.1f} MiB")
print(f"this run: {store.run_stats}")
(out / "store.json").write_text(json.dumps(
    {"store": store.path.name, "clips": stats.n_clips, "clips_per_s": stats.clips_per_s,
     "size_mib": round(stats.size_bytes / 2**20, 1), "encoder": store.params["encoder"]},
    indent=1, default=str))
