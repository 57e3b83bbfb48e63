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
# Pick a machine (and a run): every branch's score distribution, the clips a system gets
# most wrong (the normal clips it scores highest: false alarms; the anomalies it scores
# lowest: misses) with audio players for the near and far microphones, and the
# fine-grained localisation map of each. Change the parameters and re-run, or run it with
# papermill: `papermill 08_explore.ipynb out.ipynb -p run_dir ../results/demo -p machine fan`.

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline
machine: str = ""  # machine type to explore; empty means the first machine of the run
system: str = "System 4"  # fused system whose errors are listed
n_clips: int = 3  # false alarms and misses shown

# %%
import numpy as np
import pandas as pd
from IPython.display import Audio, display

from asdlib import audio, experiment, fusion, plots, scoring

run = experiment.Run.open(run_dir)
table = run.clip_table()
machine = machine or sorted(table["machine"].unique())[0]
fused = pd.read_csv(run.dir / "06_fusion" / "fused_scores.csv", dtype={"name": str})
fused = fused[(fused["machine"] == machine) & (fused["selection"] == "dev")]
calibrated = fusion.calibrate(scoring.load_scores(run))
calibrated = calibrated[calibrated["machine"] == machine]
print(f"{machine}: {len(fused['name'].unique())} test clips, "
      f"{calibrated['branch'].nunique()} branches")

# %% [markdown]
# ## Every branch on this machine (calibrated scores)

# %%
test = calibrated[~calibrated["is_self"]].rename(columns={"machine": "_m", "branch": "machine"})
plots.score_distributions(test, score_col="z", title=f"{machine}: branches (z)");

# %% [markdown]
# ## False alarms and misses of the chosen system

# %%
rows = fused[fused["system"] == system].sort_values("score")
false_alarms = rows[rows["label"] == "normal"].tail(n_clips)[::-1]
misses = rows[rows["label"] == "anomaly"].head(n_clips)
maps = np.load(run.dir / "04_patch" / "maps" / f"{machine}.npz")
map_names = list(maps["names"])


def show(clip_rows, what):
    for r in clip_rows.itertuples():
        path = table[(table["machine"] == machine) & (table["name"] == r.name)]["path"].iloc[0]
        print(f"{what}: {r.name}  [{r.kind}]  fused score {r.score:.2f}")
        for ch in ("near", "far"):
            try:
                wave, sr = audio.load_clip(path, channel=ch)
            except audio.AudioError as exc:
                print(f"  {ch}: {exc}")
                continue
            print(f"  {ch} microphone")
            display(Audio(wave, rate=sr))
        i = map_names.index(r.name)
        wave, sr = audio.load_clip(path, channel=run.config.channel)
        plots.localisation_maps([plots.log_mel(wave, sr)],
                                [maps["fine_broad"][i, : maps["n_time"][i]]],
                                [f"{what} {r.name}: fine-grained map"])


show(false_alarms, "false alarm")
show(misses, "miss")
