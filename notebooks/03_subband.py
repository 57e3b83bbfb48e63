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
# # 03 · Clip-level and sub-band scoring
#
# Each branch compares a test clip with the memory bank of normal training clips of its
# machine (source and target together) by cosine distance, and also scores every bank clip
# against the bank without it (leave-one-out self-scores, used for calibration):
#
# | branch | descriptor | matching |
# |---|---|---|
# | utt_knn | mean of all tokens | nearest bank clip |
# | asp_knn | attentive statistics pooling embedding | nearest bank clip |
# | band_knn | temporal mean per band, the 8 bands kept side by side | one nearest clip for all bands |
# | beam_mean / beam_max | temporal mean / max per band | each band its own nearest clip, mean over bands |
# | adabeam | both streams, each calibrated | fused |
# | subband3 | mean, max and band-attentive views | fused |

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline

# %%
import pandas as pd

from asdlib import experiment, floors, plots, scoring

run = experiment.Run.open(run_dir)
out = run.step("03_subband")
cfg = run.config
table = run.clip_table()
store = run.feature_store()

# %%
scores = scoring.score_run(store, table, scoring.SUBBAND_SPECS, channel=cfg.channel)
scoring.save_scores(scores, out / "scores.csv",
                    params={s.name: s.record() for s in scoring.SUBBAND_SPECS})

# %% [markdown]
# ## Official score of each branch and AUC per fault kind (%)
# Transient faults are short in time and narrowband faults narrow in frequency; views that
# keep time or band structure should find them where the utterance mean washes them out.

# %%
# CHECK_NUMBERS
summary = scoring.branch_table(pd.concat([scores, floors.load(run)])) * 100
summary.to_csv(out / "branch_summary.csv")
print(summary.round(2).to_string())

# %% [markdown]
# ## Score distributions of the sub-band branches

# %%
test = scores[~scores["is_self"]]
for branch in ("adabeam", "subband3"):
    plots.score_distributions(test[test["branch"] == branch], title=branch,
                              path=out / f"scores_{branch}.png")
