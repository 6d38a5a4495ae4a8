from effkit.report import recommend, table, to_markdown, write_report
from effkit.types import Latency, Report, Status, Variant


def _v(name, gzip, delta, *, fmt="tflite", status=Status.OK, p50=0.01):
    return Variant(
        name=name,
        format=fmt,
        quantization="int8",
        backend="converter",
        status=status,
        size_bytes=gzip * 2,
        gzip_bytes=gzip,
        top1=0.97 + delta / 100,
        top1_delta_pp=delta,
        latency_ms=Latency.from_seconds([p50 / 1e3], batch=1, threads=1),
    )


def test_recommend_picks_the_smallest_gzip_within_the_tolerance():
    variants = [
        _v("big", 1000, 0.0),
        _v("small-but-bad", 100, -2.5),
        _v("small", 300, -0.9),
        _v("failed", 50, 0.0, status=Status.FAILED),
        _v("mismatch", 60, 0.0, status=Status.MISMATCH),
        _v("keras", 10, 0.0, fmt="keras"),
    ]
    assert recommend(variants, max_accuracy_drop=1.0) == "small"
    assert recommend(variants, max_accuracy_drop=3.0) == "small-but-bad"
    assert recommend(variants, max_accuracy_drop=0.5) == "big"
    assert recommend([_v("worse", 10, -5.0)], max_accuracy_drop=1.0) is None


def test_recommend_breaks_size_ties_by_latency():
    assert recommend([_v("slow", 100, 0.0, p50=0.5), _v("fast", 100, 0.0, p50=0.1)], max_accuracy_drop=1) == "fast"


def _report(recommended="small"):
    return Report(
        environment={"cpu": "test cpu", "cores": 2, "python": "3.11"},
        config={
            "max_accuracy_drop": 1.0,
            "latency": {"batches": [1], "threads": [1], "min_runs": 200, "min_seconds": 0.5},
        },
        model={"name": "tiny"},
        data={"name": "digits", "test": 359},
        baseline={"top1": 0.97},
        variants=(
            _v("big", 1000, 0.0),
            _v("small", 300, -0.9),
            Variant(
                name="broken",
                format="onnx",
                quantization="none",
                backend="tf2onnx",
                status=Status.FAILED,
                error="tf2onnx conversion failed: boom",
            ),
        ),
        recommended=recommended,
    )


def test_markdown_marks_the_recommended_row_and_lists_failures():
    text = to_markdown(_report())
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # header + 3 variants
    marked = [row for row in rows if "★" in row]
    assert len(marked) == 1 and "small" in marked[0]
    assert "Recommended: **small**" in text
    assert "`broken` (failed): tf2onnx conversion failed: boom" in text


def test_markdown_says_when_nothing_is_recommended():
    assert "nothing recommended" in to_markdown(_report(recommended=None))


def test_table_columns_are_aligned():
    lines = table(_report()).splitlines()
    assert len({len(line) for line in lines}) == 1


def test_write_report_writes_both_files_and_round_trips(tmp_path):
    json_path, md_path = write_report(_report(), tmp_path)
    assert Report.from_json(json_path.read_text()) == _report()
    assert md_path.read_text().startswith("# effkit report: tiny on digits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]
