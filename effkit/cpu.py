"""The CPU's fingerprint, for the rest of effkit. It lives in `effkit.edge.cpu`, so that a device running only the
runtime distribution (`effkit-edge bench`) describes itself with the same parser as the machine that compresses."""

from __future__ import annotations

from .edge.cpu import (
    ARM_FEATURES,
    ARM_IMPLEMENTERS,
    ARM_MACHINES,
    CpuFingerprint,
    fingerprint,
    parse_cpuinfo,
    parse_sysctl,
)

__all__ = [
    "ARM_FEATURES",
    "ARM_IMPLEMENTERS",
    "ARM_MACHINES",
    "CpuFingerprint",
    "fingerprint",
    "parse_cpuinfo",
    "parse_sysctl",
]
