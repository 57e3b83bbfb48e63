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
# # 04 · Fine-grained localized scoring
#
# Every token of a test clip, one per (time patch, frequency band), is matched against all
# bank tokens of the same frequency band, at any time and in any normal clip. Distances
# are calibrated by local-density normalisation (LDN: each bank token's distance is divided
# by the mean distance of that bank token to its K nearest normal neighbours), giving a
# localisation map (T', 8) per clip. Two aggregations turn the map into a clip score and
# are separate branches: broad (mean of the top-q % tokens) and selective (max over time
# within each band, then mean over bands).

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline
n_maps: int = 6  # localisation maps shown (highest-scoring test clips)

# %%
import numpy as np
import pandas as pd

from asdlib import audio, experiment, floors, plots, scoring

run = experiment.Run.open(run_dir)
out = run.step("04_patch")
cfg = run.config
table = run.clip_table()
store = run.feature_store()

# %%
scores = scoring.score_run(store, table, scoring.PATCH_SPECS, channel=cfg.channel,
                           maps_dir=out / "maps")
scoring.save_scores(scores, out / "scores.csv",
                    params={s.name: s.record() for s in scoring.PATCH_SPECS})

# %% [markdown]
# ## Official score and AUC per fault kind (%)

# %%
# CHECK_NUMBERS
summary = scoring.branch_table(pd.concat([scores, floors.load(run)])) * 100
summary.to_csv(out / "branch_summary.csv")
print(summary.round(2).to_string())

# %% [markdown]
# ## Where the evidence is: localisation maps of the highest-scoring test clips
# Bright cells are tokens far from every normal token of their band (after LDN). A
# transient fault lights a column, a narrowband fault a row.

# %%
test = scores[(~scores["is_self"]) & (scores["branch"] == "fine_broad")]
top = test.sort_values("score", ascending=False).head(n_maps)
specs, maps, titles = [], [], []
for row in top.itertuples():
    saved = np.load(out / "maps" / f"{row.machine}.npz")
    i = list(saved["names"]).index(row.name)
    clip = table[(table["machine"] == row.machine) & (table["name"] == row.name)].iloc[0]
    wave, sr = audio.load_clip(clip["path"], channel=cfg.channel)
    specs.append(plots.log_mel(wave, sr))
    maps.append(saved["fine_broad"][i, : saved["n_time"][i]])
    titles.append(f"{row.machine} {row.name} [{row.kind}] score {row.score:.2f}")
plots.localisation_maps(specs, maps, titles, path=out / "localisation_top.png");
