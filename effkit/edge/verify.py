"""`verify`: the bundle's golden inputs through this device's runtime, against the outputs effkit recorded.

It passes when every output is within the manifest's tolerance and the predicted classes agree on at least the
manifest's share of samples. A changed artifact fails earlier, at load (sha256).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .manifest import GOLDEN, BundleError, first_line
from .tensors import probabilities


@dataclass(frozen=True)
class Verdict:
    ok: bool
    samples: int
    top1_agreement: float  # share of golden samples whose predicted class matches the recorded one
    max_abs_diff: float  # largest output difference from the recorded outputs, over every output
    reason: str | None  # one line when not ok

    def line(self) -> str:
        head = "ok" if self.ok else "FAILED"
        text = (
            f"{head}: {self.samples} golden samples, top-1 agreement {self.top1_agreement:.2%}, "
            f"max |diff| {self.max_abs_diff:.3g}"
        )
        return text if self.ok else f"{text}: {self.reason}"


def golden(bundle: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The golden inputs and the outputs effkit recorded for them, one array per manifest output."""
    path = Path(bundle) / manifest["golden"].get("file", GOLDEN)
    try:
        with np.load(path, allow_pickle=False) as data:
            x = data["x"]
            expected = [data[f"y{i}"] for i in range(len(manifest["outputs"]))]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise BundleError(f"{path.name} is missing or damaged: {first_line(error)}") from None
    return x, expected


class Loaded(Protocol):
    """What verifying reads of a loaded bundle (`model.EdgeModel`)."""

    bundle: Path
    manifest: dict[str, Any]
    outputs: list[dict[str, Any]]

    def predict_all(self, x: np.ndarray) -> list[np.ndarray]: ...


def verify_model(model: Loaded) -> Verdict:
    x, expected = golden(model.bundle, model.manifest)
    spec = model.manifest["golden"]
    try:
        outputs = model.predict_all(x)
    except BundleError:
        raise
    except Exception as error:  # a runtime that cannot run its own file here: a verdict, not a crash
        return Verdict(False, len(x), 0.0, float("inf"), f"the runtime failed: {error}".splitlines()[0])
    problems, worst, agreements = [], 0.0, []
    for i, (output, got, want) in enumerate(zip(model.outputs, outputs, expected, strict=True)):
        diff = float(np.max(np.abs(got - want))) if got.size else 0.0
        worst = max(worst, diff)
        atol = float(spec["atol"][i])
        if not diff <= atol:  # NaN fails too
            off = int(np.sum(np.any(np.abs(got - want).reshape(len(x), -1) > atol, axis=1)))
            problems.append(f"{output['name']}: {off} of {len(x)} samples differ by more than {atol:.3g}")
        if output["kind"] != "regression":
            same = np.argmax(probabilities(got, output["kind"]), 1) == np.argmax(probabilities(want, output["kind"]), 1)
            agreements.append(float(np.mean(same)))
    agreement = min(agreements, default=1.0)
    floor = float(spec.get("min_top1_agreement", 0.99))
    if agreement < floor:
        problems.insert(0, f"top-1 agreement {agreement:.2%} is below {floor:.0%}")
    reason = None
    if problems:
        reason = "; ".join(problems) + " (this runtime computes differently from the one effkit measured)"
    return Verdict(not problems, len(x), agreement, worst, reason)
