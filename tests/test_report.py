import dataclasses

from effkit.cpu import CpuFingerprint
from effkit.report.render import recommend, speed_notes, table, to_markdown, write_report
from effkit.stats import pack_correct
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


AVX2 = CpuFingerprint("x86_64", "AuthenticAMD", "AMD EPYC", ("avx", "avx2", "fma", "f16c"), 2)
VNNI = CpuFingerprint("x86_64", "AuthenticAMD", "AMD EPYC", ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"), 2)


def _timed(name, quantization, p50, fmt="tflite"):
    return Variant(name=name, format=fmt, quantization=quantization, backend="converter",
                   latency_ms=Latency.from_seconds([p50 / 1e3], batch=1, threads=1))  # fmt: skip


def test_integer_artifacts_no_faster_than_float32_are_noted_with_the_cpu():
    variants = [
        _timed("baseline-tflite-none", "none", 0.0267),
        _timed("baseline-tflite-int8", "int8", 0.0264),  # 0.99x: the AVX2 machine's figure
        _timed("baseline-tflite-dynamic", "dynamic", 0.0100),  # 0.37x: faster, not noted
        _timed("pruned50-onnx-none", "none", 0.0400, fmt="onnx"),
        _timed("pruned50-onnx-int8", "int8", 0.0450, fmt="onnx"),
    ]
    (note,) = speed_notes(variants, AVX2)
    assert "baseline-tflite-int8 0.99x" in note and "pruned50-onnx-int8 1.12x" in note
    assert "dynamic" not in note.split(":")[1].split(".")[0]
    assert "x86_64-avx2" in note and "no int8 dot-product instruction" in note
    (with_vnni,) = speed_notes(variants, VNNI)
    assert "has int8 dot-product instructions" in with_vnni
    assert speed_notes(variants[:1] + variants[2:3], AVX2) == ()


def test_report_names_the_cpu_features_and_each_variants_flips_against_the_baseline():
    samples = 359
    baseline_bits = [True] * 340 + [False] * 19
    variant_bits = list(baseline_bits)
    variant_bits[0] = variant_bits[1] = False  # two samples lost: -0.56 pp
    base = dataclasses.replace(_v("baseline-keras", 1000, 0.0, fmt="keras"), correct=pack_correct(baseline_bits))
    chosen = dataclasses.replace(_v("small", 300, -0.56), correct=pack_correct(variant_bits))
    report = dataclasses.replace(
        _report(),
        environment={"cpu": "AMD EPYC", "cores": 2, "python": "3.11", "fingerprint": AVX2.to_dict()},
        baseline={"name": "baseline-keras", "top1": 340 / samples},
        data={"name": "digits", "test": samples},
        variants=(base, chosen),
        notes=("Integer artifacts no faster than float32 on this CPU",),
    )
    text = to_markdown(report)
    assert "Measured on AMD EPYC (x86_64-avx2: avx avx2 fma f16c), 2 cores." in text
    assert "(-0.56 pp, 2 samples, p=0.5)" in text  # the summary line of the recommended variant
    small_row = next(line for line in text.splitlines() if "| small" in line)
    assert "-2/+0 p=0.50" in small_row
    assert "Notes:" in text and "no faster than float32" in text
    assert Report.from_json(report.to_json()) == report


def test_log_axes_get_several_readable_ticks():
    from effkit.report.plots import log_ticks

    assert log_ticks(33.0, 348.0) == [50.0, 100.0, 200.0]  # was one label, "100"
    narrow = log_ticks(0.0073, 0.0206)  # the default's latencies in ms: 1-2-5 gives too few, so every digit
    assert len(narrow) >= 3 and narrow[0] >= 0.0073 and narrow[-1] <= 0.0206
    assert [f"{t:g}" for t in narrow] == ["0.008", "0.009", "0.01", "0.02"]
    assert log_ticks(1.0, 1.0) == []


def test_the_summary_says_raw_or_gzip_for_every_size_and_ratio():
    """A device holds the raw bytes, a download the gzip ones: the summary names both, and which each ratio is."""
    from dataclasses import replace

    from effkit.report.render import REFERENCE_VARIANT, summary

    reference = replace(_v(REFERENCE_VARIANT, 3600, 0.0), size_bytes=4096 * 10)
    small = replace(_v("small", 1024, -0.5), size_bytes=4096, compression_gzip=3.5)
    report = replace(_report(), variants=(reference, small), recommended="small")
    text = summary(report)
    assert "**small**: 1.0 KiB gzip, 4.0 KiB raw" in text
    assert "40.0x smaller gzipped than the float32 TFLite file raw (10.0x raw to raw, 3.5x gzip to gzip)" in text
