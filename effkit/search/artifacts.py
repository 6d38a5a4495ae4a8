"""The artifact moves: a source's quantized .tflite files, made from its float .tflite alone (the LiteRT
quantizer's per-layer plans from `plans`, selective int8), and the one measurer of an artifact on validation.
`ArtifactMaker` holds only what that needs, so it is what an artifact task is sent (`make_artifacts`): no Keras
model, no training data, nothing of the driver.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import interrupt
from ..config import Format, LatencyConfig
from ..errors import one_line_reason
from ..export.tflite import pattern_check
from ..runtime.measure import batch_of, file_sizes, time_latency
from ..types import Source, Step
from .budget import Deadline
from .judge import Judge
from .plans import FloatLadder, quantization_plans
from .records import Artifact, Candidate, Decision, Trace, since
from .sensitivity import Sensitivity

# Candidates are timed under a short protocol; the chosen ones get the full one when measured on test.
QUICK_LATENCY = LatencyConfig(warmup_runs=3, warmup_seconds=0.02, min_runs=30, min_seconds=0.05, max_seconds=1.0)


@dataclass
class ArtifactMaker:
    """Makes a source's quantized artifacts and measures each on validation, recording them in `trace`."""

    judge: Judge
    trace: Trace
    calibration: np.ndarray
    sensitivity: Sensitivity | None
    int4_max_drop: float
    threads: int  # the headline thread count and batch: what the quick latency is timed at
    batch: int
    scratch: Path
    deadline: Deadline
    timed_here: bool = True  # False in an artifact task: its quick latency is timed by the driver
    micro_flash: bool = False  # --target mcu: record each full-integer file's TFLite Micro flash (`flash_of`)
    floats_needed: int = 0  # float ops the last selective int8 plan needed: the next source starts there
    budget_spent: bool = False
    on_check: Callable[[], None] | None = field(default=None, repr=False)  # the driver's: merge finished tasks

    def for_task(self) -> ArtifactMaker:
        """What an artifact task is sent: the same settings and budget state, an empty trace, nothing timed and
        nothing to merge. The task gives it its own scratch folder and deadline (`make_artifacts`)."""
        return replace(self, trace=Trace(), timed_here=False, on_check=None)

    def out_of_time(self) -> bool:
        """The budget is spent, and there is something to show for it: the first artifact within budget is always
        made, however short the budget."""
        interrupt.check()
        if self.on_check is not None:
            self.on_check()
        if self.deadline.passed() and self.trace.any_kept():
            self.budget_spent = True
        return self.budget_spent

    def quantized_artifacts(self, source: Source) -> None:
        """The source's quantized .tflite candidates, each plan chosen from the sensitivity table: what needs only
        the float .tflite, not the Keras model."""
        plans = dict(
            quantization_plans(self.sensitivity, budget_pp=self.judge.budget_pp, int4_max_drop=self.int4_max_drop)
        )
        for index, (label, plan) in enumerate(plans.items()):
            if index and self.out_of_time():  # the first plan is always made: a kept model never goes without one
                return
            self.quantized(source, label, plan)
        a8 = self.trace.artifacts.get(f"{source.name}-a8")
        octav = self.octav_int8(source, plans["a8"], a8)
        if (
            a8 is not None
            and a8.candidate.decision == Decision.DROPPED
            and (octav is None or octav.candidate.decision == Decision.DROPPED)
        ):
            self.selective_int8(source, a8)
        wide = self.trace.artifacts.get(f"{source.name}-w4w")
        if wide is not None and wide.candidate.decision == Decision.DROPPED:
            self.int4_between(source, plans.get("w4", plans["w8"]), plans["w4w"])

    def octav_int8(self, source: Source, plan, uniform: Artifact | None) -> Artifact | None:
        """Full-integer int8 with the quantizer's OCTAV weight clipping (`a8o`), when the min-max file does not
        agree with its model on every validation sample: the same bytes, and the judge keeps whichever does
        better (README, "Compress a model you did not train", has what it measured)."""
        if uniform is None or uniform.candidate.agreement is None or uniform.candidate.agreement >= 100.0:
            return None
        if self.out_of_time():
            return None
        self.quantized(source, "a8o", replace(plan, weight_algorithm="octav"),
                       why="OCTAV weight clipping: the min-max int8 file misses its model on validation")  # fmt: skip
        return self.trace.artifacts.get(f"{source.name}-a8o")

    def int4_between(self, source: Source, strict, wide) -> None:
        """The wide int4 plan missed: bisect between the strict set and it, adding the extra layers cheapest
        first (int4 cost alone, then the most weights), so the largest set within budget is found in a few rungs."""
        from ..config import Precision

        have = {layer for layer, precision in strict.layers if precision == Precision.INT4}
        rows = {row.layer: row for row in self.sensitivity.layers} if self.sensitivity else {}
        extra = [layer for layer, precision in wide.layers if precision == Precision.INT4 and layer not in have]
        extra.sort(
            key=lambda layer: (rows[layer].int4_drop_pp or 0.0, -rows[layer].weights) if layer in rows else (0, 0)
        )
        kept, missed = 0, len(extra)
        while missed - kept > 1:
            if self.out_of_time():
                return
            count = (kept + missed) // 2
            plan = replace(strict, layers=(*strict.layers, *((layer, Precision.INT4) for layer in extra[:count])))
            label = f"w4w{count}"
            self.quantized(source, label, plan, why=f"the {count} cheapest of the {len(extra)} layers the wide plan "
                           "added take int4")  # fmt: skip
            made = self.trace.artifacts.get(f"{source.name}-{label}")
            if made is not None and made.candidate.decision == Decision.KEPT:
                kept = count
            else:
                missed = count

    def selective_int8(self, source: Source, uniform: Artifact) -> None:
        """Full-integer int8 that misses the budget: leave the ops that add the most error in float, 1, 2, 4...
        of them, until a plan is within budget. The ranking comes from the LiteRT quantizer's validator (each op's
        input SNR over its output SNR) on validation inputs, with ops measured fragile alone first."""
        from ..quantize.litert import noise_ranking

        try:
            ranking = noise_ranking(source.float_tflite, uniform.path, self.judge.x_val[:64],
                                    keras_layers=list(source.layers))  # fmt: skip
        except Exception as error:
            self.trace.notes.append(f"could not rank {source.name}'s int8 ops by error: {one_line_reason(error)}")
            return
        ladder = FloatLadder(
            ranking,
            self.sensitivity,
            budget_pp=self.judge.budget_pp,
            floats_needed=self.floats_needed,
            start_top1=uniform.candidate.val_top1,
        )
        while (rung := ladder.next()) is not None:
            if self.out_of_time():
                return
            count, ranked_by, plan = rung
            label = f"a8-f{count}" + ("" if ranked_by == "snr" else "m")
            if ranked_by == "snr":
                why = f"uniform int8 {uniform.candidate.reason}; the {count} op(s) adding the most error stay float"
            else:
                why = (
                    f"uniform int8 {uniform.candidate.reason}; the best plan so far and the ops whose int8 alone "
                    f"cost the most, {count} in all, stay float (the error ranking did not predict the top-1)"
                )
            self.quantized(source, label, plan, why=why)
            made = self.trace.artifacts.get(f"{source.name}-{label}")
            ladder.record(tuple(layer for layer, _ in plan.layers), made.candidate.val_top1 if made else None)
            if made is not None and made.candidate.decision == Decision.KEPT:
                self.floats_needed = count
                return

    def quantized(self, source: Source, label: str, plan, *, why: str | None = None) -> None:
        from ..quantize.litert import quantize_litert_plan
        from ..runtime.delegation import xnnpack_summary

        name = f"{source.name}-{label}"
        started = time.perf_counter()
        path = self.scratch / f"{name}.tflite"
        settings = {
            "weights": str(plan.weights),
            "activations": plan.activations,
            "layers": {layer: str(precision) for layer, precision in plan.layers},
            **({"weight_algorithm": plan.weight_algorithm} if plan.weight_algorithm != "min_max" else {}),
            **({"why": why} if why else {}),
        }
        try:
            params = quantize_litert_plan(
                source.float_tflite,
                path,
                plan=plan,
                calibration=self.calibration,
                keras_layers=list(source.layers),
            )
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self.trace.failed(name, "artifact", source.name, settings, error, started)
            return
        quantization = "int8" if plan.activations == "int8" else ("int4" if label == "w4" else "dynamic")
        steps = (
            *source.steps,
            Step.of_file(Format.TFLITE, "converter"),
            Step.of_file(Format.TFLITE, "litert", quantization, {**params, "xnnpack": xnnpack_summary(path)}),
        )
        check = pattern_check(path, source.steps, name=name)
        if check is not None:
            steps += (check,)
            settings["m_by_n_held"] = check.params["pattern_held"]
        self.measure(name, source, path, Format.TFLITE, quantization, steps, settings, started)

    def measure(
        self,
        name: str,
        source: Source,
        path: Path,
        fmt: Format,
        quantization: str,
        steps: tuple[Step, ...],
        settings: dict[str, Any],
        started: float,
        *,
        backend: str = "litert",
    ) -> None:
        """An artifact on validation (top-1, agreement with its Keras model, sizes, and its quick latency where it
        was made in line), judged and recorded."""
        from ..runtime import open_runner

        try:
            runner = open_runner(path, fmt, threads=self.threads, outputs=self.judge.info.output_names)
            outputs = runner.predict(self.judge.x_val)
            top1 = self.judge.top1(outputs)
            agreement = self.judge.agreement(self.judge.primary(outputs), source.val_outputs)
            size, gzip = file_sizes(path)
            p50 = self.quick_p50(path, fmt, runner) if self.timed_here else None
            integer = fmt == Format.TFLITE and quantization == "int8"
            flash, arena = self.micro_figures(path, source, size) if integer else (None, None)
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self.trace.failed(name, "artifact", source.name, settings, error, started)
            return
        drop = self.judge.drop(top1)
        decision, reason = self.judge.artifact_decision(drop, agreement)
        candidate = Candidate(
            name,
            "artifact",
            source.name,
            settings,
            decision,
            reason,
            top1,
            drop,
            agreement,
            size,
            gzip,
            p50,
            round(source.sparsity, 4),
            since(started),
            flash_bytes=flash,
            arena_bytes=arena,
        )
        self.trace.record(candidate)
        self.trace.artifacts[name] = Artifact(candidate, path, source, fmt, quantization, steps, backend)

    def micro_figures(self, path: Path, source: Source, size: int) -> tuple[int | None, int | None]:
        """For --target mcu: the TFLite Micro flash and arena of a full-integer file. A clustered source's file is
        LUT-compressed (`ship.micro.lut_compress`: per-channel value tables and bit-packed indices that TFLite Micro
        decodes at run time, into the arena); when that copy runs and is smaller, its figures count. (None, None)
        without --target mcu; the arena is None where TFLite Micro does not run the file."""
        if not self.micro_flash:
            return None, None
        from ..ship.micro import check, lut_compress

        try:
            plain = check(path)
            lut = lut_compress(path, path.with_name(f"{path.stem}-lut{path.suffix}")) if source.clusters else None
        except Exception as error:  # information only, as in the report: the raw file still counts
            self.trace.notes.append(f"search: TFLite Micro could not check {path.stem}: {one_line_reason(error)}")
            return size, None
        if lut is not None and lut.get("runs") and lut.get("flash_bytes") and lut["flash_bytes"] < size:
            return int(lut["flash_bytes"]), lut.get("arena_bytes")
        return size, plain.arena_bytes if plain.runs else None

    def quick_p50(self, path: Path, fmt: Format, runner: Any = None) -> float:
        """The candidate's median latency under the short protocol, at the headline batch and thread count."""
        from ..runtime import open_runner

        if runner is None:
            runner = open_runner(path, fmt, threads=self.threads, outputs=self.judge.info.output_names)
        x = batch_of(self.judge.x_val, self.batch)
        return round(time_latency(runner.bind(x), config=QUICK_LATENCY, batch=len(x), threads=runner.threads).p50, 5)


@dataclass(frozen=True)
class ArtifactBatch:
    """What an artifact task returns: the candidates it tried, in order, and the files of those it made."""

    candidates: list[Candidate]
    made: dict[str, tuple[str, str, tuple[Step, ...], str]]  # name: (format, quantization, steps, backend)
    files: dict[str, bytes]
    notes: list[str]
    floats_needed: int
    budget_spent: bool
    worker: str  # host:pid of the process that made them


def make_artifacts(
    maker: ArtifactMaker, source: Source, float_tflite: bytes, remaining: float | None, previous: ArtifactBatch | None
) -> ArtifactBatch:
    """An artifact task: the source's quantized candidates, made and measured on validation where the task runs
    (`maker` is `ArtifactMaker.for_task()`). `previous` is the previous source's batch: its selective int8 ended
    where this one starts. Nothing is timed here: the driver times the candidates once all are in."""
    scratch = Path(tempfile.mkdtemp(prefix="effkit-search-task-"))
    try:
        maker = replace(maker, scratch=scratch, deadline=Deadline(remaining))
        if previous is not None:
            maker.floats_needed = previous.floats_needed
            maker.budget_spent = maker.budget_spent or previous.budget_spent
        source.float_tflite = scratch / f"{source.name}-float.tflite"
        source.float_tflite.write_bytes(float_tflite)
        maker.quantized_artifacts(source)
        artifacts = maker.trace.artifacts
        made = {name: (str(a.fmt), a.quantization, a.steps, a.backend) for name, a in artifacts.items()}
        files = {name: a.path.read_bytes() for name, a in artifacts.items()}
        worker = f"{socket.gethostname()}:{os.getpid()}"
        trace = maker.trace
        return ArtifactBatch(
            trace.candidates, made, files, trace.notes, maker.floats_needed, maker.budget_spent, worker
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
