"""What several benchmarks share: this process's memory, and a feature source named on the
command line (a run folder, or ``dcase:<work folder>`` of `benchmarks/dcase_rehearsal.py`).

Benchmarks import it as a sibling (their folder on ``sys.path``)."""

from __future__ import annotations

import resource
from pathlib import Path


def status_gib(field: str) -> float:
    """A memory line of /proc/self/status in GiB (VmRSS: now, VmHWM: peak); NaN without it."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    """Peak resident set size of this process, GiB. VmHWM belongs to the process's own
    address space; ru_maxrss (the fallback) would also carry the parent's peak over fork +
    exec."""
    peak = status_gib("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def open_source(source: str):
    """(feature store, clip table) of a run folder, or of ``dcase:<dcase_rehearsal work
    folder>`` (its store.txt and data/)."""
    if source.startswith("dcase:"):
        from asdlib import data, features

        work = Path(source[len("dcase:"):])
        return (features.FeatureStore(Path((work / "store.txt").read_text())),
                data.scan_dataset(work / "data"))
    from asdlib import experiment

    run = experiment.Run.open(source)
    return run.feature_store(), run.clip_table()
