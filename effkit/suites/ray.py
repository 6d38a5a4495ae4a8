"""A suite on Ray: models compressed in parallel, every artifact timed on a node that runs nothing else.

Each model is two tasks:

- **production** (1 CPU, spread over the nodes): trains the reference model when the driver has none cached, then
  `compress(..., time_latency=False)`: pruning, conversion, quantization, accuracy, parity, sizes, peak memory.
  It returns the untimed report and the bytes of every file it made.
- **timing**: claims its node's timing slot (the custom resource `effkit_timing`, one per node) and all of that
  node's CPUs, so no other task of the cluster runs beside it, then times every variant under the one protocol
  (`pipeline.latency_grid`) with the thread counts set explicitly in LiteRT and ONNX Runtime (Ray sets
  `OMP_NUM_THREADS` to a task's CPU count; the runners never rely on it). Each figure records its node and CPU
  class, and the report's environment is the timing node's.

Artifacts and reports travel as Ray objects, never through a shared disk: the driver writes `out_dir/<model>/`
atomically, as `compress` does. A worker that dies is retried (`max_retries`); a model whose task fails for a real
reason is reported failed and the others go on; stopping the iteration (Ctrl-C) cancels what is still running.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from ..config import CompressConfig, Format
from ..errors import ConfigError, EffkitError, one_line_reason
from ..files import write_bytes, write_text
from ..tasks import Task
from ..types import Report, Status
from .executors import Executor, ModelJob, ModelOutcome, Timing, with_timings

log = logging.getLogger("effkit")

TIMING_RESOURCE = "effkit_timing"  # one per node: a timing task holds it, and all of the node's CPUs
RETRIES = 3  # a production or timing task whose worker process dies is run again this many times
KILL_ONCE = "EFFKIT_FAULT_KILL_WORKER_ONCE"  # fault injection for tests: `MODEL=MARKER`; see `_maybe_die`
SKIPPED_FILES = frozenset({"report.json", "report.md", "report.html"})  # the driver writes these from the record


@dataclass(frozen=True)
class Produced:
    """What a production task returns besides the files: the untimed report, or why there is none."""

    report: Report | None
    error: str | None
    source: str  # the path the worker compressed the model from, as its report records it
    node: str
    started: float
    ended: float


@dataclass(frozen=True)
class Timed:
    """What a timing task returns: each measured variant's timing, and where and when it ran."""

    timings: dict[str, Timing]
    environment: dict[str, Any]
    node: str
    started: float
    ended: float
    held: dict[str, float]  # the resources Ray gave the task: the timing slot and every CPU of its node


class RayExecutor(Executor):
    """Compress a suite's models as Ray tasks.

    Args:
        address: None to start Ray inside this process on this machine (one timing slot, all its CPUs), or the
            address of a running cluster (`auto`, `ray://head:10001`, `head:6379`) whose nodes were started with
            `--resources '{"effkit_timing": 1}'`. If Ray is already initialised in this process, it is used as is.

    Raises:
        ConfigError: no node of the cluster offers the timing resource, or the cluster cannot be reached.
    """

    def __init__(self, address: str | None = None):
        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if address is None:
                    ray.init(
                        num_cpus=os.cpu_count(),
                        resources={TIMING_RESOURCE: 1},
                        include_dashboard=False,
                        **options,
                    )
                else:
                    ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ConfigError(f"cannot start or join Ray at {address or 'this machine'}: {error}") from None
            self._started = True
        self._timing_envs: dict[str, dict[str, Any]] = {}
        self._remote: dict[Callable[..., Any], Any] = {}  # `submit`'s functions, each exported to Ray once
        if not ray.cluster_resources().get(TIMING_RESOURCE):
            self.close()
            raise ConfigError(
                f"no node of the Ray cluster offers the {TIMING_RESOURCE} resource; start each node with "
                f"--resources '{{\"{TIMING_RESOURCE}\": 1}}'"
            )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        """`fn(*args)` as a task on one CPU, retried when its worker dies; a `RayTask` argument is passed as its
        result, once it has one."""
        if fn not in self._remote:
            self._remote[fn] = ray.remote(fn).options(num_cpus=1, max_retries=RETRIES)
        remote = self._remote[fn]
        return RayTask(remote.remote(*[arg.ref if isinstance(arg, RayTask) else arg for arg in args]))

    def close(self) -> None:
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def environment(self) -> dict[str, Any]:
        """The timing nodes' environment when their CPUs share one kernel fingerprint; otherwise the driver's,
        without a fingerprint, so that the gate does not compare these latencies with anyone's."""
        from ..cpu import CpuFingerprint
        from ..report.render import environment

        envs = list(self._timing_envs.values())
        cpus = {node: CpuFingerprint.from_dict(env["fingerprint"]) for node, env in self._timing_envs.items()}
        nodes = {node: cpu.isa_class for node, cpu in cpus.items()}
        if not envs:
            return {**environment(), "ray": {"timing_nodes": {}}}
        if len({cpu.kernels_key for cpu in cpus.values()}) == 1:
            return {**envs[0], "ray": {"timing_nodes": nodes}}
        mixed = {key: value for key, value in environment().items() if key != "fingerprint"}
        return {**mixed, "ray": {"timing_nodes": nodes}}

    def run(
        self, jobs: Sequence[ModelJob], out_dir: Path, *, made: Callable[[ModelJob, int], None] | None = None
    ) -> Iterator[ModelOutcome]:
        from ..models import reference_path

        out_dir = Path(out_dir)
        produce = ray.remote(_produce).options(
            num_cpus=1, num_returns=3, max_retries=RETRIES, scheduling_strategy="SPREAD"
        )
        timing = ray.remote(_time)
        kill_once = os.environ.get(KILL_ONCE)
        pending: dict[Any, tuple] = {}
        deferred: list[tuple] = []  # timing tasks held back while production tasks still wait for a CPU
        slots = int(ray.cluster_resources().get("CPU", 1))
        try:
            for job in sorted(jobs, key=expected_cost, reverse=True):
                cached = None
                if job.path is not None:
                    source = Path(job.path)
                    if not source.exists():
                        yield ModelOutcome(job, error=f"model not found: {source}")
                        continue
                else:
                    source, training = reference_path(
                        job.reference, job.data, out_dir, epochs=job.epochs, seed=job.seed
                    )
                    cached = None if source.exists() else training
                packed = ray.put(_pack(source) if cached is None else None)
                data = _pack(Path(job.data)) if Path(job.data).exists() else None
                meta, files, trained = produce.remote(job, packed, source.name, data, kill_once)
                log.info("ray: model %s submitted", job.name)
                pending[meta] = ("produce", job, source, cached, packed, files, trained)
            while pending or deferred:
                # A timing task needs a whole node; submitted while production tasks still queue for CPUs, it would
                # make them wait behind it (Ray serves the queued tasks in turn), and a node would then produce alone.
                # So timing starts once every production task left holds its CPU.
                if sum(entry[0] == "produce" for entry in pending.values()) <= slots:
                    for args, entry in deferred:
                        pending[timing.options(**self._timing_options()).remote(*args)] = entry
                    deferred.clear()
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                kind, job, source, cached, packed, files, trained, *rest = pending.pop(ready)
                try:
                    result = ray.get(ready)
                except (ray.exceptions.RayError, EffkitError) as error:
                    yield ModelOutcome(job, error=_task_error(error))
                    continue
                if kind == "produce":
                    if result.error is not None:
                        yield ModelOutcome(job, error=result.error.replace(result.source, str(source)))
                        continue
                    log.debug("ray: %s made in %.0f s", job.name, result.ended - result.started)
                    if made is not None:
                        made(job, len(result.report.variants))
                    model_file = trained if cached is not None else packed
                    entry = ("time", job, source, cached, packed, files, trained, result)
                    deferred.append(((ready, files, model_file, job.config), entry))
                    continue
                produced: Produced = rest[0]
                self._timing_envs[result.node] = result.environment
                report = self._finish(job, produced, result, source, out_dir)
                folder_files = ray.get(files)
                _write_folder(report, folder_files, out_dir / job.name)
                if cached is not None:  # the reference model the production task trained: kept for the next run
                    write_bytes(source, next(iter(ray.get(trained).values())))
                    write_text(source.with_suffix(".json"), _json(cached))
                yield ModelOutcome(job, report=report)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _timing_options(self) -> dict[str, Any]:
        """A timing task claims the timing slot and every CPU of its node. When the timing nodes differ in CPU count,
        each task is pinned to one node (in turn), so that its claim is that node's whole CPU count."""
        nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get(TIMING_RESOURCE)]
        counts = {node["Resources"].get("CPU", 0) for node in nodes}
        if len(counts) <= 1:
            cpus = counts.pop() if counts else 1
            return {"num_cpus": cpus, "resources": {TIMING_RESOURCE: 1}, "max_retries": RETRIES}
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._turn = (getattr(self, "_turn", -1) + 1) % len(nodes)
        node = nodes[self._turn]
        return {
            "num_cpus": node["Resources"]["CPU"],
            "resources": {TIMING_RESOURCE: 1},
            "max_retries": RETRIES,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        }

    @staticmethod
    def _finish(job: ModelJob, produced: Produced, timed: Timed, source: Path, out_dir: Path) -> Report:
        """The report as `compress` in this process would have written it: timed, and naming the model file where
        the driver has it."""
        from ..report.outdir import shown_path

        report = with_timings(produced.report, timed.timings, environment=timed.environment)
        shown = shown_path(source, out_dir / job.name)
        variants = tuple(replace(v, path=shown) if v.path == produced.source else v for v in report.variants)
        model = {**report.model, "path": shown if report.model.get("path") == produced.source else report.model["path"]}
        where = {
            "production": {"node": produced.node, "started": produced.started, "ended": produced.ended},
            "timing": {"node": timed.node, "started": timed.started, "ended": timed.ended, "held": timed.held},
        }
        return replace(report, variants=variants, model=model, environment={**report.environment, "ray": where})


class RayTask(Task):
    """A task `RayExecutor.submit` started: its object reference."""

    def __init__(self, ref: Any):
        self.ref = ref

    def done(self) -> bool:
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self) -> Any:
        try:
            return ray.get(self.ref)
        except ray.exceptions.RayTaskError as error:  # the task's own exception, not Ray's wrapper
            cause = error.cause if isinstance(getattr(error, "cause", None), BaseException) else error
            raise cause from None

    def cancel(self) -> None:
        ray.cancel(self.ref, force=True)


def expected_cost(job: ModelJob) -> float:
    """A rough weight of a job's production, for the order of submission only: the heaviest model first, so that
    the longest production does not start last and leave the other CPUs idle at the end (nothing can time beside
    it). Variants to make, times the input's elements when the data names a shape (`digits:96x96x3`), times the
    model file's size when there is a file."""
    from ..pipeline import planned_variants

    cost = float(planned_variants(job.config))
    _, _, shape = job.data.partition(":")
    if shape and all(part.isdigit() for part in shape.split("x")):
        cost *= math.prod(int(part) for part in shape.split("x"))
    if job.path is not None and Path(job.path).is_file():
        cost *= Path(job.path).stat().st_size
    return cost


def _produce(
    job: ModelJob,
    source: dict[str, bytes] | None,
    source_name: str,
    data: dict[str, bytes] | None,
    kill_once: str | None,
) -> tuple[Produced, dict[str, bytes], dict[str, bytes] | None]:
    """The production task: the model's file (shipped, or the reference trained here), compressed untimed."""
    from ..models import train_reference_file
    from ..pipeline import compress

    started = time.time()
    node = ray.get_runtime_context().get_node_id()
    _maybe_die(kill_once, job.name)
    scratch = Path(tempfile.mkdtemp(prefix="effkit-ray-"))
    try:
        model_path = scratch / "source" / source_name
        trained = None
        try:
            if source is None:
                train_reference_file(job.reference, job.data, model_path, epochs=job.epochs, seed=job.seed)
                trained = _pack(model_path)
            else:
                _unpack(source, model_path.parent)
            data_arg = job.data
            if data is not None:
                _unpack(data, scratch / "data")
                data_arg = str(scratch / "data" / Path(job.data).name)
            out = scratch / "out" / job.name
            report = compress(
                model_path, data_arg, config=job.config, out_dir=out, name=job.name, overwrite=True, time_latency=False
            )
        except EffkitError as error:
            produced = Produced(None, one_line_reason(error), str(model_path), node, started, time.time())
            return produced, {}, None
        files = {
            str(path.relative_to(out)): path.read_bytes()
            for path in sorted(out.rglob("*"))
            if path.is_file() and path.name not in SKIPPED_FILES and path.suffix != ".png"
        }
        return Produced(report, None, str(model_path), node, started, time.time()), files, trained
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _time(produced: Produced, files: dict[str, bytes], model_file: dict[str, bytes], config: CompressConfig) -> Timed:
    """The timing task: every measured variant of one model, on this node alone, under the one protocol."""
    import numpy as np

    from ..cpu import fingerprint
    from ..load import keras_compat
    from ..report.outdir import LATENCY_INPUT
    from ..report.render import environment
    from ..runtime import open_runner
    from ..runtime.measure import latency_grid

    started = time.time()
    node = ray.get_runtime_context().get_node_id()
    cpu = fingerprint().isa_class
    report = produced.report
    names = [head["name"] for head in report.model["heads"]]
    scratch = Path(tempfile.mkdtemp(prefix="effkit-ray-time-"))
    try:
        _unpack(files, scratch / "out")
        _unpack(model_file, scratch / "source")
        x = np.load(scratch / "out" / LATENCY_INPUT, allow_pickle=False)
        timings: dict[str, Timing] = {}
        for variant in report.variants:
            if variant.status == Status.FAILED or variant.size_bytes is None:
                continue  # never measured: nothing to time
            fmt = Format(variant.format)
            if variant.path == produced.source:
                path = scratch / "source" / Path(produced.source).name
            else:
                path = scratch / "out" / variant.path

            def runner(threads: int, path: Path = path, fmt: Format = fmt):
                if fmt == Format.KERAS:
                    loaded = keras_compat.load_model(path)
                    model = loaded.original if report.model.get("bridge_error") else loaded.model
                    return open_runner(model, fmt)
                return open_runner(
                    path, fmt, threads=threads, ort_optimization=config.latency.ort_optimization, outputs=names
                )

            try:
                before = time.perf_counter()
                first = runner(config.latency.threads[0])
                load_ms = round((time.perf_counter() - before) * 1e3, 3)
                grid = latency_grid(first, runner, x, config, fmt)
            except Exception as error:
                timings[variant.name] = Timing(error=one_line_reason(error))
                continue
            grid = tuple(replace(g, runtime={**(g.runtime or {}), "node": node, "cpu": cpu}) for g in grid)
            timings[variant.name] = Timing(grid=grid, load_ms=load_ms)
        held = ray.get_runtime_context().get_assigned_resources()
        return Timed(timings, environment(), node, started, time.time(), held)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _maybe_die(kill_once: str | None, model: str) -> None:
    """Fault injection for the tests: with `kill_once` = `MODEL=MARKER`, kill the worker producing MODEL the first
    time, leaving MARKER behind with the model's name and the killed process's id."""
    target, _, marker = (kill_once or "").partition("=")
    if target == model and marker and not Path(marker).exists():
        Path(marker).write_text(f"{model} {os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)


def _pack(path: Path) -> dict[str, bytes]:
    """A file, or a folder (a SavedModel, an image folder), as {path relative to its parent: bytes}."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path.parent)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _unpack(files: dict[str, bytes], folder: Path) -> None:
    for name, data in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _write_folder(report: Report, files: dict[str, bytes], folder: Path) -> None:
    """`out_dir/<model>/` as `compress` leaves it: an earlier run's files cleared, every file written atomically."""
    from ..report.outdir import check_out_dir, claim_out_dir
    from ..report.render import write_report, write_visual_report

    check_out_dir(folder, overwrite=True)
    claim_out_dir(folder)
    for name, data in files.items():
        write_bytes(folder / name, data)
    write_report(report, folder)
    try:
        write_visual_report(report, folder)
    except Exception as error:  # plots are a convenience: their failure must not cost the measured report
        log.warning("could not draw the plots: %s", one_line_reason(error))


def _task_error(error: BaseException) -> str:
    """One line for a task that failed: its own exception's, not Ray's page of traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return f"its Ray worker died {RETRIES + 1} times: {type(error).__name__}"
    return one_line_reason(cause if isinstance(cause, BaseException) else error)


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
