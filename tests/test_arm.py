"""Bundles on ARM: the runtime-only distribution verifies the golden outputs on an aarch64 Python under qemu-user
(`bench/arm_verify.py`), where XNNPACK and ONNX Runtime take their ARM code paths. Skipped, saying why, where this
machine cannot emulate aarch64."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from effkit.ship.bundle import make_bundle

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "arm_verify.py"


def _arm_verify():
    spec = importlib.util.spec_from_file_location("arm_verify", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mobile_and_onnx_bundles_verify_on_aarch64(compressed, tmp_path):
    arm = _arm_verify()
    try:
        arm.check()
    except arm.Unavailable as why:
        pytest.skip(f"aarch64 emulation is not available here: {why}")
    report, run = compressed
    mobile = make_bundle(run, target="mobile", out=tmp_path / "mobile").path
    onnx = next(v.name for v in report.variants if v.format == "onnx" and v.quantization == "int8" and v.ok)
    onnx_bundle = make_bundle(run, target="mobile", variant=onnx, out=tmp_path / "onnx").path
    results = arm.verify_on_arm([mobile, onnx_bundle], arm.DEFAULT_CACHE)
    for result in results:
        assert result["ok"], result["line"]
        assert result["top1_agreement_pct"] >= 99.0 and result["max_abs_diff"] is not None
        assert "arm64" in result["device"] and "asimddp" in result["device"]  # the device described itself as ARM
