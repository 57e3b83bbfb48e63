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
# # 08 · Exploring one machine
#
# An interactive explorer of a finished run (`asdlib.explore`): pick the run, the machine,
# a fused system or a single branch, and the microphone. It shows the machine's score
# distributions (normal / anomaly x source / target) with the decision threshold (the
# bank self-scores' decision percentile), its AUC_s / AUC_t / pAUC, and a list of its clips
# that starts with the worst false alarms (normal clips scored highest) and misses
# (anomalies scored lowest). Picking a clip there plays its near and far microphones and
# draws its log-mel spectrogram with the fine-grained localisation maps over it, beside its
# score in every system and branch. Nothing is recomputed but the fused thresholds; the
# audio is embedded only in the live widget, never in the saved notebook.
#
# The last cell prints the metrics of every system and branch (and the worst clips) as
# text, so that a run of this notebook with papermill (`papermill 08_explore.ipynb
# out.ipynb -p run_dir ../results/demo -p machine fan`) has a readable output without
# widgets.

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline
machine: str = ""  # machine type shown first; empty means the first machine of the run
system: str = "System 4"  # fused system (or branch) shown first
channel: str = "near"  # microphone of the spectrogram under the maps: near or far
n_clips: int = 5  # false alarms and misses listed first

# %%
from asdlib import explore

explorer = explore.Explorer(run_dir, machine=machine, source=system, channel=channel,
                            n_clips=n_clips)
explorer

# %% [markdown]
# ## Every system and branch on this machine (static)

# %%
import pandas as pd

tables = explore.load_run(run_dir)
machine, source = explorer.machine.value, explorer.source.value
rows = explore.source_scores(tables, machine, source)
with pd.option_context("display.width", 120, "display.max_columns", 20):
    print(explore.metrics_table(tables, machine).round(3).to_string())
    if explore.labelled(rows):
        threshold = explore.decision_threshold(tables, machine, source)
        worst = explore.worst_clips(rows, threshold, n_clips)
        print(f"\n{source}: worst false alarms and misses (wrong: beyond the threshold)")
        print(worst[["error", "name", "score", "domain", "kind", "wrong"]].round(3).to_string())
    else:
        print(f"\n{machine}: the test clips have no labels (an evaluation set)")
