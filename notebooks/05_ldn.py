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
# # 05 · What local-density normalisation changes
#
# LDN (Wilkinghoff et al., TASLP 2026; the report's eq. 1) divides a test clip's distance
# to a normal reference by that reference's own neighbourhood scale $\rho_j$ (mean distance
# to its K nearest normal neighbours), taking the minimum of the ratio over references:
# $\tilde d(x) = \min_j d(x, r_j) / (\epsilon + \rho_j)$. Sparse regions of the bank (the
# few target-domain clips) get a larger scale, so target normals stop looking anomalous
# merely for being rare. The same minimum has a cost: a clip far from every reference
# (an anomaly) is divided by the largest $\rho$ it can find, so when the small domain's
# scales are inflated, anomalies can rank below the normal clips of the large domain. K is
# therefore capped at half the smallest domain's bank size (`asdlib.ldn.capped_k`). Here
# the clip-level kNN branches run again with LDN on and are compared with notebook 03's
# plain versions, per domain.

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline

# %%
import pandas as pd

from asdlib import experiment, floors, fusion, ldn, plots, scoring

run = experiment.Run.open(run_dir)
out = run.step("05_ldn")
cfg = run.config
table = run.clip_table()
labelled = run.labelled  # an evaluation set's test clips carry no labels
store = run.feature_store()

# %%
scores = scoring.score_run(store, table, scoring.LDN_SPECS, channel=cfg.channel)
scoring.save_scores(scores, out / "scores.csv",
                    params={s.name: s.record() for s in scoring.LDN_SPECS})
plain = pd.read_csv(run.dir / "03_subband" / "scores.csv", dtype={"name": str})

# %% [markdown]
# ## Official metrics with and without LDN (%)

# %%
# CHECK_NUMBERS
pairs = [(s.branch, s.name) for s in scoring.LDN_SPECS]
both = pd.concat([plain[plain["branch"].isin([a for a, _ in pairs])], scores])
if labelled:
    summary = scoring.branch_table(pd.concat([both, floors.load(run)]), kinds=False) * 100
    summary.to_csv(out / "ldn_summary.csv")
    print(summary.round(2).to_string())
else:
    print(experiment.NO_LABELS)

# %%
if labelled:
    for plain_name, ldn_name in pairs:
        a, b = summary.loc[plain_name], summary.loc[ldn_name]
        print(f"{ldn_name}: AUC_s {a['AUC_s']:.1f} -> {b['AUC_s']:.1f}, AUC_t {a['AUC_t']:.1f} -> "
              f"{b['AUC_t']:.1f}, official {a['hmean']:.1f} -> {b['hmean']:.1f}")
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Why: the local scale of source and target bank clips
# Mean $\rho$ of the utterance vectors of the source and of the target bank clips, with
# K = 16 (the report's reference value) and with K capped by the target bank's size.

# %%
rho = ldn.domain_density_table(store, table, experiment.view_channel(cfg.channel))
print(rho.round(4).to_string())

# %% [markdown]
# ## Per domain: where the normal clips move
# Scores are z-normalised by each branch's bank self-scores so both versions share a scale:
# the median z of the normal test clips of each domain, and the boxes of every group.

# %%
if labelled:
    calibrated = fusion.calibrate(both)
    test = calibrated[~calibrated["is_self"]]
    shift = (test[test["label"] == "normal"].groupby(["branch", "domain"])["z"].median()
             .unstack("domain"))
    print(shift.round(2).to_string())
    plots.ldn_effect(test, pairs, path=out / "ldn_effect.png")
else:
    print(experiment.NO_LABELS)
