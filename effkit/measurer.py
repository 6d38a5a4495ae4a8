"""The one measurer of an artifact on test: accuracy and parity against its source model on the whole test split
(every head), sizes, latency under the one protocol at every batch size and thread count, its runtime's peak memory,
and what TFLite Micro makes of a .tflite. Every variant of the grid and every search candidate confirmed on test is
measured here (the search's own validation figures are the judge's, `search.judge`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import interrupt
from .config import CompressConfig, Format
from .errors import one_line_reason
from .load.classifier import Head, ModelInfo
from .load.data import Dataset
from .report.outdir import shown_path
from .runtime import Runner, open_runner
from .runtime.measure import (
    file_sizes,
    latency_grid,
    mae,
    parity,
    parity_problems,
    primary_correct,
    primary_top1,
    top1,
)
from .runtime.probe import peak_memory
from .stats import pack_correct
from .types import Latency, Source, Status, Variant

log = logging.getLogger("effkit")


@dataclass(frozen=True, kw_only=True)
class Measurer:
    """What every artifact of one compress run is measured with."""

    config: CompressConfig
    info: ModelInfo
    dataset: Dataset
    test_labels: dict[str, np.ndarray]
    artifacts: Path
    baseline_top1: float
    time_latency: bool = True  # False: latency is left to a separate timing task (`compress(time_latency=False)`)

    def measure_variant(
        self, variant: Variant, runner: Runner, path: Path, source: Source, *, load_ms: float | None
    ) -> Variant:
        """Accuracy and parity on the whole test split (every head), sizes, latency under the one protocol at every
        batch size and thread count, and (when asked) the runtime's peak memory in a process of its own."""
        interrupt.check()
        x_test = self.dataset.x_test
        try:
            outputs = runner.predict(x_test)
            accuracy = primary_top1(self.info, outputs, self.test_labels)
            heads = {
                head.name: _head_figures(head, output, reference, self.test_labels[head.name])
                for head, output, reference in zip(self.info.heads, outputs, source.test_outputs, strict=True)
            }
            size_bytes, gzip_bytes = file_sizes(path)
            grid = self.latency_grid_of(runner, path, Format(variant.format)) if self.time_latency else []
            latency = grid[0] if grid else None
            memory = None
            if self.config.latency.memory and variant.format != Format.KERAS:
                memory = peak_memory(
                    path,
                    Format(variant.format),
                    batch=self.config.latency.batches[0],
                    threads=self.config.latency.threads[0],
                )
            variant = replace(
                variant,
                sparsity=round(source.sparsity, 4),
                size_bytes=size_bytes,
                gzip_bytes=gzip_bytes,
                top1=accuracy,
                correct=pack_correct(primary_correct(self.info, outputs, self.test_labels)),
                top1_delta_pp=round((accuracy - self.baseline_top1) * 100, 4),
                latency_ms=latency,
                latency_grid=tuple(grid) if len(grid) > 1 else None,
                load_ms=None if load_ms is None else round(load_ms, 3),
                memory_mb=memory,
                parity=heads[self.info.primary.name]["parity"],
                heads=(
                    {name: {**f, "parity": f["parity"].to_dict()} for name, f in heads.items()}
                    if len(heads) > 1
                    else None
                ),
            )
        except Exception as error:
            return failed_variant(variant, error)
        if variant.format == Format.TFLITE:
            variant = replace(variant, micro=self.micro_record(variant, path))
        problems = parity_problems(
            self.info.heads,
            {name: figures["parity"] for name, figures in heads.items()},
            source.test_outputs,
            quantization=variant.quantization,
            config=self.config.parity,
        )
        if problems:
            problems += [step.params["note"] for step in variant.steps if step.params.get("clipped_biases")]
            log.warning("%-30s MISMATCH: %s", variant.name, "; ".join(problems))
            return replace(variant, status=Status.MISMATCH, error="; ".join(problems))
        log.info(
            "%-30s ok  top-1 %.2f%%  %7.1f KiB  gzip %7.1f KiB  p50 %s",
            variant.name,
            accuracy * 100,
            size_bytes / 1024,
            gzip_bytes / 1024,
            f"{latency.p50:.4f} ms" if latency else "(timed apart)",
        )
        return variant

    def micro_record(self, variant: Variant, path: Path) -> dict[str, Any]:
        """Whether TFLite Micro runs the file, its resolver entries and measured arena (`micro.check`), and for a
        clustered full-integer file its LUT-compressed copy beside it. Information only: it never fails a variant."""
        from .ship import micro

        try:
            record = micro.check(path).to_dict()
            if record["runs"] and record["full_integer"] and any(step.stage == "cluster" for step in variant.steps):
                lut = micro.lut_compress(path, path.with_name(f"{path.stem}-lut{path.suffix}"))
                if lut is not None:
                    record["lut"] = {**lut, "path": shown_path(Path(lut["path"]), self.artifacts.parent)}
        except Exception as error:
            reason = f"the TFLite Micro check failed: {one_line_reason(error)}"
            log.warning("%-30s %s", variant.name, reason)
            return {"runs": False, "reason": reason, "full_integer": False, "ops": [], "arena_bytes": None}
        log.debug("%s: TFLite Micro %s", variant.name, record)
        return record

    def latency_grid_of(self, runner: Runner, path: Path, fmt: Format) -> list[Latency]:
        """One latency per (thread count, batch size); the first is the runner's own (first thread count)."""
        return latency_grid(
            runner, lambda threads: self.runner(path, fmt, threads=threads), self.dataset.x_test, self.config, fmt
        )

    def runner(self, artifact: Any, fmt: Format, *, threads: int | None = None) -> Runner:
        latency = self.config.latency
        names = [head.name for head in self.info.heads]
        return open_runner(
            artifact,
            fmt,
            threads=threads or latency.threads[0],
            ort_optimization=latency.ort_optimization,
            outputs=names,
        )


def _head_figures(head: Head, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A head's metric (top-1 for a classification head, MAE for a regression head) and its parity."""
    metric = {"top1": top1(outputs, labels, head.kind)} if head.classifies else {"mae": mae(outputs, labels)}
    return {**metric, "parity": parity(reference, outputs, head.kind)}


def failed_variant(variant: Variant, error: BaseException) -> Variant:
    reason = one_line_reason(error)
    log.warning("%-30s FAILED: %s", variant.name, reason)
    log.debug("%s failed", variant.name, exc_info=error)
    return replace(variant, status=Status.FAILED, error=reason)
