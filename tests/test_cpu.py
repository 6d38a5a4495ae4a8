"""The CPU fingerprint, parsed from captured descriptions of several CPU families."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from effkit.cpu import CpuFingerprint, fingerprint, parse_cpuinfo, parse_sysctl

SAMPLES = Path(__file__).parent / "data" / "cpuinfo"

# file -> (arch, isa_class, int8 dot product, U8S8 saturates, vendor, a feature that must be read)
EXPECTED = {
    "amd_epyc_avx512_vnni.txt": ("x86_64", "x86_64-avx512-vnni", True, False, "AuthenticAMD", "avx512_vnni"),
    "amd_epyc_avx2.txt": ("x86_64", "x86_64-avx2", False, True, "AuthenticAMD", "fma"),
    "intel_xeon_skylake_avx512.txt": ("x86_64", "x86_64-avx512", False, True, "GenuineIntel", "avx512bw"),
    "intel_xeon_cascadelake_vnni.txt": ("x86_64", "x86_64-avx512-vnni", True, False, "GenuineIntel", "avx512_vnni"),
    "intel_xeon_sapphire_rapids_amx.txt": ("x86_64", "x86_64-amx", True, False, "GenuineIntel", "amx_int8"),
    "intel_core_alderlake_avx_vnni.txt": ("x86_64", "x86_64-avx-vnni", True, False, "GenuineIntel", "avx_vnni"),
    "arm_graviton2_neoverse_n1.txt": ("aarch64", "arm64-dotprod", True, False, "ARM", "asimddp"),
    "arm_graviton3_neoverse_v1.txt": ("aarch64", "arm64-i8mm", True, False, "ARM", "sve"),
    "arm_raspberry_pi4_cortex_a72.txt": ("aarch64", "arm64-neon", False, False, "ARM", "asimd"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cpuinfo_samples_give_their_class(name):
    arch, isa_class, int8_dot, saturates, vendor, feature = EXPECTED[name]
    cpu = parse_cpuinfo((SAMPLES / name).read_text(), arch=arch, cores=2)
    assert cpu.isa_class == isa_class
    assert cpu.int8_dot is int8_dot
    assert cpu.u8s8_saturates is saturates
    assert cpu.vendor == vendor
    assert feature in cpu.features
    assert cpu.cores == 2


def test_avx2_and_vnni_epyc_share_a_name_but_not_a_class():
    vnni = parse_cpuinfo((SAMPLES / "amd_epyc_avx512_vnni.txt").read_text(), arch="x86_64")
    avx2 = parse_cpuinfo((SAMPLES / "amd_epyc_avx2.txt").read_text(), arch="x86_64")
    assert vnni.model == avx2.model == "AMD EPYC"
    assert vnni.isa_class != avx2.isa_class
    assert not any(f.startswith("avx512") for f in avx2.features)
    assert {"avx2", "fma", "f16c"} <= set(avx2.features)


def test_only_the_first_processor_block_is_read():
    text = (SAMPLES / "amd_epyc_avx512_vnni.txt").read_text()
    second = text.replace("avx512_vnni", "")  # a later block that says otherwise is ignored
    cpu = parse_cpuinfo(text.split("\n\n")[0] + "\n\n" + second, arch="x86_64")
    assert "avx512_vnni" in cpu.features


def test_apple_silicon_sysctl():
    cpu = parse_sysctl((SAMPLES / "darwin_apple_m1_sysctl.txt").read_text(), arch="arm64", cores=8)
    assert cpu.model == "Apple M1" and cpu.vendor == "Apple"
    assert cpu.isa_class == "arm64-dotprod"
    assert "i8mm" not in cpu.features and "asimdhp" in cpu.features


def test_fingerprint_round_trips_through_json_and_describes_itself():
    cpu = parse_cpuinfo((SAMPLES / "amd_epyc_avx2.txt").read_text(), arch="x86_64", cores=2)
    data = cpu.to_dict()
    assert data["isa_class"] == "x86_64-avx2" and isinstance(data["features"], list)
    assert CpuFingerprint.from_dict(data) == cpu
    assert cpu.describe() == f"AMD EPYC family 25 model 17 (x86_64-avx2: {' '.join(cpu.features)}), 2 cores"
    legacy = CpuFingerprint.from_dict({k: v for k, v in data.items() if k not in ("family", "model_number")})
    assert legacy.family is None and legacy.describe() == f"AMD EPYC (x86_64-avx2: {' '.join(cpu.features)}), 2 cores"


FAMILY_AND_MODEL = {  # file -> (family, model) as /proc/cpuinfo gives them; ARM: architecture, implementer:part
    "amd_epyc_avx512_vnni.txt": ("25", "17"),
    "intel_xeon_skylake_avx512.txt": ("6", "85"),
    "arm_graviton2_neoverse_n1.txt": ("8", "0x41:0xd0c"),
    "arm_raspberry_pi4_cortex_a72.txt": ("8", "0x41:0xd08"),
}


@pytest.mark.parametrize("name", sorted(FAMILY_AND_MODEL))
def test_family_and_model_are_read(name):
    arch = "aarch64" if name.startswith("arm") else "x86_64"
    cpu = parse_cpuinfo((SAMPLES / name).read_text(), arch=arch)
    assert (cpu.family, cpu.model_number) == FAMILY_AND_MODEL[name]


def test_one_class_two_generations_do_not_share_kernels():
    """An EPYC without avx_vnni (family 25) and one with it (family 26) are both x86_64-avx512-vnni; their latency
    ratios moved 44% apart, so neither the features nor the family may be left out of what must match."""
    zen4 = parse_cpuinfo((SAMPLES / "amd_epyc_avx512_vnni.txt").read_text(), arch="x86_64", cores=2)
    with_avx_vnni = replace(zen4, features=(*zen4.features, "avx_vnni"))
    family_26 = replace(zen4, family="26")
    model_2 = replace(zen4, model_number="2")
    for other in (with_avx_vnni, family_26, model_2):
        assert other.isa_class == zen4.isa_class == "x86_64-avx512-vnni"
        assert not zen4.same_kernels(other) and zen4.kernels_key != other.kernels_key
        assert zen4.slug != other.slug and zen4.slug.startswith("x86_64-avx512-vnni.authenticamd-25-")
    assert zen4.same_kernels(replace(zen4, cores=16, model="AMD EPYC 9R14"))  # the name and core count do not matter
    assert zen4.difference(with_avx_vnni) == "avx_vnni there only"
    assert zen4.difference(family_26) == "family 25 here, 26 there"
    assert "avx512dq" in zen4.features and "gfni" in zen4.features  # the whole kernel-selecting set is read


def test_this_machine_has_a_fingerprint_without_importing_tensorflow():
    cpu = fingerprint()
    assert cpu.arch and cpu.model
    if Path("/proc/cpuinfo").is_file() and cpu.arch == "x86_64":
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        assert ("avx512_vnni" in flags.split()) == ("avx512_vnni" in cpu.features)
    code = "import sys; from effkit.cpu import fingerprint; fingerprint(); print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_an_unknown_architecture_is_a_class_of_its_own():
    assert CpuFingerprint("riscv64", "?", "?", (), None).isa_class == "riscv64-unknown"
    assert not CpuFingerprint("riscv64", "?", "?", (), None).u8s8_saturates
