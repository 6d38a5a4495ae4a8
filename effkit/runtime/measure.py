"""What effkit measures of a variant: size, accuracy, parity with the reference, weight sparsity, latency.

No framework imports: runtimes hand in predictions and callables, models hand in their weights.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CompressConfig, Format, LatencyConfig, ParityConfig, Quant
from ..load.classifier import Head, ModelInfo, OutputKind, predicted_classes
from ..types import Latency, Parity
from .base import Runner

# The weights tfmot prunes (Dense/Conv kernels, embeddings, pointwise and recurrent kernels).
PRUNABLE_WEIGHTS = ("kernel", "embeddings", "pointwise_kernel", "recurrent_kernel")


def file_sizes(path: Path) -> tuple[int, int]:
    """Raw bytes and gzip -9 bytes of an artifact: a file, or a folder (a SavedModel) as a .tar.gz of it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return sum(p.stat().st_size for p in files), len(gzip.compress(_tar(path, files), compresslevel=9, mtime=0))
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))


def _tar(root: Path, files: list[Path]) -> bytes:
    """The files as an uncompressed tar with fixed metadata, so equal folders give equal bytes."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for file in files:
            info = tarfile.TarInfo(str(file.relative_to(root)))
            data = file.read_bytes()
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def top1(outputs: np.ndarray, labels: np.ndarray, kind: OutputKind) -> float:
    """Top-1 accuracy as a fraction."""
    return float(np.mean(correct_samples(outputs, labels, kind)))


def primary_top1(info: ModelInfo, outputs: list[np.ndarray], labels: Mapping[str, np.ndarray]) -> float:
    """Top-1 of the model's primary (first classification) head, from all its outputs and per-head labels."""
    return top1(info.primary_output(outputs), labels[info.primary.name], info.primary.kind)


def primary_correct(info: ModelInfo, outputs: list[np.ndarray], labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Which test samples the primary head gets right (kept per variant, packed, for paired tests)."""
    return correct_samples(info.primary_output(outputs), labels[info.primary.name], info.primary.kind)


def correct_samples(outputs: np.ndarray, labels: np.ndarray, kind: OutputKind) -> np.ndarray:
    """Which samples the top-1 prediction gets right, in test order (kept per variant for paired tests)."""
    return predicted_classes(outputs, kind) == labels.reshape(len(labels))


def mae(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error of a regression head."""
    return float(np.mean(np.abs(outputs.reshape(len(targets), -1) - targets.reshape(len(targets), -1))))


def parity(reference: np.ndarray, outputs: np.ndarray, kind: OutputKind) -> Parity:
    """How closely `outputs` follow `reference` (both dequantized float outputs on the same samples)."""
    if reference.shape != outputs.shape:
        raise ValueError(f"output shape {outputs.shape} differs from the reference {reference.shape}")
    difference = np.abs(reference.astype(np.float64) - outputs.astype(np.float64))
    agreement = None
    if kind != OutputKind.REGRESSION:
        agreement = float(np.mean(predicted_classes(reference, kind) == predicted_classes(outputs, kind)) * 100.0)
    return Parity(
        max_abs_diff=float(difference.max()), mean_abs_diff=float(difference.mean()), top1_agreement=agreement
    )


def parity_problem(
    result: Parity, reference: np.ndarray, *, quantization: Quant, config: ParityConfig, regression: bool = False
) -> str | None:
    """Why an artifact's parity misses the threshold for its precision, or None when it is within it.

    float32 and float16 artifacts must agree on nearly every top-1 prediction and stay within a small absolute
    difference (scaled by the largest reference output when outputs are logits larger than 1). Quantized ones must
    agree on `quantized_agreement` percent of top-1 predictions; a quantized regression head's mean absolute
    difference must stay under `regression_rel_diff` times the spread (std) of its reference outputs. On a test
    split of fewer than 1,000 samples, 99.9% would allow no flip at all, so float artifacts may differ on one
    sample (a near-tie that float16 rounding can tip).
    """
    if quantization in (Quant.NONE, Quant.FLOAT16):
        scale = max(1.0, float(np.max(np.abs(reference))))
        limit = (config.float32_max_diff if quantization == Quant.NONE else config.float16_max_diff) * scale
        samples = len(reference)
        agreement = min(config.float_agreement, 100.0 * (samples - 1) / samples) if samples > 1 else 100.0
    else:
        limit = None
        agreement = config.quantized_agreement
    problems = []
    if regression and limit is None:  # a quantized regression head: its error must stay small against its spread
        spread = float(np.std(reference))
        if result.mean_abs_diff > config.regression_rel_diff * spread:
            problems.append(
                f"mean abs output difference {result.mean_abs_diff:.3g} > {config.regression_rel_diff:g} x the "
                f"reference's spread ({spread:.3g})"
            )
    if result.top1_agreement is not None and result.top1_agreement < agreement:
        problems.append(f"top-1 agreement with Keras {result.top1_agreement:.2f}% < {agreement:g}%")
    if limit is not None and result.max_abs_diff > limit:
        problems.append(f"max abs output difference {result.max_abs_diff:.3g} > {limit:.3g}")
    return "; ".join(problems) or None


def parity_problems(
    heads: Sequence[Head],
    parities: Mapping[str, Parity],
    references: Sequence[np.ndarray],
    *,
    quantization: Quant,
    config: ParityConfig,
) -> list[str]:
    """Why each of an artifact's heads misses its parity threshold (`parity_problem`), named by head when the
    model has several; empty when every head is within its threshold."""
    problems = []
    for head, reference in zip(heads, references, strict=True):
        problem = parity_problem(
            parities[head.name], reference, quantization=quantization, config=config, regression=not head.classifies
        )
        if problem:
            problems.append(f"{head.name}: {problem}" if len(heads) > 1 else problem)
    return problems


def weight_sparsity(model: Any) -> tuple[float, dict[str, float]]:
    """Share of exact zeros in the prunable kernels: overall, and per layer (either Keras generation)."""
    zeros = total = 0
    per_layer: dict[str, float] = {}
    for layer in leaf_layers(model):
        layer_zeros = layer_total = 0
        for weight in layer.weights:
            if weight_name(weight) in PRUNABLE_WEIGHTS:
                values = np.asarray(weight.numpy())
                layer_zeros += int(values.size - np.count_nonzero(values))
                layer_total += int(values.size)
        if layer_total:
            per_layer[layer.name] = layer_zeros / layer_total
            zeros += layer_zeros
            total += layer_total
    return (zeros / total if total else 0.0), per_layer


def m_by_n_pattern(weights: np.ndarray, m: int, n: int, *, axis: int = -1) -> bool:
    """Whether every group of `n` consecutive weights along `axis` (the input channels: the last axis of a TFLite
    FULLY_CONNECTED or CONV_2D weight, [out, in] and [out, h, w, in]) has at most `m` nonzero values, i.e. at least
    n - m zeros. A short last group counts as padded with zeros, as tfmot pads it.
    """
    nonzero = np.moveaxis(np.asarray(weights) != 0, axis, -1)
    pad = -nonzero.shape[-1] % n
    if pad:
        nonzero = np.concatenate([nonzero, np.zeros((*nonzero.shape[:-1], pad), dtype=bool)], axis=-1)
    groups = nonzero.reshape(-1, n)
    return bool(np.all(groups.sum(axis=1) <= m))


def leaf_layers(model: Any):
    """Every layer that is not itself a model, nested models' layers included (either Keras generation)."""
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "layers", None):
            yield from leaf_layers(layer)
        else:
            yield layer


def weight_name(weight: Any) -> str:
    """`kernel`, `bias`, `embeddings`...: a weight's own name without its layer path or `:0` (either generation)."""
    return (getattr(weight, "path", None) or weight.name).split("/")[-1].split(":")[0]


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` samples, repeated when there are fewer: what latency is timed on."""
    return x[:batch] if len(x) >= batch else np.resize(x, (batch, *x.shape[1:]))


def time_latency(
    call: Callable[[], Any], *, config: LatencyConfig, batch: int, threads: int, runtime: dict | None = None
) -> Latency:
    """Time `call` under effkit's one latency protocol (`edge.timing.time_calls`, the loop a device runs too):
    warm-up for at least `warmup_runs` calls and `warmup_seconds`, then single calls until both `min_runs` and
    `min_seconds` are reached (or `max_seconds` passes), with the garbage collector paused."""
    from ..edge.timing import time_calls

    return Latency.from_seconds(time_calls(call, config), batch=batch, threads=threads, runtime=runtime)


def latency_grid(
    runner: Runner, reopen: Callable[[int], Runner], x: np.ndarray, config: CompressConfig, fmt: Format
) -> list[Latency]:
    """One latency per (thread count, batch size) of `config.latency`, timed on `batch_of(x, batch)`; the first is
    `runner`'s own (the first thread count), `reopen(threads)` opens the artifact at another thread count."""
    latency = config.latency
    # Keras runs on TensorFlow's own thread pool, fixed for the process: one thread count to report.
    thread_counts = latency.threads if fmt != Format.KERAS else latency.threads[:1]
    grid = []
    for threads in thread_counts:
        timed = runner if threads == latency.threads[0] else reopen(threads)
        for batch in latency.batches:
            grid.append(
                time_latency(
                    timed.bind(batch_of(x, batch)),
                    config=latency,
                    batch=batch,
                    threads=timed.threads,
                    runtime=timed.runtime,
                )
            )
    return grid
