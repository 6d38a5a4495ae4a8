"""Ctrl-C and SIGTERM: stop the run, keep what is finished.

A signal normally raises KeyboardInterrupt wherever Python happens to be. When that is inside a finalizer (LiteRT's
`Interpreter.__del__`, say), Python prints "Exception ignored" and carries on, so the interruption would be lost.
The handler here also records the request, and the pipeline checks it between variants with `check()`.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

_requested = False


def _handle(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested, even one whose first KeyboardInterrupt was swallowed."""
    if _requested:
        raise KeyboardInterrupt


def install() -> Callable[[], None]:
    """Handle SIGTERM (and SIGINT, unless the process was started with it ignored); returns a function to undo it."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _requested = False
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _handle)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _handle)
    previous_hook = sys.unraisablehook

    def unraisable(info) -> None:
        # The swallowed KeyboardInterrupt is re-raised by check(); its "Exception ignored" page is noise.
        if not (_requested and issubclass(info.exc_type, KeyboardInterrupt)):
            previous_hook(info)

    sys.unraisablehook = unraisable

    def restore() -> None:
        global _requested
        _requested = False  # the request ended the command that installed the handler; it must not stop the next
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook

    return restore
