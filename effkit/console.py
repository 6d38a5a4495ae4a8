"""Keeping libraries' own chatter off the user's terminal: `captured()` and `silenced()`.

They live in `effkit/edge/quiet.py`, so that the device side, which imports nothing else of effkit, silences LiteRT
the same way.
"""

from __future__ import annotations

from .edge.quiet import Captured, captured, silenced

__all__ = ["Captured", "captured", "silenced"]
