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
# # 01 · Task adaptation of the encoder
#
# The encoder learns what separates normal operating conditions: a proxy classification of
# the normal training clips (classes = machine type x attribute string, x domain where the
# attributes are hidden) with an ArcFace angular-margin loss. Two heads are trained with
# it: attentive statistics pooling (ASP, one utterance embedding) and band-attentive
# pooling (attention over time inside each frequency band, one vector per band). No
# development test label is used. The adapted encoder is saved in the official BEATs
# checkpoint format.
#
# To see whether adaptation helped, utterance kNN (mean token, nearest normal training
# clip) is scored with the official metric before and after, next to a log-mel kNN
# reference that uses no encoder at all.
#
# **Starting point.** With an official BEATs checkpoint (`--encoder`), adaptation starts
# from it. On the embedded default there is none, so it starts from the project's own
# pre-trained `small` BEATs (`asdlib/assets/beats_small_synth.pt`): self-supervised masked
# and visible patch reconstruction on synthetic data of other seeds, normal clips only
# (`scripts/pretrain_small.py`). A random start scores near chance. The proxy task alone
# discards what does not separate the classes, so the demo recipe adapts gently and keeps
# a reconstruction term (`AdaptConfig.demo`).

# %% tags=["parameters"]
run_dir: str = "../results/interactive"  # the run folder written by asdlib.pipeline

# %%
import pandas as pd

from asdlib import experiment, floors, plots, results, scoring
from asdlib.adaptation import training

run = experiment.Run.open(run_dir)
out = run.step("01_finetune")
cfg = run.config
device = cfg.resolved_device()
table = run.clip_table()
labelled = run.labelled  # an evaluation set's test clips carry no labels
adapt_cfg = experiment.adapt_config(cfg)
print(adapt_cfg)

# %% [markdown]
# ## Before adaptation, and the encoder-free floors
# Two floors use no encoder (`asdlib.floors`): the clip-level log-mel kNN (the mean log-mel
# vector of a clip against its nearest normal clip) and the frame-level log-mel kNN (every
# 10 ms frame, with a frame of context either side, against its nearest normal frame; the
# mean of a clip's 10 largest frame distances), which sees short events. Every table of
# the later notebooks shows both.

# %%
floor_scores = floors.floors(table, cfg.channel)
scoring.save_scores(floor_scores, out / floors.FLOORS_FILE)
start = experiment.starting_encoder(cfg)
emb_before = scoring.utterance_embeddings(start, table, experiment.view_channel(cfg.channel), device)
before = scoring.knn_scores(emb_before, table, "utt_knn_before")

# %% [markdown]
# ## Adaptation (resumes from the last finished epoch if interrupted)

# %%
model = experiment.starting_encoder(cfg)
# keyed by the settings, the starting weights, the training clips' content and the code
work = run.keyed_dir("adapted", experiment.adaptation_key(run, model, adapt_cfg))
history = training.adapt(model, table, adapt_cfg, work, resume=True)
run.set_current("adapted", work)
run.prune("adapted", keep=work)  # encoders adapted with older settings, data or code
history.to_csv(out / "history.csv", index=False)
plots.training_curves(history, path=out / "training_curves.png");

# %%
emb_after = scoring.utterance_embeddings(model, table, experiment.view_channel(cfg.channel), device)
after = scoring.knn_scores(emb_after, table, "utt_knn_after")

# %% [markdown]
# ## Utterance kNN official score (%): both floors, before and after adaptation

# %%
# CHECK_NUMBERS
if labelled:
    judged = pd.concat([floor_scores, before, after])
    summary = scoring.branch_table(judged) * 100
    summary.to_csv(out / "adaptation_summary.csv")
    print(summary.round(2).to_string())
else:
    print(experiment.NO_LABELS)

# %%
if labelled:
    change = summary.loc["utt_knn_after", "hmean"] - summary.loc["utt_knn_before", "hmean"]
    print(f"adaptation changed the utterance kNN by {change:+.2f} points")
    print("\n".join(results.standing(summary, ["utt_knn_before", "utt_knn_after"])))
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# The mean over all tokens pools the 8 frequency bands, and BEATs tokens carry no absolute
# position, so a pooled token keeps its band only as far as its content shows it: the
# per-band and token-level views of notebooks 03 and 04 keep that structure.
#
# AUC_s pools the source normals with the anomalies of both domains, AUC_t the target
# normals. Split by domain pair (normals of one domain against the anomalies of one
# domain), the table shows whether a view loses on detection within a domain (Ns-As,
# Nt-At) or on how the two domains' scores sit against each other (Ns-At against Nt-As).

# %%
# CHECK_NUMBERS
if labelled:
    pairs = scoring.domain_pair_table(judged) * 100
    pairs.to_csv(out / "domain_pairs.csv")
    print(pairs.round(2).to_string())
else:
    print(experiment.NO_LABELS)

# %% [markdown]
# ## Normal training clips before and after adaptation (PCA of utterance embeddings)
# Adaptation should pull clips of one machine and condition together and push machines
# and domains apart.

# %%
train = (table["split"] == "train").to_numpy()
for tag, emb in (("before", emb_before), ("after", emb_after)):
    plots.embedding_map(emb[train], table.loc[train, "machine"].to_numpy(),
                        table.loc[train, "domain"].to_numpy(),
                        title=f"utterance embeddings {tag} adaptation",
                        path=out / f"embedding_map_{tag}.png")
