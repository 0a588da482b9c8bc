"""The progress bar every ``ditr import`` command draws (a helper module, not an import format).

The importers in ``ditr.io`` take a plain ``progress(done, total)`` callback; this turns it into a
rich bar on stderr, keeping stdout for the JSON report. When stderr is not a terminal (a batch
job's log) nothing is drawn: an animated bar would only show up once it has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def import_progress(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback counting ``unit`` (frames, scenes...) under ``label``."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True)
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
