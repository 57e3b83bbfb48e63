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
# # 07 · Results in the layout of the report's Table 1
#
# Per machine AUC_s, AUC_t, pAUC and their harmonic mean for Systems 1-4; the Overall
# rows give arithmetic means over machines and, for hmean, the official score (harmonic
# mean of every machine's three values pooled). Two floors use no encoder at all: the
# clip-level log-mel kNN (mean log-mel vector per clip, nearest normal training clip) and
# the frame-level log-mel kNN (10 ms frames with context, nearest normal frame, the mean of
# a clip's 10 largest frame distances). A system has to clear both. On the real 2026
# development set the report's own numbers and our difference from them are shown too.

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline

# %%
import pandas as pd

from asdlib import experiment, floors, metrics, plots, results, submission

run = experiment.Run.open(run_dir)
out = run.step("07_results")
labelled = run.labelled  # an evaluation set's test clips carry no labels
fused = pd.read_csv(run.dir / "06_fusion" / "fused_scores.csv")
floor_scores = floors.load(run)

# %% [markdown]
# ## What was written
# The submission folders of 06_fusion, checked as the challenge checks them
# (`asdlib.submission.validate_submission`: every machine, every test clip once, the file
# names, no header, finite scores, decisions 0/1).

# %%
print(submission.describe_run(run))

# %%
if labelled:
    dev = fused[fused["selection"] == "dev"]
    ours = results.table1(dev)
    floor = results.table1(floor_scores.assign(system=floor_scores["branch"].map(floors.LABELS)))
    table = ours.join(floor)
    if "lomo" in set(fused["selection"]):
        lomo = results.table1(fused[fused["selection"] == "lomo"])
        table = table.join(lomo.add_suffix(" (LOMO)"))
    results.flatten(table).to_csv(out / "table1.csv", index=False)
    (out / "table1.md").write_text(metrics.table_markdown(table, **results.TABLE1_MARKDOWN))
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Table 1 (%), weights chosen on the development labels, with both floors
# (`table1.md` adds the leave-one-machine-out (LOMO) estimate)

# %%
if labelled:
    print(metrics.table_markdown(ours.join(floor), **results.TABLE1_MARKDOWN))
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Overall official score of each system (%)

# %%
# CHECK_NUMBERS
if labelled:
    print(results.overall_row(table).round(2).to_string())
else:
    print(experiment.NO_LABELS)

# %%
if labelled:
    overall = results.overall_row(table)
    for system in [c for c in ours.columns]:
        beats = [label for label in floors.LABELS.values() if overall[system] >= overall[label]]
        print(f"{system}: {overall[system]:.2f}, at or above "
              f"{' and '.join(beats) if beats else 'neither floor'}")
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Against the report (only on the real 2026 development set)

# %%
if labelled:
    machines = sorted(fused["machine"].unique())
    if results.is_real_dev_set(machines) and run.config.data_root is not None:
        beside = results.with_report(ours)
        results.flatten(beside).to_csv(out / "table1_vs_report.csv", index=False)
        print(metrics.table_markdown(beside, **results.TABLE1_MARKDOWN))
    else:
        print("synthetic or partial data: the report's numbers are not comparable and are "
              "not shown")
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Score distributions per machine (normal / anomaly x source / target)

# %%
if labelled:
    for system, rows in dev.groupby("system"):
        plots.score_distributions(rows, title=system,
                                  path=out / f"scores_{system.replace(' ', '_').lower()}.png")
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## ROC curves (the shaded band is the pAUC range, FPR <= 0.1)

# %%
if labelled:
    wide = dev.pivot_table(index=["machine", "name", "label", "domain"], columns="system",
                           values="score").reset_index()
    systems = sorted(dev["system"].unique())
    plots.roc_curves(wide, systems, path=out / "roc.png")
else:
    print(experiment.NO_LABELS)
