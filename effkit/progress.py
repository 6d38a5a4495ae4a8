"""Progress bars with an ETA for long work (training epochs, the variant loop, a suite's models).

Only on a terminal: when stderr is not one (CI, a pipe, a log file) or the run is --quiet, nothing is drawn and the
timestamped progress lines stay as they are. Bars live in one display (rich), so nested work (a suite's models,
each model's variants, a fine-tune's epochs) shows as stacked bars, and log lines print above them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

_display: Any = None  # the live rich.progress.Progress while any bar is open
_open = 0
_enabled = False


def enable(on: bool) -> None:
    """Let bars be drawn (the CLI calls this unless --quiet); they still need stderr to be a terminal."""
    global _enabled
    _enabled = on


def drawing() -> bool:
    """Whether a bar would be drawn now."""
    return _enabled and sys.stderr.isatty()


@contextlib.contextmanager
def bar(description: str, total: int, *, console: Any = None) -> Iterator[Callable[[int], None]]:
    """A bar of `total` steps; yields `advance(steps=1)`. A no-op unless drawing (or given a `console`)."""
    global _display, _open
    if total < 1 or (console is None and not drawing()):
        yield lambda steps=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if _display is None:
        _display = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(file=sys.stderr),
            transient=True,
        )
        _display.start()
    display = _display
    task = display.add_task(description, total=total)
    _open += 1
    try:
        yield lambda steps=1: display.advance(task, steps)
    finally:
        display.remove_task(task)
        _open -= 1
        if _open == 0:
            display.stop()
            _display = None
