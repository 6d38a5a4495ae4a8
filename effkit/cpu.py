"""The CPU's fingerprint: vendor, model, and the instruction-set features that make runtimes pick other kernels.

Machines that report the same model name can differ in what matters here. "AMD EPYC" machines with AVX-512 VNNI
run int8 through `vpdpbusd`, which accumulates in 32 bits; AVX2-only ones run it through `vpmaddubsw`, whose 16-bit
pair sums saturate for uint8 x int8 operands (ONNX Runtime's U8S8 kernels), and XNNPACK's int8 there is no faster
than float32. So every figure effkit records carries this fingerprint, quantization defaults follow it
(`quantize.onnxruntime.ort_settings`), and the bench gate compares latency only within one `isa_class`.

Read from /proc/cpuinfo on Linux and `sysctl` on macOS; cheap, and no framework import.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The features that select different int8 / float kernels in XNNPACK, ONNX Runtime's MLAS and TensorFlow, in the
# order they are listed. Linux /proc/cpuinfo spellings.
X86_FEATURES = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "avx_vnni_int8",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
ARM_FEATURES = ("neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme")
X86_MACHINES = {"x86_64", "amd64", "i686", "i386"}
ARM_MACHINES = {"aarch64", "arm64", "armv7l", "armv8l"}

# Int8 dot-product instructions: with them int8 is exact in 32-bit accumulators and typically 2-4x float32's speed.
INT8_DOT_FEATURES = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}

# ARM implementer codes (/proc/cpuinfo "CPU implementer"), for a readable vendor.
ARM_IMPLEMENTERS = {"0x41": "ARM", "0x61": "Apple", "0x51": "Qualcomm", "0x48": "HiSilicon", "0xc0": "Ampere"}


@dataclass(frozen=True)
class CpuFingerprint:
    """What a latency or accuracy figure depends on, beyond the packages: the CPU's kernel-selecting features."""

    arch: str  # x86_64, aarch64, ...
    vendor: str  # GenuineIntel, AuthenticAMD, ARM, Apple, ...
    model: str  # the model name the OS reports
    features: tuple[str, ...]  # of X86_FEATURES / ARM_FEATURES, present on this CPU
    cores: int | None

    @property
    def isa_class(self) -> str:
        """The kernel class: CPUs of one class run the same int8/float kernels, so their latency ratios compare."""
        has = set(self.features)
        if self.arch in X86_MACHINES:
            for feature, label in (
                ("amx_int8", "amx"),
                ("avx512_vnni", "avx512-vnni"),
                ("avx_vnni", "avx-vnni"),
                ("avx512bw", "avx512"),
                ("avx2", "avx2"),
            ):
                if feature in has:
                    return f"x86_64-{label}"
            return "x86_64-sse"
        if self.arch in ARM_MACHINES:
            for feature, label in (("i8mm", "i8mm"), ("asimddp", "dotprod")):
                if feature in has:
                    return f"arm64-{label}"
            return "arm64-neon" if has & {"asimd", "neon"} else f"{self.arch}-basic"
        return f"{self.arch or 'unknown'}-unknown"

    @property
    def int8_dot(self) -> bool:
        """Has an int8 dot-product instruction (VNNI, AMX, dotprod, i8mm)."""
        return bool(INT8_DOT_FEATURES & set(self.features))

    @property
    def u8s8_saturates(self) -> bool:
        """ONNX Runtime's U8S8 kernels sum uint8 x int8 pairs in 16 bits (`vpmaddubsw`) on x86 without VNNI/AMX.

        Two products of 255 x 127 overflow int16, so full-range int8 weights can give wrong outputs there. ORT's
        quantization guide: use `reduce_range` (7-bit weights) or U8U8 on such CPUs.
        """
        return self.arch in X86_MACHINES and not self.int8_dot

    def describe(self) -> str:
        """One line for report headers: `AMD EPYC (x86_64-avx512-vnni: avx2 fma avx512f ...), 2 cores`."""
        features = " ".join(self.features) or "no SIMD features read"
        cores = f", {self.cores} cores" if self.cores else ""
        return f"{self.model} ({self.isa_class}: {features}){cores}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features), "isa_class": self.isa_class}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuFingerprint:
        return cls(
            arch=str(data.get("arch", "")),
            vendor=str(data.get("vendor", "")),
            model=str(data.get("model", "")),
            features=tuple(data.get("features") or ()),
            cores=data.get("cores"),
        )


def parse_cpuinfo(text: str, *, arch: str, cores: int | None = None) -> CpuFingerprint:
    """The fingerprint in a Linux /proc/cpuinfo text (the first processor's block is enough: cores are alike)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields.get("flags") or fields.get("features"):
                break  # the first processor's block is complete
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if arch in ARM_MACHINES or "cpu implementer" in fields:
        present = set(fields.get("features", "").split())
        implementer = fields.get("cpu implementer", "").lower()
        vendor = ARM_IMPLEMENTERS.get(implementer, implementer or "ARM")
        model = fields.get("model name") or fields.get("hardware") or f"{vendor} part {fields.get('cpu part', '?')}"
        features = tuple(f for f in ARM_FEATURES if f in present)
    else:
        present = set(fields.get("flags", "").split())
        vendor = fields.get("vendor_id", "unknown")
        model = fields.get("model name", "unknown")
        features = tuple(f for f in X86_FEATURES if f in present)
    return CpuFingerprint(arch=arch, vendor=vendor, model=model, features=features, cores=cores)


# macOS names its features differently; the keys here are sysctl's, lower-cased.
_DARWIN_X86 = {
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "avx1.0": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
}
_DARWIN_ARM = {
    "hw.optional.neon": "asimd",
    "hw.optional.arm.feat_fp16": "asimdhp",
    "hw.optional.arm.feat_dotprod": "asimddp",
    "hw.optional.arm.feat_i8mm": "i8mm",
    "hw.optional.arm.feat_bf16": "bf16",
}


def parse_sysctl(text: str, *, arch: str, cores: int | None = None) -> CpuFingerprint:
    """The fingerprint in `sysctl -a` output on macOS (Intel or Apple silicon)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values[key.strip().lower()] = value.strip()
    model = values.get("machdep.cpu.brand_string", "unknown")
    if arch in ARM_MACHINES:
        present = {name for key, name in _DARWIN_ARM.items() if values.get(key) == "1"}
        return CpuFingerprint(arch, "Apple", model, tuple(f for f in ARM_FEATURES if f in present), cores)
    words = " ".join(values.get(k, "") for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")).lower()
    present = {_DARWIN_X86[word] for word in words.split() if word in _DARWIN_X86}
    vendor = values.get("machdep.cpu.vendor", "unknown")
    return CpuFingerprint(arch, vendor, model, tuple(f for f in X86_FEATURES if f in present), cores)


@functools.cache
def fingerprint() -> CpuFingerprint:
    """This machine's fingerprint (read once per process)."""
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch) if platform.system() != "Darwin" else arch
    cores = os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    try:
        if cpuinfo.is_file():
            return parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"), arch=arch, cores=cores)
        if platform.system() == "Darwin":
            text = subprocess.run(["sysctl", "-a"], capture_output=True, text=True, timeout=5, check=False).stdout
            return parse_sysctl(text, arch=arch, cores=cores)
    except (OSError, subprocess.SubprocessError):
        pass
    return CpuFingerprint(
        arch=arch, vendor="unknown", model=platform.processor() or "unknown", features=(), cores=cores
    )
