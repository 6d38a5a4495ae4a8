"""Keeping libraries' own chatter off the user's terminal.

LiteRT prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` from C++ when it sets an interpreter up, and
the TFLite converter, the LiteRT quantizer and ONNX Runtime's quantization tools print traces, progress bars and
log lines on stdout and stderr. A command's stdout is for its results and stderr for its one-line errors, so while
such a library runs both file descriptors point at a scratch file. Failures still reach the user through the
exceptions the libraries raise. Standard library only: the device side (`effkit-edge`) uses it too.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


class Captured:
    """What was printed inside `captured()`, once the block has ended."""

    text = ""


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Keep what C code (file descriptors 1 and 2) and Python print meanwhile off the terminal, and hand the C
    side back as text (TFLite Micro prints its errors and allocations there, not through Python)."""
    holder = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield holder
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            scratch.seek(0)
            holder.text = scratch.read().decode("utf-8", errors="replace")


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Keep libraries' prints off the terminal; what they printed is dropped."""
    with captured():
        yield
