"""Where a unit of work runs: the small interface the search submits its artifact tasks through.

`TaskPool.submit(fn, *args)` returns a `Task`. The base pool runs the work here and now; the suites' Ray executor
(`effkit.suites.ray.RayExecutor`) runs it as a task on one CPU of a cluster. It lives below the search and the
suites, so that both can use it without importing each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class TaskPool:
    """Runs units of work; this base runs each in line, as it is submitted. Use as a context manager."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        """`fn(*args)` as one unit of work, where this pool runs work: here and now, or as a task on one CPU of a
        cluster (Ray), its arguments and result shipped by value. An argument that is a `Task` (of this pool) stands
        for its value. What `fn` raises, `Task.result()` raises."""
        return Done.of(fn, *[arg.result() if isinstance(arg, Task) else arg for arg in args])

    def close(self) -> None:
        """Release what the pool started."""

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Task(ABC):
    """A unit of work `TaskPool.submit` started."""

    @abstractmethod
    def done(self) -> bool:
        """Whether `result()` would return at once."""

    @abstractmethod
    def result(self) -> Any:
        """Its value, waiting for it; raises what the work raised."""

    def cancel(self) -> None:  # noqa: B027 (work done in line has nothing to cancel)
        """Stop it if it is still running."""


class Done(Task):
    """Work already done, in this process."""

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self._value, self._error = value, error

    @classmethod
    def of(cls, fn: Callable[..., Any], *args: Any) -> Done:
        try:
            return cls(fn(*args))
        except KeyboardInterrupt:
            raise
        except Exception as error:
            return cls(error=error)

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value
