"""Progress of a screen for people: a run counter, the current run's steps, and one line per finished run.

The runner calls a ``Progress`` object; the trainer reports its steps through ``on_step(step, total)``
(a callback, never by printing text that someone parses). Two renderings:

* ``BarProgress``: tqdm bars (runs, and the current run's steps) for an interactive terminal;
* ``LineProgress``: plain lines only (no carriage returns), for a log file, ``tee`` or nohup, where
  interleaved bars turn into unreadable lines.

``make_progress(enabled, stream)`` picks one by ``stream.isatty()``; ``enabled=False`` keeps the run lines
and drops the bars. Executors that run several runs at once (Ray) report ``cluster(running, queued)``
instead of steps: a line per change, or the runs bar's postfix.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence, TextIO


class LineProgress:
    """Plain lines: one per finished run (and a note when a screen resumes). Steps are not drawn."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def start(self, name: str, total: int, done: int) -> None:
        pass

    def run_started(self, label: str, total_steps: int) -> None:
        pass

    def on_step(self, step: int, total: int) -> None:
        pass

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run_finished(self, text: str) -> None:
        self.line(text)

    def cluster(self, running: Sequence[str], queued: int) -> None:
        """Concurrent runs (Ray): which are running where, and how many wait; a line each time it changes."""
        self.line(f"running {len(running)}, queued {queued}" + (": " + ", ".join(running) if running else ""))

    def close(self) -> None:
        pass


class BarProgress(LineProgress):
    """tqdm bars on a terminal: the screen's runs (position 0) and the current run's steps (position 1)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._runs: Any = None
        self._steps: Any = None

    def start(self, name: str, total: int, done: int) -> None:
        from tqdm import tqdm

        self._runs = tqdm(total=total, initial=done, desc=name, unit="run", file=self.stream, dynamic_ncols=True)

    def run_started(self, label: str, total_steps: int) -> None:
        from tqdm import tqdm

        self._close_steps()
        self._steps = tqdm(total=total_steps or None, desc=label, unit="step", position=1, leave=False,
                           file=self.stream, dynamic_ncols=True)

    def on_step(self, step: int, total: int) -> None:
        if self._steps is None:
            return
        if self._steps.total != total:
            self._steps.total = total
        self._steps.n = min(step, total)
        self._steps.refresh()

    def line(self, text: str) -> None:
        if self._runs is None:
            super().line(text)
        else:
            self._runs.write(text, file=self.stream)

    def run_finished(self, text: str) -> None:
        self._close_steps()
        self.line(text)
        if self._runs is not None:
            self._runs.update(1)

    def cluster(self, running: Sequence[str], queued: int) -> None:
        if self._runs is None:
            super().cluster(running, queued)
        else:
            self._runs.set_postfix_str(f"{len(running)} running, {queued} queued")

    def _close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def close(self) -> None:
        self._close_steps()
        if self._runs is not None:
            self._runs.close()
            self._runs = None


def make_progress(enabled: bool = True, stream: TextIO | None = None) -> LineProgress:
    """Bars on an interactive terminal when ``enabled``; plain lines otherwise."""
    stream = stream or sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    return BarProgress(stream) if enabled and interactive else LineProgress(stream)
