"""effkit bench on Ray (issue #13): the same results as in process, a killed worker retried, a failing model
isolated, Ctrl-C leaving incomplete results, thread counts that hold inside a Ray worker, effkit without Ray.

One local Ray session (2 CPUs, one timing slot) serves the whole module; the two-node cluster is in
test_ray_cluster.py, since a process joins one Ray at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from effkit.report.results import SuiteResult
from effkit.suites import load_suite, run_suite
from effkit.types import Status

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

SUITE = """
name = "tiny-ray"

[compress]
sparsities = []
quantizations = ["none", "int8"]
formats = ["tflite", "onnx"]
tflite_backends = ["converter"]

[compress.prune]
epochs = 2

[compress.latency]
batches = [1, 4]
threads = [1]
warmup_runs = 2
warmup_seconds = 0.0
min_runs = 20
min_seconds = 0.02

[[models]]
path = "{bad}"
name = "broken"
data = "digits"

[[models]]
path = "{model}"
name = "tiny"
data = "digits"
"""


@pytest.fixture(scope="module")
def ray_session():
    from effkit.suites.ray import TIMING_RESOURCE

    ray.init(
        num_cpus=2,
        resources={TIMING_RESOURCE: 1},
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024**2,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory, tiny_tf_keras_file):
    folder = tmp_path_factory.mktemp("ray-suite")
    bad = folder / "broken.keras"
    bad.write_bytes(b"not a model")
    path = folder / "tiny.toml"
    path.write_text(SUITE.format(model=tiny_tf_keras_file, bad=bad))
    return path


@pytest.fixture(scope="module")
def in_process(suite_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process")
    return run_suite(load_suite(suite_file), out), out


@pytest.fixture(scope="module")
def on_ray(ray_session, suite_file, tmp_path_factory):
    """The same suite on Ray, with the worker producing the model that works (tiny) killed (SIGKILL) once."""
    from effkit.suites.ray import KILL_ONCE, RayExecutor

    out = tmp_path_factory.mktemp("ray")
    marker = tmp_path_factory.mktemp("fault") / "killed"
    os.environ[KILL_ONCE] = f"tiny={marker}"
    try:
        with RayExecutor() as executor:
            results = run_suite(load_suite(suite_file), out, executor=executor)
    finally:
        del os.environ[KILL_ONCE]
    return results, out, marker


def _artifact_hashes(folder):
    # .keras files are stamped with the time Keras saved them; every other artifact must be byte-identical.
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((folder / "artifacts").iterdir())
        if path.suffix != ".keras"
    }


def test_ray_gives_the_same_accuracies_sizes_and_artifacts(in_process, on_ray):
    (local, local_out), (remote, remote_out, _) = in_process, on_ray
    assert [m.name for m in remote.models] == [m.name for m in local.models] == ["broken", "tiny"]
    mine, theirs = local.model("tiny"), remote.model("tiny")
    assert len(mine.variants) == len(theirs.variants) == 5
    for a, b in zip(mine.variants, theirs.variants, strict=True):
        assert (a.name, a.status, a.top1, a.correct) == (b.name, b.status, b.top1, b.correct)
        assert a.size_bytes == b.size_bytes, a.name
        if a.format != "keras":
            assert a.gzip_bytes == b.gzip_bytes, a.name
    hashes = _artifact_hashes(remote_out / "tiny")
    assert len(hashes) == 4
    assert hashes == _artifact_hashes(local_out / "tiny")
    report = json.loads((remote_out / "tiny" / "report.json").read_text())
    assert report["model"]["path"] == json.loads((local_out / "tiny" / "report.json").read_text())["model"]["path"]
    assert report["complete"] is True and report["recommended"]


def test_every_latency_figure_was_timed_apart_and_names_its_node_and_cpu(on_ray):
    results, out, _ = on_ray
    report = json.loads((out / "tiny" / "report.json").read_text())
    where = report["environment"]["ray"]
    assert where["production"]["ended"] <= where["timing"]["started"]
    for variant in report["variants"]:
        assert variant["status"] == "ok"
        grid = variant["latency_grid"]
        assert [g["batch"] for g in grid] == [1, 4]
        if variant["format"] != "keras":  # Keras runs on TensorFlow's own pool, whatever threads say
            assert [g["threads"] for g in grid] == [1, 1]
        for figure in grid:
            assert figure["runtime"]["node"] == where["timing"]["node"]
            assert figure["runtime"]["cpu"] == results.cpu_class
            assert figure["p50"] > 0
        if variant["format"] != "keras":
            assert variant["load_ms"] > 0
    timed_on = SuiteResult.from_dict({"suite": "", "environment": report["environment"]}).cpu_class
    assert timed_on == results.cpu_class is not None


def test_a_killed_worker_is_retried_and_the_run_completes(on_ray, in_process):
    """The worker producing tiny died at the task's start (SIGKILL, no Python handler runs): tiny is ok only
    because Ray ran the task again in another worker, and its results are those of the run in one process."""
    results, _, marker = on_ray
    assert marker.exists(), "the fault was never injected"
    model, pid = marker.read_text().split()
    assert model == "tiny"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # that worker process is gone
    assert results.complete
    assert results.model("tiny").status == Status.OK
    assert [v.top1 for v in results.model("tiny").variants] == [v.top1 for v in in_process[0].model("tiny").variants]


def test_a_failing_model_is_reported_while_the_others_finish(on_ray, suite_file):
    results, out, _ = on_ray
    broken = results.model("broken")
    assert broken.status == Status.FAILED
    assert "is not a Keras model file" in broken.error
    assert str(suite_file.parent / "broken.keras") in broken.error  # the driver's path, not a worker's scratch
    assert not (out / "broken").exists()
    assert results.not_ok() == ["broken"]


def test_ctrl_c_on_the_driver_leaves_incomplete_results_and_stops_the_tasks(ray_session, suite_file, tmp_path):
    """A real SIGINT to `effkit bench --ray` (a driver process joined to this module's Ray) once the first model is
    done: exit 130, results.json holds that model and says incomplete, and the cancelled task's CPU comes back."""
    from .conftest import ctrl_c_when

    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "out"
    args = ["bench", str(suite_file), "--out", str(out), "--ray", address]
    code, stderr = ctrl_c_when("broken failed; models 1/2 done", *args, timeout=120)  # tiny still being made
    assert code == 130 and "Traceback" not in stderr, stderr
    written = json.loads((out / "results.json").read_text())
    assert written["complete"] is False
    assert [m["name"] for m in written["models"]] == ["broken"]  # the model that finished first, then Ctrl-C
    assert not (out / "tiny").exists()
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the cancelled production task gives its CPU back
    assert ray.available_resources().get("CPU", 0) == 2


def test_thread_counts_hold_inside_a_ray_worker(ray_session, on_ray):
    """Ray sets OMP_NUM_THREADS to a task's CPU count (1 here); LiteRT (XNNPACK) and ONNX Runtime must still run the
    thread count effkit asks for: at 4 threads each starts 3 more threads than at 1 (the caller is the fourth)."""
    _, out, _ = on_ray

    @ray.remote(num_cpus=1, max_calls=1)  # a fresh worker process for each call
    def os_threads(path: str, fmt: str, threads: int) -> tuple[str | None, int]:
        import ai_edge_litert.interpreter
        import numpy as np
        import onnxruntime

        from effkit.config import Format
        from effkit.runtime import open_runner

        assert ai_edge_litert.interpreter and onnxruntime  # imported before counting: their own threads are not counted
        before = len(os.listdir("/proc/self/task"))
        call = open_runner(path, Format(fmt), threads=threads).bind(np.zeros((1, 8, 8, 1), np.float32))
        for _ in range(20):
            call()
        return os.environ.get("OMP_NUM_THREADS"), len(os.listdir("/proc/self/task")) - before

    artifacts = out / "tiny" / "artifacts"
    for name, fmt in (("baseline-tflite-none.tflite", "tflite"), ("baseline-onnx-none.onnx", "onnx")):
        # Twice each, in fresh workers: a thread the worker starts for itself meanwhile (Ray's own) only ever adds
        # to a count, so the smaller of two is the runtime's.
        runs = ray.get([os_threads.remote(str(artifacts / name), fmt, t) for t in (1, 1, 4, 4)])
        assert {omp for omp, _ in runs} == {"1"}
        one, four = min(runs[0][1], runs[1][1]), min(runs[2][1], runs[3][1])
        assert four - one == 3, (fmt, runs)


def test_latency_timed_on_two_cpus_is_not_gated(ray_session, on_ray, in_process, tmp_path):
    """When the timing nodes' CPUs differ in their kernels (here: only in family, the class is the same),
    results.json carries no fingerprint: the gate then judges top-1, size and status, and lists latency as not
    comparable (a ratio from one CPU generation says nothing of another's)."""
    from dataclasses import replace

    from effkit.suites import gate, write_results
    from effkit.suites.gate import Thresholds
    from effkit.suites.ray import RayExecutor

    results, out, _ = on_ray
    write_results(in_process[0], tmp_path)
    timed = json.loads((out / "tiny" / "report.json").read_text())["environment"]
    later = {**timed["fingerprint"], "family": f"{timed['fingerprint']['family']}0"}
    with RayExecutor() as executor:
        executor._timing_envs = {"node-a": timed, "node-b": {**timed, "fingerprint": later}}
        mixed = executor.environment()
        executor._timing_envs = {"node-a": timed, "node-b": timed}
        single = executor.environment()
    assert "fingerprint" not in mixed
    assert set(mixed["ray"]["timing_nodes"].values()) == {results.cpu_class}  # one class, two CPUs
    assert single["fingerprint"] == timed["fingerprint"]
    verdict = gate(replace(results, environment=mixed), tmp_path / "results.json", Thresholds(), out).gate
    assert verdict["latency_compared"] is False and "not recorded" in verdict["latency_why"]
    assert gate(results, tmp_path / "results.json", Thresholds(), out).gate["latency_compared"] is True


def test_a_search_on_ray_makes_its_artifacts_in_tasks_and_decides_as_in_process(ray_session, tiny_model, digits):
    """`compress --search --ray`: each model's quantized candidates are made by a task in another process while the
    driver fine-tunes the next model; the trace (names, decisions, sizes, validation top-1) and the artifacts of the
    user's own model are the same as in one process, and every candidate was timed."""
    from dataclasses import replace

    from effkit.config import CompressConfig, LatencyConfig, PruneConfig, SearchConfig
    from effkit.load import keras_compat
    from effkit.load.classifier import describe
    from effkit.search import Search
    from effkit.suites.ray import RayExecutor

    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    config = CompressConfig(
        formats=("tflite",),
        quantizations=("none", "dynamic"),
        tflite_backends=("litert",),
        prune=PruneConfig(epochs=2, batch_size=64),
        latency=LatencyConfig(warmup_runs=1, warmup_seconds=0.0, min_runs=5, min_seconds=0.0),
        calibration_samples=64,
        max_accuracy_drop=3.0,  # away from the boundary, where a fine-tune's last bits could flip a decision
        search=SearchConfig(levels=(0.6,), level_epochs=2, clusters=(), qat=False),
    )
    runs = []
    with RayExecutor() as executor:
        for where in (None, executor):
            keras_compat.tf_keras().utils.set_random_seed(0)
            search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64],
                            tasks=where)  # fmt: skip
            try:
                search.run()
                files = {name: a.path.read_bytes() for name, a in search.artifacts.items()}
            finally:
                search.close()
            runs.append((search, files))
    (here, here_files), (remote, remote_files) = runs

    def trace(search):  # in the order of names: on Ray a task's candidates join the trace when it is merged
        return sorted((c.name, c.kind, c.decision, c.size_bytes, c.gzip_bytes, c.val_top1) for c in search.candidates)

    assert trace(remote) == trace(here)
    kept = [c.name for c in remote.candidates if c.kind == "model" and c.decision == "kept"]
    assert kept[0] == "baseline" and len(kept) >= 2
    assert here.task_workers == [] and len(remote.task_workers) == len(kept)  # one task per model within budget
    assert sum(c.kind == "artifact" for c in remote.candidates) >= 2 * len(kept)  # w8 and a8 (and more) of each
    assert not any(worker.endswith(f":{os.getpid()}") for worker in remote.task_workers)
    baseline = [name for name in here_files if name.startswith("baseline-")]
    assert baseline and all(remote_files[name] == here_files[name] for name in baseline)
    timed = [c for c in remote.candidates if c.kind == "artifact" and c.decision != "failed"]
    assert timed and all(c.p50_ms is not None and c.p50_ms > 0 for c in timed)
    assert [c.name for c in remote.front()] == [c.name for c in here.front()]
    assert replace(remote.candidates[0], seconds=0) == replace(here.candidates[0], seconds=0)  # the baseline


def test_compress_ray_without_a_search_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "effkit", "compress", "--ray", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode != 0
    why = "--ray makes a search's candidates in parallel: add --search size (or latency)"
    assert done.stderr.strip().splitlines() == [f"effkit: error: {why}"]
    assert not out.exists()


def test_the_heaviest_model_is_submitted_first():
    """Production is ordered heaviest first (more variants, larger inputs), so that the last one to finish does not
    run alone while the other CPUs wait: nothing can time beside it."""
    from dataclasses import replace

    from effkit.config import CompressConfig
    from effkit.suites.executors import ModelJob
    from effkit.suites.ray import expected_cost
    from effkit.suites.suite import SuiteModel

    config = CompressConfig(sparsities=(0.5,), quantizations=("none", "int8"))
    small = ModelJob(SuiteModel(name="small", data="digits", reference="digits_cnn"), config)
    large_input = replace(small, model=replace(small.model, name="large", data="digits:96x96x3"))
    more_variants = replace(
        small, model=replace(small.model, name="more"), config=replace(config, sparsities=(0.5, 0.8))
    )
    assert expected_cost(large_input) > expected_cost(more_variants) > expected_cost(small) > 0
