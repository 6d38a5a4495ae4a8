"""Fine-tunes in a child process, so that a native crash costs one step and not the run.

TensorFlow's oneDNN kernels can crash a training run natively (SIGSEGV, or glibc's `malloc(): ...` abort) on some
CPUs and models; no Python handler survives that. `Isolation.run` runs a step in a spawned child instead, through
the standard library's `ProcessPoolExecutor`: arguments and results travel by pickling (Keras models pickle
themselves), the child's log records come back through a queue to the `effkit` logger, and `faulthandler` in the
child names the fatal signal. A crashed step is retried once in a fresh child with `TF_ENABLE_ONEDNN_OPTS=0`, which
TensorFlow reads only when it is imported, which is why this needs a child at all; after such a crash every later
step of the run gets a child with oneDNN off.

Only fine-tunes go to a child: they are where the crash happened, and their seconds dwarf a child's cost (one
TensorFlow import per run, measured at 8 to 9 s to the first epoch on a 2-core EPYC family 25, x86_64-avx2,
then a pickled model each way). Conversion, quantization and
measurement stay in this process. `EFFKIT_CRASH_CHILD` makes the child abort for real (`os.abort()`, SIGABRT) before
its step, so the crash path is tested on CPUs where oneDNN does not crash: `abort` while oneDNN is on, `always`
also with it off.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import re
import sys
import tempfile
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from .errors import StageError, one_line_reason

log = logging.getLogger("effkit")

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
CRASH_TEST = "EFFKIT_CRASH_CHILD"  # "abort" (while oneDNN is on) or "always": the child aborts before its step
FATAL_ERRORS = {  # faulthandler's words for the signals it reports
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Floating-point exception": "SIGFPE",
    "Floating point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}


class ChildCrashed(StageError):
    """A step's child process died natively (a signal, not a Python exception)."""

    def __init__(self, reason: str, signal: str):
        super().__init__(reason)
        self.signal = signal


class Isolation:
    """Runs steps in one reusable child process (or in line, when not `enabled`). Use as a context manager."""

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self.onednn_off: str | None = None  # why later children run with oneDNN off (the crash that made it so)
        self._pool: ProcessPoolExecutor | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._fault_path: Path | None = None
        self._queue: Any = None
        self._listener: logging.handlers.QueueListener | None = None

    def run(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict[str, str]]:
        """`fn(*args, **kwargs)` in the child; `label` names the step in a crash's reason ("prune 50% fine-tune").

        Returns:
            Its value, and what the step's record should add: {} normally; after a crash, `isolation` says which
            signal and that the step was retried (or ran) with oneDNN off.

        Raises:
            What `fn` raised; ChildCrashed when its child died natively twice, the second time with oneDNN off.
        """
        if not self.enabled:
            return fn(*args, **kwargs), {}
        if self.onednn_off is not None:
            return self._call(label, fn, args, kwargs, retried=False), {"isolation": f"oneDNN off ({self.onednn_off})"}
        try:
            return self._call(label, fn, args, kwargs, retried=False), {}
        except ChildCrashed as crash:
            self.onednn_off = f"{crash.signal} in {label}"
            log.warning("%s: the child process crashed (%s); retrying once with %s=0", label, crash.signal, ONEDNN)
        value = self._call(label, fn, args, kwargs, retried=True)
        return value, {"isolation": f"crashed: {self.onednn_off}; retried with {ONEDNN}=0"}

    def _call(self, label: str, fn: Callable[..., Any], args: tuple, kwargs: dict, *, retried: bool) -> Any:
        try:
            payload = pickle.dumps((fn, args, kwargs))
        except Exception as error:  # e.g. a model holding an object of the user's that does not pickle
            log.info("%s: runs in this process, as it cannot be sent to a child (%s)", label, one_line_reason(error))
            return fn(*args, **kwargs)
        pool = self._ensure_pool()
        try:
            with _main_unseen():
                future = pool.submit(_in_child, payload)  # starts the child when the pool has none
            return future.result()
        except NotPortable as error:  # a custom layer registered only in this process, say
            log.info("%s: runs in this process, as a child cannot load it (%s)", label, error)
            return fn(*args, **kwargs)
        except BrokenProcessPool:
            fatal = self._fatal_signal()
            self._discard_pool()
            reason = f"crashed: {fatal} in {label}"
            if retried:
                reason += f", also with {ONEDNN}=0"
            raise ChildCrashed(reason, fatal) from None
        except KeyboardInterrupt:
            self._discard_pool()
            raise

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is not None:
            return self._pool
        context = multiprocessing.get_context("spawn")  # a fork of a process running TensorFlow is not safe
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="effkit-child-")
            self._queue = context.Queue()
            self._listener = logging.handlers.QueueListener(self._queue, _Relog())
            self._listener.start()
        handle, name = tempfile.mkstemp(prefix="fault-", suffix=".txt", dir=self._scratch.name)  # one per child
        os.close(handle)
        self._fault_path = Path(name)
        env = {ONEDNN: "0"} if self.onednn_off is not None else {}
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_child_start,
            initargs=(str(self._fault_path), env, self._queue, logging.getLogger("effkit").getEffectiveLevel()),
        )
        return self._pool

    def _fatal_signal(self) -> str:
        """The signal faulthandler named in the dead child's fault file."""
        try:
            text = self._fault_path.read_text(errors="replace") if self._fault_path else ""
        except OSError:
            text = ""
        match = re.search(r"Fatal Python error: ([A-Za-z -]+)", text)
        if match:
            words = match.group(1).strip()
            return FATAL_ERRORS.get(words, words)
        return "the child process died without a fault report (killed, e.g. out of memory)"

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the child and the log relay."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> Isolation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Relog(logging.Handler):
    """Hands a child's log record to this process's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


_fault_file = None  # the child's open fault file (faulthandler needs it kept open)


def _child_start(fault_path: str, env: dict[str, str], queue: Any, level: int) -> None:
    """In the child, before anything imports TensorFlow: its environment, its fault report and its log relay."""
    global _fault_file
    os.environ.update(env)
    _fault_file = open(fault_path, "w")  # noqa: SIM115 (open for the child's lifetime)
    faulthandler.enable(file=_fault_file, all_threads=False)
    root = logging.getLogger("effkit")
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(level)
    root.propagate = False
    from .load import keras_compat

    keras_compat.tf_keras()  # imported now, with the environment above and TensorFlow's start-up noise silenced


@contextlib.contextmanager
def _main_unseen():
    """Start children without re-running the caller's script: spawn would import `__main__` in the child, which
    re-runs a script that calls `effkit.compress` without an `if __name__ == "__main__":` guard. A step never needs
    it: what it runs is effkit's and comes pickled by reference."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class NotPortable(Exception):
    """The child could not unpickle a step: what it needs exists only in the parent process."""


def _in_child(payload: bytes) -> Any:
    try:
        fn, args, kwargs = pickle.loads(payload)
    except Exception as error:
        raise NotPortable(one_line_reason(error)) from None
    mode = os.environ.get(CRASH_TEST)
    if mode == "always" or (mode == "abort" and os.environ.get(ONEDNN) != "0"):
        os.abort()
    return fn(*args, **kwargs)
