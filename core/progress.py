"""Progress of long work as the user sees it: a count of the whole, the rate and an estimate of what is left.

On a terminal a tqdm bar; elsewhere (a log file, a study's driver under ``ray job submit``, CI) one line
every ``every`` seconds and at the end, so a long phase is never silent and a log stays readable.
"""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """``update(n)`` as work is done; ``close()`` at the end (also a context manager). ``enabled=False``
    makes every call a no-op (a caller that reports nothing)."""

    def __init__(self, total: int, desc: str, unit: str = "item", every: float = 30.0, enabled: bool = True,
                 stream=None) -> None:
        self.total, self.desc, self.unit, self.every, self.enabled = max(int(total), 0), desc, unit, every, enabled
        self.stream = stream or sys.stdout
        self.done, self.t0 = 0, time.perf_counter()
        self.last = self.t0
        self.bar = None
        if enabled and sys.stderr.isatty() and stream is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        text = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}s"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {_duration(elapsed * (self.total - self.done) / self.done)} left"
        return text

    def update(self, n: int = 1) -> None:
        if not self.enabled:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            print(self.line(), file=self.stream, flush=True)
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
