"""The runtime-only install, measured: a fresh virtual environment with `pip install ./effkit/edge[litert,onnx]`,
its site-packages size (target: under 250 MB), and `effkit-edge verify` there on bundles of `make demo`'s output.

    python bench/edge_env.py                    # bundles effkit-out/digits_cnn (run `make demo` first)
    python bench/edge_env.py --run DIR --keep /tmp/edge-env

Exit 0 when every bundle verifies in that environment, TensorFlow is absent from it, and the size is under target.
Needs the package registry (pip); prints what it measured.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 250


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="effkit-out/digits_cnn", help="an effkit compress folder to bundle")
    parser.add_argument("--keep", help="build the environment here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="effkit-edge-"))
    env = work / "env"
    shutil.rmtree(env, ignore_errors=True)
    started = time.perf_counter()
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    source = work / "edge-src" / "edge"  # a copy: pip builds in the source tree, and the checkout stays clean
    shutil.rmtree(source.parent, ignore_errors=True)
    shutil.copytree(
        ROOT / "effkit" / "edge", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"{source}[litert,onnx]"], check=True)
    installed = time.perf_counter() - started
    site = next((env / "lib").glob("python3*/site-packages"))
    size = folder_mb(site)
    without_pip = (
        size - sum(folder_mb(p) for p in site.glob("pip*")) - sum(folder_mb(p) for p in site.glob("setuptools*"))
    )
    no_tf = subprocess.run([python, "-c", "import tensorflow"], capture_output=True).returncode != 0
    print(
        f"runtime-only environment: {size:.0f} MB site-packages ({without_pip:.0f} MB without pip and setuptools), "
        f"installed in {installed:.0f}s; TensorFlow importable: {not no_tf}"
    )
    ok = no_tf and size < TARGET_MB
    bundles = work / "bundles"
    shutil.rmtree(bundles, ignore_errors=True)
    for target in ("mobile", "mcu"):
        out = bundles / target
        made = subprocess.run(
            [sys.executable, "-m", "effkit", "bundle", args.run, "--target", target, "--out", str(out), "--quiet"],
            capture_output=True,
            text=True,
        )
        print(f"effkit bundle --target {target}: {(made.stdout or made.stderr).strip()}")
        if made.returncode != 0:
            ok = False
            continue
        checked = subprocess.run([env / "bin" / "effkit-edge", "verify", str(out)], capture_output=True, text=True)
        print(f"effkit-edge verify (no TensorFlow): {(checked.stdout or checked.stderr).strip().splitlines()[-1]}")
        ok &= checked.returncode == 0
    print("PASS" if ok else "FAIL", f"(site-packages target < {TARGET_MB} MB)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
