"""The CPU's fingerprint: vendor, model, and the instruction-set features that make runtimes pick other kernels.

Machines that report the same model name can differ in what matters here. "AMD EPYC" machines with AVX-512 VNNI
run int8 through `vpdpbusd`, which accumulates in 32 bits; AVX2-only ones run it through `vpmaddubsw`, whose 16-bit
pair sums saturate for uint8 x int8 operands (ONNX Runtime's U8S8 kernels), and XNNPACK's int8 there is no faster
than float32. So every figure effkit records carries this fingerprint, quantization defaults follow it
(`quantize.onnxruntime.ort_settings`).

A class is too coarse to say when two latencies compare: ONNX Runtime's ConvInteger path moved 44% between two EPYC
generations of one class (x86_64-avx512-vnni, one without `avx_vnni`). So the fingerprint also keeps the vendor's
CPU family and model, and `kernels_key` (the full kernel-selecting feature set, vendor, family and model) is what
two machines must share for the bench gate to compare their latencies.

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
    "avx512dq",
    "avx512cd",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vbmi2",
    "avx512_bitalg",
    "avx512_vpopcntdq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "avx_vnni_int8",
    "avx_ne_convert",
    "avx_ifma",
    "gfni",
    "vpclmulqdq",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
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
    family: str | None = None  # x86 "cpu family" (AMD 25 = Zen 3/4, 26 = Zen 5), ARM "CPU architecture"
    model_number: str | None = None  # x86 "model", ARM "CPU implementer:CPU part"; None where not read

    @property
    def kernels_key(self) -> str:
        """What two machines must share for their latencies to compare: architecture, vendor, family, model and
        every kernel-selecting feature. A record without family and model (made before effkit read them) has
        `?` there, so it compares only with another such record."""
        return "/".join(
            (self.arch, self.vendor, self.family or "?", self.model_number or "?", ",".join(sorted(self.features)))
        )

    @property
    def slug(self) -> str:
        """A file-name-safe name of `kernels_key`: `x86_64-avx2.authenticamd-25-1.3f9a0c`, the class first so
        that a folder of baselines sorts by class."""
        import hashlib
        import re

        parts = (self.vendor, self.family or "unknown", self.model_number or "unknown")
        where = "-".join(re.sub(r"[^a-z0-9]+", "", part.lower()) or "x" for part in parts)
        digest = hashlib.sha256(self.kernels_key.encode()).hexdigest()[:6]
        return f"{self.isa_class}.{where}.{digest}"

    def same_kernels(self, other: CpuFingerprint | None) -> bool:
        """Whether latencies measured on `other` compare with ones measured here."""
        return other is not None and self.kernels_key == other.kernels_key

    def difference(self, other: CpuFingerprint) -> str:
        """What differs from `other`'s kernels, in words: `avx_vnni here only; family 26 here, 25 there`."""
        found = []
        for label, mine, theirs in (
            ("arch", self.arch, other.arch),
            ("vendor", self.vendor, other.vendor),
            ("family", self.family, other.family),
            ("model", self.model_number, other.model_number),
        ):
            if mine != theirs:
                found.append(f"{label} {mine or 'unrecorded'} here, {theirs or 'unrecorded'} there")
        here_only = [f for f in self.features if f not in other.features]
        there_only = [f for f in other.features if f not in self.features]
        if here_only:
            found.append(f"{' '.join(here_only)} here only")
        if there_only:
            found.append(f"{' '.join(there_only)} there only")
        return "; ".join(found) or "nothing"

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
        """One line for report headers: `AMD EPYC family 25 model 1 (x86_64-avx2: avx2 fma ...), 2 cores`."""
        features = " ".join(self.features) or "no SIMD features read"
        cores = f", {self.cores} cores" if self.cores else ""
        where = "".join(
            f" {label} {value}" for label, value in (("family", self.family), ("model", self.model_number)) if value
        )
        return f"{self.model}{where} ({self.isa_class}: {features}){cores}"

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
            family=_text_or_none(data.get("family")),
            model_number=_text_or_none(data.get("model_number")),
        )


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


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
        family = fields.get("cpu architecture") or None
        part = fields.get("cpu part", "").lower()
        model_number = f"{implementer}:{part}" if implementer and part else None
    else:
        present = set(fields.get("flags", "").split())
        vendor = fields.get("vendor_id", "unknown")
        model = fields.get("model name", "unknown")
        features = tuple(f for f in X86_FEATURES if f in present)
        family = fields.get("cpu family") or None
        model_number = fields.get("model") or None
    return CpuFingerprint(arch, vendor, model, features, cores, family=family, model_number=model_number)


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
    "avx512dq": "avx512dq",
    "avx512cd": "avx512cd",
    "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi",
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
    family = values.get("machdep.cpu.family") or values.get("hw.cpufamily") or None
    model_number = values.get("machdep.cpu.model") or None
    if arch in ARM_MACHINES:
        present = {name for key, name in _DARWIN_ARM.items() if values.get(key) == "1"}
        features = tuple(f for f in ARM_FEATURES if f in present)
        return CpuFingerprint(arch, "Apple", model, features, cores, family=family, model_number=model_number)
    words = " ".join(values.get(k, "") for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")).lower()
    present = {_DARWIN_X86[word] for word in words.split() if word in _DARWIN_X86}
    vendor = values.get("machdep.cpu.vendor", "unknown")
    features = tuple(f for f in X86_FEATURES if f in present)
    return CpuFingerprint(arch, vendor, model, features, cores, family=family, model_number=model_number)


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
