"""Progress you can see: a bar in a notebook, lines on the pipeline's console.

Long loops (adaptation epochs, extraction, scoring) go through `track`. Interactively it is
a tqdm bar. Under the pipeline, whose notebooks run in kernels nobody watches, the pipeline
sets ``ASDLIB_PROGRESS_FILE`` and `track` appends a line there every few seconds (what,
how far, the rate, the time left); the pipeline prints those lines on its console while the
step runs, and the executed notebooks keep no progress-bar noise.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Iterator, TypeVar

ENV = "ASDLIB_PROGRESS_FILE"
EVERY_S = 3.0  # seconds between two console lines of one loop

T = TypeVar("T")


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def report(line: str) -> None:
    """Append one line to the progress file (no-op outside the pipeline)."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(line.rstrip("\n") + "\n")


class _Lines:
    """Writes ``desc: i/total unit (rate, time left)`` lines, at most every ``EVERY_S``."""

    def __init__(self, desc: str, total: int | None, unit: str):
        self.desc, self.total, self.unit = desc, total, unit
        self.start = self.last = time.perf_counter()
        self.count = 0
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if now - self.last >= EVERY_S or (self.total is not None and self.count >= self.total):
            self.last = now
            self.write(now)

    def write(self, now: float) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        left = ""
        if self.total and rate > 0 and self.count < self.total:
            left = f", {_duration((self.total - self.count) / rate)} left"
        post = f" · {self.postfix}" if self.postfix else ""
        speed = (f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate == 0
                 else f"{_duration(1 / rate)} each")
        report(f"{self.desc}: {done} {self.unit} ({speed}{left}){post}")

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass


def bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A progress object with ``update(n)``, ``set_postfix(**kw)`` and ``close()``: a tqdm bar
    interactively, console lines under the pipeline, nothing when not ``enabled``."""
    if os.environ.get(ENV):
        return _Lines(desc, total, unit) if enabled else _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool = True) -> Iterator[T]:
    """Iterate ``iterable`` showing progress (see the module docstring)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    progress = bar(total, desc, unit, enabled)
    try:
        for item in iterable:
            yield item
            progress.update(1)
    finally:
        progress.close()
