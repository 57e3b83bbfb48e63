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
# # 00 · The data
#
# What the run is given: per machine, the clips of each split, domain and label, their
# attributes and durations, how loud and how noisy the near-field and far-field
# microphones are, and what a normal and an anomalous clip look like on both channels.
# With no data root the run uses the embedded synthetic DCASE-2026-layout dataset
# (`docs/SYNTHETIC_DATA.md`), built here when missing and checked against the committed
# `data_manifest.csv`.

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline

# %%
import pandas as pd

from asdlib import data, experiment, overview, plots

run = experiment.Run.open(run_dir)
out = run.step("00_data")
cfg = run.config
print(f"run {cfg.run!r}: preset={cfg.preset} data_root={cfg.data_root or '(embedded)'}")

# %%
hashes = run.hash_cache()  # each clip's sha256, re-computed only for changed files
root = experiment.dataset_root(cfg, hashes=hashes.sha256)
table, manifest, notices = experiment.scan(cfg, root, hashes=hashes.sha256)
hashes.save()
run.write_clip_table(table, root)
data.write_manifest(manifest, out / "data_manifest.csv")
print(f"{len(table)} clips, {table['machine'].nunique()} machines, "
      f"{manifest['samples'].sum() / 16000 / 3600:.2f} hours of audio")
for notice in notices:
    print("notice:", notice)

# %% [markdown]
# ## Clips per split, domain and label
# Few target-domain training clips against many source clips is the domain-shift problem
# of the task; the test set is balanced between domains and labels.

# %%
# NBVAL_CHECK_OUTPUT
print(overview.split_counts(table).to_string())

# %%
attrs = overview.attribute_counts(table)
attrs.to_csv(out / "attribute_counts.csv", index=False)
attrs[attrs["split"] == "train"].pivot_table(
    index=["machine", "attributes"], columns="domain", values="clips", fill_value=0)

# %% [markdown]
# ## Levels and far-field SNR
# The far microphone is quieter and carries background noise; its SNR (the far channel
# regressed on the near one, the residual counted as noise) varies from clip to clip.

# %%
levels = overview.channel_levels(table, max_clips_per_machine=30, seed=cfg.seed)
levels.to_csv(out / "channel_levels.csv", index=False)
summary = levels.groupby("machine")[["seconds", "near_dbfs", "far_dbfs", "far_snr_db"]].median()
print(summary.round(1).to_string())
plots.level_summary(levels, path=out / "levels.png");

# %% [markdown]
# ## A normal and an anomalous clip of each machine, near and far

# %%
examples = overview.example_clips(table)
plots.spectrogram_grid(examples, path=out / "spectrograms.png");

# %% [markdown]
# ## Fault kinds of the anomalous test clips
# The synthetic set records each fault's kind (transient: short in time; narrowband:
# narrow in frequency; broad): later notebooks report AUC per kind. The real data
# records none ("anomaly").

# %%
pd.crosstab(table.loc[table["split"] == "test", "machine"],
            table.loc[table["split"] == "test", "kind"])
