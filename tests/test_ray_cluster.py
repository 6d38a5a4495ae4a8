"""effkit bench on a two-node Ray cluster (`ray.cluster_utils.Cluster`, both nodes on this machine): the models'
production tasks spread over both nodes, and no timing task shares its node with any other task (issue #13)."""

from __future__ import annotations

import json

import pytest

from effkit.suites import load_suite, run_suite
from effkit.types import Status

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

SUITE = """
name = "two-nodes"

[compress]
sparsities = []
quantizations = ["none", "int8"]
formats = ["tflite"]
tflite_backends = ["converter"]

[compress.latency]
batches = [1]
threads = [1]
warmup_runs = 2
warmup_seconds = 0.0
min_runs = 20
min_seconds = 0.2

[[models]]
path = "{model}"
name = "first"
data = "digits"

[[models]]
path = "{model}"
name = "second"
data = "digits"
"""


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from effkit.suites.ray import TIMING_RESOURCE

    node = {"num_cpus": 2, "resources": {TIMING_RESOURCE: 1}, "object_store_memory": 100 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_both_work_and_timing_never_shares_a_node(cluster, tiny_tf_keras_file, tmp_path):
    from effkit.suites.ray import TIMING_RESOURCE, RayExecutor

    suite = tmp_path / "two.toml"
    suite.write_text(SUITE.format(model=tiny_tf_keras_file))
    with RayExecutor() as executor:
        results = run_suite(load_suite(suite), tmp_path / "out", executor=executor)
    assert [m.status for m in results.models] == [Status.OK, Status.OK]
    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(nodes) == 2
    intervals = []  # (node, kind, start, end) of every task
    for model in results.models:
        report = json.loads((tmp_path / "out" / model.name / "report.json").read_text())
        for kind, task in report["environment"]["ray"].items():
            intervals.append((task["node"], kind, task["started"], task["ended"]))
        timing = report["environment"]["ray"]["timing"]
        timing_node = timing["node"]
        assert timing["held"] == {"CPU": 2.0, TIMING_RESOURCE: 1.0}  # the slot and all of the node's CPUs
        assert {v["latency_ms"]["runtime"]["node"] for v in report["variants"]} == {timing_node}
    assert {node for node, kind, *_ in intervals if kind == "production"} == nodes  # spread over both
    for node, kind, start, end in intervals:
        if kind != "timing":
            continue
        others = [(k, s, e) for n, k, s, e in intervals if n == node and (k, s, e) != (kind, start, end)]
        for other_kind, other_start, other_end in others:
            assert end <= other_start or other_end <= start, f"timing overlaps {other_kind} on {node}"
