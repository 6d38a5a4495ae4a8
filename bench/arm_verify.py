"""Benchmark: do effkit's bundles compute the same on ARM? `effkit-edge verify` under aarch64 user-mode emulation.

Phones, Raspberry Pis and Jetsons are aarch64, where XNNPACK and ONNX Runtime take other code paths (NEON,
dotprod, i8mm; no VNNI). This runs the runtime-only distribution (`effkit/edge`) on an aarch64 Python under
qemu-user and checks each bundle's golden outputs there:

1. an aarch64 sysroot: Debian's arm64 packages of Python 3.11 and the C libraries it and the wheels need, fetched
   with `apt-get download` and unpacked with `dpkg -x` (nothing is installed on this machine);
2. aarch64 wheels of numpy, ai-edge-litert and onnxruntime, the versions this machine runs, fetched by pip from the
   package registry (`--platform manylinux..._aarch64`) and unpacked beside `effkit/edge`;
3. `qemu-aarch64-static -cpu neoverse-n1` runs `effkit-edge verify` on each bundle. ONNX Runtime's CPU detection
   reads /proc/cpuinfo and crashes on the host's x86 text (qemu 7.2: SIGSEGV at import), so the run happens in a
   private mount namespace (`unshare --mount`, root) where /proc/cpuinfo is an ARM Neoverse N1's (asimd, asimddp).

Timing under emulation means nothing: no latency is reported, only agreement and max |diff| against the outputs
effkit recorded on this machine, and whether each bundle passes its own tolerance.

Usage: python bench/arm_verify.py BUNDLE... [--cache DIR] [--json FILE]
       python bench/arm_verify.py --check     (exit 0 when emulation can run here; else prints why, exit 2)
Exit code 0 when every bundle verifies on aarch64, 1 when one does not, 2 when emulation is not available here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBS = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1", "libstdc++6",
    "zlib1g", "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libcrypt1", "libuuid1", "libsqlite3-0",
    "libtinfo6", "libncursesw6", "libreadline8", "libgomp1",
)  # fmt: skip
RUNTIMES = ("numpy", "ai-edge-litert", "onnxruntime")
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
CPU = "neoverse-n1"
CPUINFO = """processor\t: {n}
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effkit-arm"


class Unavailable(Exception):
    """Emulation cannot run here; the message says why and what would make it."""


def qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name)
        if found:
            return found
    raise Unavailable("qemu-user is not installed (Debian: apt-get install qemu-user-static)")


def check() -> str:
    """The qemu binary, after checking everything emulation needs that this machine may lack."""
    binary = qemu()
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"):
        raise Unavailable("a private mount namespace needs Linux, root and unshare (to give ONNX Runtime an ARM "
                          "/proc/cpuinfo)")  # fmt: skip
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise Unavailable(f"unshare --mount is refused here: {probe.stderr.strip()[:200]}")
    return binary


def sysroot(cache: Path) -> Path:
    """An unpacked aarch64 Debian sysroot holding Python 3.11, made once in `cache`."""
    root = cache / "root"
    if (root / "usr/bin/python3.11").exists():
        return root
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        raise Unavailable("no apt-get/dpkg to fetch Debian's arm64 Python (or give --cache with a root/ made before)")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    architectures = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout
    if "arm64" not in architectures.split():
        subprocess.run(["dpkg", "--add-architecture", "arm64"], check=True)
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
    done = subprocess.run(["apt-get", "download", *(f"{name}:arm64" for name in DEBS)], cwd=debs,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise Unavailable(f"apt-get download of the arm64 packages failed: {done.stderr.strip()[-300:]}")
    partial = cache / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True)
    partial.rename(root)
    return root


def site(cache: Path) -> Path:
    """aarch64 wheels of the runtimes this machine has, unpacked, with this checkout's effkit/edge beside them."""
    versions = {name: metadata.version(name) for name in RUNTIMES}
    tag = "-".join(f"{n}{v}" for n, v in versions.items())
    folder = cache / f"site-{tag}"
    if not folder.exists():
        wheels = cache / "wheels"
        command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
                   "--implementation", "cp", "-d", str(wheels)]  # fmt: skip
        for platform in PLATFORMS:
            command += ["--platform", platform]
        done = subprocess.run([*command, *(f"{n}=={v}" for n, v in versions.items())], capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"pip could not fetch the aarch64 wheels: {done.stderr.strip()[-300:]}")
        partial = cache / f"{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(partial)
        partial.rename(folder)
    edge = folder / "effkit"
    shutil.rmtree(edge, ignore_errors=True)
    shutil.copytree(ROOT / "effkit" / "edge", edge / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    (edge / "__init__.py").write_text("")
    return folder


def run_arm(code: str, *, root: Path, packages: Path, binary: str, cache: Path) -> subprocess.CompletedProcess:
    """`python3.11 -c code` on aarch64, with an ARM /proc/cpuinfo in a private mount namespace."""
    cpuinfo = cache / "cpuinfo"
    cpuinfo.write_text("\n".join(CPUINFO.format(n=n) for n in range(2)))
    program = f"import sys; sys.path.insert(0, {str(packages)!r}); {code}"
    inner = (f"mount --bind {cpuinfo} /proc/cpuinfo && exec {binary} -cpu {CPU} -L {root} "
             f"{root}/usr/bin/python3.11 -c \"$0\"")  # fmt: skip
    return subprocess.run(["unshare", "--mount", "sh", "-c", inner, program], capture_output=True, text=True)


def verify_on_arm(bundles: list[Path], cache: Path) -> list[dict]:
    binary = check()
    root, packages = sysroot(cache), site(cache)
    probe = run_arm("import platform; print(platform.machine())", root=root, packages=packages, binary=binary,
                    cache=cache)  # fmt: skip
    if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
        raise Unavailable(f"the aarch64 Python does not start under {binary}: {probe.stderr.strip()[-300:]}")
    results = []
    for bundle in bundles:
        code = (f"from effkit.edge.__main__ import main; from effkit.edge.cpu import fingerprint; "
                f"print(fingerprint().describe()); sys.exit(main(['verify', {str(bundle)!r}]))")  # fmt: skip
        done = run_arm(code, root=root, packages=packages, binary=binary, cache=cache)
        lines = (done.stdout + done.stderr).strip().splitlines()
        line = lines[-1] if lines else f"no output (exit {done.returncode})"
        agreement = re.search(r"top-1 agreement ([\d.]+)%", line)
        diff = re.search(r"max \|diff\| ([\d.e+-]+)", line)
        results.append({
            "bundle": str(bundle),
            "ok": done.returncode == 0,
            "exit": done.returncode,
            "top1_agreement_pct": float(agreement.group(1)) if agreement else None,
            "max_abs_diff": float(diff.group(1)) if diff else None,
            "device": lines[0] if len(lines) > 1 else None,
            "line": line,
        })  # fmt: skip
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", help="bundle folders made by `effkit bundle`")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"sysroot and wheels (default {DEFAULT_CACHE})")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--check", action="store_true", help="only say whether emulation can run here")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        if args.check or not args.bundles:
            print(f"aarch64 emulation available: {check()}")
            return 0
        results = verify_on_arm([Path(b).resolve() for b in args.bundles], cache)
    except Unavailable as why:
        print(f"aarch64 emulation not available: {why}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result['bundle']}: {'ok' if result['ok'] else 'FAILED'} on aarch64 ({CPU}, qemu-user): "
              f"{result['line']}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": CPU, "emulated": True, "results": results}, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
