"""Interactive exploration of a finished run: per-machine score distributions and clips.

`Explorer` is an ipywidgets panel (JupyterLab and the classic notebook alike) with controls
for the run (any finished run beside the given one), the machine, the score (a fused system
or one branch) and the microphone of the spectrogram. It shows the machine's score
distributions (normal / anomaly x source / target) with the decision threshold, its
AUC_s / AUC_t / pAUC, and a clip list that starts with the worst false alarms and misses;
a picked clip gets near and far audio players, its log-mel spectrogram under every
fine-grained localisation map, and its score in every system and branch.

Only what the run wrote is read, once per run (cached). A system's decision threshold is
recomputed as `asdlib.fusion.run_systems` does: the ``decision_percentile`` of the machine's
fused bank self-scores (`fusion.calibrate` + `fusion.fuse` with the weights of
``06_fusion/fusion_config.json``, selection "dev"); a branch's is the same percentile of its
own bank self-scores. Pure functions hold the logic; the widget only draws. Audio is
embedded only in the live widget once a clip is picked (none at start, so the widget state
that an executed notebook saves holds no audio).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from asdlib import audio, experiment, fusion, metrics, scoring

FUSED_FILE = Path("06_fusion") / "fused_scores.csv"
FUSION_CONFIG_FILE = Path("06_fusion") / "fusion_config.json"
MAPS_DIR = Path("04_patch") / "maps"
#: The microphones a picked clip is played and drawn from (the residual is heard in both).
PLAYED_MICROPHONES = ("near", "far")


@dataclass
class RunTables:
    """What one run wrote: clip table (absolute paths), tidy branch scores (test rows and
    bank self-scores), fused test scores of selection "dev", and the fusion config."""

    run: experiment.Run
    clips: pd.DataFrame
    scores: pd.DataFrame
    fused: pd.DataFrame
    fusion_config: fusion.FusionConfig
    cache: dict = field(default_factory=dict, repr=False)
    machines: list[str] = field(init=False)
    systems: list[str] = field(init=False)
    branches: list[str] = field(init=False)
    sources: list[str] = field(init=False)  # every score a clip has: systems, then branches

    def __post_init__(self):
        self.machines = sorted(self.fused["machine"].unique())
        self.systems = sorted(self.fused["system"].unique())
        self.branches = list(dict.fromkeys(self.scores["branch"]))
        self.sources = self.systems + self.branches

    def calibrated(self, machine: str) -> pd.DataFrame:
        """The machine's branch scores with ``z`` (`asdlib.fusion.calibrate`), cached."""
        key = ("calibrated", machine)
        if key not in self.cache:
            self.cache[key] = fusion.calibrate(self.scores[self.scores["machine"] == machine])
        return self.cache[key]


def list_runs(results_dir: str | Path) -> list[str]:
    """Names of the finished runs under ``results_dir`` (folders with a config and fused scores)."""
    return sorted(p.name for p in Path(results_dir).iterdir()
                  if (p / "config.json").exists() and (p / FUSED_FILE).exists())


def load_run(run_dir: str | Path) -> RunTables:
    """The tables of a finished run, cached until one of its files changes."""
    run_dir = Path(run_dir).resolve()
    files = [run_dir / "config.json", run_dir / FUSED_FILE, run_dir / FUSION_CONFIG_FILE]
    files += [run_dir / step / "scores.csv" for step in scoring.SCORE_STEPS]
    missing = [str(p.relative_to(run_dir)) for p in files if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished run: {missing} missing")
    return _cached_run(str(run_dir), tuple(p.stat().st_mtime_ns for p in files))


@lru_cache(maxsize=8)
def _cached_run(run_dir: str, stamps: tuple[int, ...]) -> RunTables:
    run = experiment.Run.open(run_dir)
    fused = pd.read_csv(run.dir / FUSED_FILE, dtype={"name": str})
    return RunTables(run=run, clips=run.clip_table(), scores=scoring.load_scores(run),
                     fused=fused[fused["selection"] == "dev"].reset_index(drop=True),
                     fusion_config=fusion.FusionConfig.load(run.dir / FUSION_CONFIG_FILE))


def source_scores(tables: RunTables, machine: str, source: str) -> pd.DataFrame:
    """The machine's test clips under ``source`` (a system or a branch): one row per clip,
    columns name, score, domain, label, kind, sorted by name."""
    if source in tables.systems:
        rows = tables.fused[(tables.fused["machine"] == machine)
                            & (tables.fused["system"] == source)]
    elif source in tables.branches:
        s = tables.scores
        rows = s[(s["machine"] == machine) & (s["branch"] == source) & ~s["is_self"]]
    else:
        raise KeyError(f"{source!r} is neither a system {tables.systems} "
                       f"nor a branch {tables.branches}")
    if rows.empty:
        raise KeyError(f"no test scores of {source!r} for machine {machine!r}")
    columns = [c for c in ("name", "score", "domain", "label", "kind") if c in rows]
    return rows[columns].sort_values("name").reset_index(drop=True)


def decision_threshold(tables: RunTables, machine: str, source: str) -> float:
    """The ``decision_percentile`` of the machine's bank self-scores under ``source``: the
    fused ones for a system (what its ``decision`` column used), the raw ones for a branch."""
    key = ("threshold", machine, source)
    if key not in tables.cache:
        if source in tables.systems:
            weights = tables.fusion_config.weights[source]
            own = fusion.fuse(tables.calibrated(machine), weights)[1]["score"]
        else:
            s = tables.scores
            own = s.loc[(s["machine"] == machine) & (s["branch"] == source) & s["is_self"],
                        "score"]
        if own.empty:
            raise KeyError(f"no bank self-scores of {source!r} for machine {machine!r}")
        tables.cache[key] = float(own.quantile(tables.fusion_config.decision_percentile / 100))
    return tables.cache[key]


def labelled(rows: pd.DataFrame) -> bool:
    """True when every row has a normal/anomaly label (evaluation-set test clips have none)."""
    return "label" in rows and len(rows) > 0 and bool(rows["label"].notna().all())


def score_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """AUC_s, AUC_t, pAUC (`asdlib.metrics.machine_metrics`) and their harmonic mean of the
    test rows of one machine (columns label, score, domain)."""
    m = metrics.machine_metrics(rows["label"], rows["score"], rows["domain"])
    values = [m["auc_s"], m["auc_t"], m["pauc"]]
    return dict(zip(metrics.TABLE_COLUMNS, values + [metrics.hmean(values)]))


def worst_clips(rows: pd.DataFrame, threshold: float, n: int) -> pd.DataFrame:
    """The ``n`` highest-scoring normal clips (worst false alarms, highest first) and the
    ``n`` lowest-scoring anomalies (worst misses, lowest first), with columns ``error``
    ("false alarm" or "miss") and ``wrong`` (True where the threshold gets the clip wrong)."""
    normal = rows[rows["label"] == "normal"].sort_values("score", ascending=False).head(n)
    anomaly = rows[rows["label"] == "anomaly"].sort_values("score").head(n)
    return pd.concat([normal.assign(error="false alarm", wrong=normal["score"] > threshold),
                      anomaly.assign(error="miss", wrong=anomaly["score"] <= threshold)],
                     ignore_index=True)


def metrics_table(tables: RunTables, machine: str) -> pd.DataFrame:
    """One row per system and branch: AUC_s, AUC_t, pAUC, hmean, the decision threshold, how
    many clips score above it (flagged), how many of them are normal (false alarms) and how
    many anomalies do not (misses); the label-based columns are empty without labels."""
    out = {}
    for source in tables.sources:
        rows = source_scores(tables, machine, source)
        threshold = decision_threshold(tables, machine, source)
        above, known = rows["score"] > threshold, labelled(rows)
        anomaly = rows["label"] == "anomaly"
        out[source] = {**(score_metrics(rows) if known else
                          dict.fromkeys(metrics.TABLE_COLUMNS, np.nan)),
                       "threshold": threshold, "flagged": int(above.sum()),
                       "false alarms": int((above & ~anomaly).sum()) if known else None,
                       "misses": int((anomaly & ~above).sum()) if known else None}
    table = pd.DataFrame(out).T.rename_axis(machine)
    return table.astype({c: "Int64" for c in ("flagged", "false alarms", "misses")})


def clip_scores(tables: RunTables, machine: str, name: str) -> pd.DataFrame:
    """A test clip's score in every system and branch: rows source; columns score, z
    (calibrated, branches only), threshold, flagged (score above the threshold)."""
    cal = tables.calibrated(machine)
    z = cal[(cal["name"] == name) & ~cal["is_self"]].set_index("branch")["z"]
    out = {}
    for source in tables.sources:
        rows = source_scores(tables, machine, source)
        score = float(rows.loc[rows["name"] == name, "score"].iloc[0])
        threshold = decision_threshold(tables, machine, source)
        out[source] = {"score": score, "z": z.get(source, np.nan), "threshold": threshold,
                       "flagged": score > threshold}
    return pd.DataFrame(out).T


def clip_path(tables: RunTables, machine: str, name: str) -> str:
    """Absolute path of a test clip's wav."""
    c = tables.clips
    rows = c[(c["machine"] == machine) & (c["name"] == name) & (c["split"] == "test")]
    if rows.empty:
        raise KeyError(f"{machine}/{name} is not a test clip of the clip table")
    return str(rows["path"].iloc[0])


def clip_maps(tables: RunTables, machine: str, name: str) -> dict[str, np.ndarray]:
    """Every stored localisation map of a test clip: branch -> (T', 8) float32 (valid time
    patches x mel bands, `asdlib.scoring.load_maps`); empty when the run kept none."""
    path = tables.run.dir / MAPS_DIR / f"{machine}.npz"
    if not path.exists():
        return {}
    with np.load(path) as saved:
        branches = [k for k in saved.files if k not in ("names", "n_time")]
    rows = pd.DataFrame({"machine": [machine], "name": [name]})
    return {b: scoring.load_maps(path.parent, rows, b)[0] for b in branches}


# ----------------------------------------------------------------------------- drawing

def figure_png(fig, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def distribution_figure(rows: pd.DataFrame, threshold: float, title: str,
                        selected: str | None = None):
    """`asdlib.plots.score_distributions` of one machine's rows (without labels: the scores
    of each domain), the threshold as a dashed line and the ``selected`` clip as a star."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from asdlib import plots

    if labelled(rows):
        fig = plots.score_distributions(rows.assign(machine=title))
        fig.set_size_inches(6.0, 3.6)
        ax, group = fig.axes[0], rows["label"] + " / " + rows["domain"]
    else:  # an evaluation set
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        sns.stripplot(data=rows, x="domain", y="score", order=["source", "target"], ax=ax,
                      size=3, jitter=0.25)
        ax.set_title(f"{title} (test clips without labels)", fontsize=9)
        group = rows["domain"]
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    if selected is not None and (rows["name"] == selected).any():
        groups = [t.get_text() for t in ax.get_xticklabels()]
        clip = rows["name"] == selected
        ax.scatter([groups.index(group[clip].iloc[0])], rows.loc[clip, "score"], marker="*",
                   s=220, color="gold", edgecolors="k", zorder=5, label=selected)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig


def clip_figure(wave: np.ndarray, sr: int, maps: dict[str, np.ndarray], title: str,
                hop_frames: int = audio.PATCH_FRAMES):
    """Log-mel spectrogram of ``wave`` under each (T', 8) map of ``maps`` (a time step every
    ``hop_frames`` frames), one row each."""
    from asdlib import plots

    spec = plots.log_mel(wave, sr)
    return plots.localisation_maps([spec] * len(maps), list(maps.values()),
                                   [f"{title}: {branch}" for branch in maps],
                                   hop_frames=hop_frames)


def clip_label(row, width: int = 11) -> str:
    """One line of the clip list: error kind, score and name (whose DCASE form already
    says domain and label), without the section prefix and the extension."""
    name = re.sub(r"^section_\d+_|\.wav$", "", row.name)
    return f"{getattr(row, 'error', ''):<{width}} {row.score:+9.3f}  {name}"


# ----------------------------------------------------------------------------- widget

class Explorer:
    """The widget panel (``.panel``, shown by displaying the Explorer) over a finished run.

    run_dir: a run folder; the run control lists every finished run beside it.
    machine / source / channel: the first view ("" = first machine); n_clips: false alarms
    and misses listed first in the clip list (the other clips follow by score).
    """

    def __init__(self, run_dir: str | Path, machine: str = "", source: str = "System 4",
                 channel: str = "near", n_clips: int = 5):
        import ipywidgets as w

        run_dir = Path(run_dir).resolve()
        self.results_dir, self.n_clips, self.updating = run_dir.parent, n_clips, False
        self.tables = load_run(run_dir)
        wide, narrow = {"description_width": "initial"}, w.Layout(width="auto")
        self.run = w.Dropdown(options=list_runs(self.results_dir) or [run_dir.name],
                              value=run_dir.name, description="run", style=wide, layout=narrow)
        self.machine = w.Dropdown(description="machine", style=wide, layout=narrow)
        self.source = w.Dropdown(description="system / branch", style=wide, layout=narrow)
        self.channel = w.ToggleButtons(options=list(PLAYED_MICROPHONES), value=channel,
                                       style={"button_width": "4em"}, layout=narrow)
        self.summary = w.HTML()
        self.plot = w.Output(layout=w.Layout(width="56%"))
        self.clip = w.Select(rows=16, description="clip", layout=w.Layout(width="44%"))
        self.clip_view = w.Output(layout=w.Layout(width="62%"))
        self.clip_table = w.HTML(layout=w.Layout(width="38%"))
        self.panel = w.VBox([w.HBox([self.run, self.machine, self.source,
                                     w.Label("spectrogram"), self.channel]),
                             self.summary, w.HBox([self.plot, self.clip]),
                             w.HBox([self.clip_view, self.clip_table])])
        self.listed = None  # the machine of the clip list: its picked clip stays picked
        self.set_choices(machine, source)
        for control in (self.run, self.machine, self.source, self.clip, self.channel):
            control.observe(self.on_change, names="value")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.panel)

    def set_choices(self, machine: str = "", source: str = "") -> None:
        """Fill the machine and source controls from the current run and draw the view."""
        self.updating = True
        t = self.tables
        self.machine.options = t.machines
        self.machine.value = machine if machine in t.machines else t.machines[0]
        self.source.options = t.sources
        self.source.value = source if source in t.sources else t.sources[0]
        self.updating = False
        self.show_view()

    def on_change(self, change) -> None:
        """Redraw what a control changes (nothing while the controls are being filled)."""
        if self.updating:
            return
        if change["owner"] is self.run:
            self.tables = load_run(self.results_dir / change["new"])
            self.set_choices(self.machine.value, self.source.value)
        elif change["owner"] in (self.machine, self.source):
            self.show_view()
        else:
            if change["owner"] is self.clip:
                self.draw_distribution()  # with the picked clip starred
            self.show_clip()

    def show_view(self) -> None:
        """Clip list, distribution and summary of the chosen machine and source (the
        summary last: it tells a watcher that the view is complete)."""
        machine, source = self.machine.value, self.source.value
        rows = source_scores(self.tables, machine, source)
        threshold = decision_threshold(self.tables, machine, source)
        worst = worst_clips(rows, threshold, self.n_clips)
        rest = rows[~rows["name"].isin(worst["name"])].sort_values("score", ascending=False)
        listed = pd.concat([worst, rest], ignore_index=True)
        listed["error"] = listed["error"].fillna("")
        keep = self.clip.value if self.listed == machine else None
        self.updating, self.listed = True, machine
        self.clip.options = [(clip_label(r), r.name) for r in listed.itertuples()]
        self.clip.value = keep if keep in set(rows["name"]) else None
        self.updating = False
        self.draw_distribution()
        self.show_clip()
        rule = (f"threshold {threshold:.3g} (bank self-scores, "
                f"{self.tables.fusion_config.decision_percentile:g}th percentile): "
                f"{int((rows['score'] > threshold).sum())} of {len(rows)} test clips above it")
        if labelled(rows):
            m = score_metrics(rows)
            aucs = " · ".join(f"{k} <b>{100 * m[k]:.1f}</b> %" for k in metrics.TABLE_COLUMNS)
            about = f"{aucs} · {rule} · the list starts with the {self.n_clips} worst false " \
                    "alarms (normal clips scored highest) and misses (anomalies scored lowest)"
        else:
            about = f"no labels (an evaluation set), no AUC · {rule} · the list is by score"
        self.summary.value = f"<b>{machine}</b> · {source}: {about}"

    def draw_distribution(self) -> None:
        from IPython.display import Image

        machine, source = self.machine.value, self.source.value
        rows = source_scores(self.tables, machine, source)
        fig = distribution_figure(rows, decision_threshold(self.tables, machine, source),
                                  f"{machine} · {source}", self.clip.value)
        replace_output(self.plot, Image(data=figure_png(fig), format="png"))

    def show_clip(self) -> None:
        """Audio players, spectrogram with maps and per-source scores of the picked clip."""
        from IPython.display import HTML, Audio, Image

        name, machine = self.clip.value, self.machine.value
        if name is None:
            self.clip_table.value = ""
            replace_output(self.clip_view, HTML("<i>Pick a clip in the list (worst false "
                                                "alarms and misses first) to hear it and see "
                                                "its maps.</i>"))
            return
        t, path = self.tables, clip_path(self.tables, machine, name)
        row = source_scores(t, machine, self.source.value).set_index("name").loc[name]
        label = f"{row['label']} ({row.get('kind')})" if pd.notna(row["label"]) else "no label"
        items, waves = [HTML(f"<h4>{name}</h4><p>{machine} · {label} · {row['domain']} domain"
                             f" · {self.source.value} score {row['score']:.3f}</p>")], {}
        for channel in PLAYED_MICROPHONES:
            try:
                waves[channel] = audio.load_clip(path, channel=channel)
            except audio.AudioError as exc:
                items.append(HTML(f"<p>{channel} microphone: {exc}</p>"))
                continue
            items += [HTML(f"<b>{channel} microphone</b>"),
                      Audio(waves[channel][0], rate=waves[channel][1])]
        maps = clip_maps(t, machine, name)
        if self.channel.value in waves and maps:
            title = (f"{self.channel.value} spectrogram, maps of the "
                     f"{experiment.view_channel(t.run.config.channel)} channel")
            hop = scoring.map_hop_frames(t.run.dir / MAPS_DIR, machine)
            fig = clip_figure(*waves[self.channel.value], maps, title, hop_frames=hop)
            items.append(Image(data=figure_png(fig), format="png"))
        replace_output(self.clip_view, *items)
        table = clip_scores(t, machine, name).style.format(
            {"score": "{:.3f}", "z": "{:.2f}", "threshold": "{:.3f}"}, na_rep="").set_table_styles(
            [{"selector": "td, th", "props": "padding: 0.1em 0.6em"}])
        self.clip_table.value = f"<b>{name}: score in every system and branch</b>{table.to_html()}"


def replace_output(out, *objects) -> None:
    """Replace what the Output widget ``out`` shows with ``objects`` (works without a
    front end too, so tests can read ``out.outputs``)."""
    out.outputs = ()
    for obj in objects:
        out.append_display_data(obj)

