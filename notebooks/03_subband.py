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
# machine (source and target together) by cosine distance $d(x, r) = 1 - \cos(x, r)$ and
# scores it by the distance to its nearest bank clip, $s(x) = \min_j d(x, r_j)$. Every bank
# clip is also scored against the bank without it (leave-one-out self-scores, used for
# calibration). The sub-band views keep the 8 frequency bands of BEATs' token grid apart
# (AdaBEAM: Saengthong & Shinozaki, arXiv 2603.13749; the band-attentive view: AnoPatch,
# Jiang et al., Interspeech 2024), the tokens are the adapted encoder's final layer (BEATs:
# Chen et al., ICML 2023; the method: the WISTLAB report, DCASE 2026 Task 2).
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

from asdlib import experiment, floors, plots, results, scoring

run = experiment.Run.open(run_dir)
out = run.step("03_subband")
cfg = run.config
table = run.clip_table()
labelled = run.labelled  # an evaluation set's test clips carry no labels
store = run.feature_store()

# %%
scores = scoring.score_run(store, table, scoring.SUBBAND_SPECS, channel=cfg.channel)
scoring.save_scores(scores, out / "scores.csv",
                    params={s.name: s.record() for s in scoring.SUBBAND_SPECS})

# %% [markdown]
# ## Official score of each branch and AUC per fault kind (%)
# Transient faults are short in time, narrowband faults narrow in frequency, broad faults
# change the whole spectrum. The two encoder-free floors are computed on the same clips
# (notebook 01). Below the table: where each branch stands against them, and the best row
# per fault kind, from this run's numbers.

# %%
# CHECK_NUMBERS
if labelled:
    summary = scoring.branch_table(pd.concat([scores, floors.load(run)])) * 100
    summary.to_csv(out / "branch_summary.csv")
    print(summary.round(2).to_string())
else:
    print(experiment.NO_LABELS)

# %%
if labelled:
    print("\n".join(results.standing(summary, [s.name for s in scoring.SUBBAND_SPECS])))
    print("best per fault kind:", "; ".join(results.best_per_kind(summary)))
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Score distributions of the sub-band branches

# %%
test = scores[~scores["is_self"]]
for branch in ("adabeam", "subband3"):
    plots.score_distributions(test[test["branch"] == branch], title=branch,
                              path=out / f"scores_{branch}.png")
