"""The per-target rule: which variant a phone takes, which a microcontroller takes, and why one is refused."""

import dataclasses

import pytest

from effkit.errors import ConfigError
from effkit.report.render import to_markdown
from effkit.report.targets import MCU, MOBILE, flash_bytes, recommend_by_target, recommend_for, refusal
from effkit.types import Latency, Report, Status, Variant


def _micro(runs=True, full_integer=True, arena=4000, reason=None, lut=None):
    record = {"runs": runs, "reason": reason, "full_integer": full_integer, "ops": ["AddConv2D"], "arena_bytes": arena}
    return {**record, "lut": lut} if lut else record


HYBRID = "dynamic-range (hybrid) models do not run on TFLite Micro"


def _v(name, size, gzip, delta=0.0, *, fmt="tflite", quantization="int8", micro=None, status=Status.OK, p50=0.01):
    return Variant(
        name=name,
        format=fmt,
        quantization=quantization,
        backend="converter",
        status=status,
        size_bytes=size,
        gzip_bytes=gzip,
        top1=0.97 + delta / 100,
        top1_delta_pp=delta,
        latency_ms=Latency.from_seconds([p50 / 1e3], batch=1, threads=1),
        micro=micro,
    )


VARIANTS = [
    _v("keras", 50_000, 9_000, fmt="keras", quantization="none"),
    _v("float32", 70_000, 60_000, quantization="none", micro=_micro(full_integer=False, arena=7000)),
    # the smallest gzip of all, and a microcontroller cannot run it
    _v("dynamic", 23_000, 8_000, quantization="dynamic", micro=_micro(False, False, None, HYBRID)),
    _v("int8", 22_900, 9_500, micro=_micro(arena=4000)),
    _v("int8-bigger-arena", 22_900, 9_400, micro=_micro(arena=5000)),
    _v("int8-too-inaccurate", 10_000, 4_000, -2.0, micro=_micro()),
    _v("int8-mismatch", 9_000, 3_000, status=Status.MISMATCH, micro=_micro()),
    _v("onnx-int8", 21_000, 8_500, fmt="onnx"),
]


def test_mobile_takes_the_smallest_gzip_and_mcu_the_smallest_full_integer_flash_that_runs():
    picks = recommend_by_target(VARIANTS, max_accuracy_drop=1.0)
    assert picks == {MOBILE: "dynamic", MCU: "int8"}  # same flash: the smaller measured arena wins
    assert recommend_for(VARIANTS, MCU, max_accuracy_drop=3.0) == "int8-too-inaccurate"
    assert recommend_for(VARIANTS[:3], MCU, max_accuracy_drop=1.0) is None  # float32 runs, but not in integers


def test_a_lut_compressed_copy_counts_as_its_flash():
    lut = {"runs": True, "flash_bytes": 17_000, "arena_bytes": 20_000, "path": "artifacts/c16-lut.tflite"}
    clustered = _v("c16-int8", 22_900, 9_000, micro=_micro(lut=lut))
    assert flash_bytes(clustered) == 17_000
    assert recommend_for([*VARIANTS, clustered], MCU, max_accuracy_drop=1.0) == "c16-int8"
    broken = dataclasses.replace(clustered, micro=_micro(lut={**lut, "runs": False}))
    assert flash_bytes(broken) == 22_900


def test_refusals_are_one_line_and_say_why():
    by_name = {v.name: v for v in VARIANTS}
    assert refusal(by_name["dynamic"], MOBILE) is None and refusal(by_name["onnx-int8"], MOBILE) is None
    assert "hybrid" in refusal(by_name["dynamic"], MCU)
    assert "not full-integer" in refusal(by_name["float32"], MCU)
    assert "TFLite Micro runs .tflite files only" in refusal(by_name["onnx-int8"], MCU)
    assert "mobile takes" in refusal(by_name["keras"], MOBILE)
    assert "mismatch" in refusal(by_name["int8-mismatch"], MOBILE)
    assert "no TFLite Micro check" in refusal(dataclasses.replace(by_name["int8"], micro=None), MCU)
    assert refusal(by_name["int8"], MCU) is None
    assert all("\n" not in (refusal(v, t) or "") for v in VARIANTS for t in (MOBILE, MCU))
    with pytest.raises(ConfigError, match="known: mobile, mcu"):
        refusal(by_name["int8"], "gpu")


def test_the_report_shows_the_best_per_target_and_whether_tflite_micro_runs_each():
    report = Report(
        environment={"cpu": "test cpu", "cores": 2},
        config={"max_accuracy_drop": 1.0, "latency": {}},
        model={"name": "tiny"},
        data={"name": "digits", "test": 359},
        baseline={"top1": 0.97},
        variants=tuple(VARIANTS),
        recommended="dynamic",
        recommended_by_target=recommend_by_target(VARIANTS, max_accuracy_drop=1.0),
    )
    text = to_markdown(report)
    assert "- **mobile** (LiteRT or ONNX Runtime): `dynamic`" in text
    assert "- **mcu** (TFLite Micro, full integer): `int8`" in text and "tensor arena 3.9 KiB measured" in text
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")]
    column = cells[0].index("TFLM arena KiB")
    micro = {row[1]: row[column] for row in cells[1:]}
    assert micro == {
        "keras": "",
        "float32": "6.8 (float)",
        "dynamic": "no",
        "int8": "3.9",
        "int8-bigger-arena": "4.9",
        "int8-too-inaccurate": "3.9",
        "int8-mismatch": "3.9",
        "onnx-int8": "",
    }
    assert Report.from_json(report.to_json()) == report


def test_the_mobile_pick_is_never_slower_than_the_baseline_int8_file_and_the_size_pick_says_what_it_costs():
    """int4 convolutions and dynamic-range files are smaller and slower: a phone gets the smallest file within
    timing noise (10% and 1 us) of the baseline int8 file's p50; the size pick keeps the smallest and says its
    latency cost in one line."""
    from effkit.report.render import summary

    variants = [
        _v("baseline-tflite-int8-litert", 100_000, 90_000, p50=0.0044, micro=_micro()),
        _v("s95-w4", 54_000, 9_300, quantization="int4", p50=0.0153),
        _v("s95-a8-noise", 104_000, 13_300, p50=0.0046),
        _v("s95-a8-slower", 104_000, 13_000, p50=0.0060),
    ]
    assert recommend_for(variants, MOBILE, max_accuracy_drop=1.0) == "s95-a8-noise"
    assert recommend_for(variants[1:], MOBILE, max_accuracy_drop=1.0) == "s95-w4"  # no int8 reference: the smallest
    slow_only = [variants[0], variants[1], variants[3]]
    assert recommend_for(slow_only, MOBILE, max_accuracy_drop=1.0) == "baseline-tflite-int8-litert"
    picks = recommend_by_target(variants, max_accuracy_drop=1.0)
    report = Report(environment={}, config={"max_accuracy_drop": 1.0}, model={}, data={"test": 100},
                    baseline={"top1": 0.97}, variants=tuple(variants), recommended="s95-w4",
                    recommended_by_target=picks)  # fmt: skip
    line = summary(report)
    assert "Its size costs latency: 3.5x the p50 of `baseline-tflite-int8-litert` (0.0044 ms)" in line
    assert "the mobile pick, `s95-a8-noise`, is the smallest that is not slower." in line


def test_the_devices_limits_bound_every_pick():
    """--max-latency-ms, --max-flash and --max-arena: nothing beyond them is recommended, for either target; the
    next best within them is, and none when nothing is."""
    from effkit.config import Limits
    from effkit.report.targets import beyond

    picks = recommend_by_target(VARIANTS, max_accuracy_drop=1.0, limits=Limits(flash_bytes=22_000))
    assert picks == {MOBILE: "onnx-int8", MCU: None}  # the smallest gzip is 23,000 raw bytes; no mcu file fits
    slow = [dataclasses.replace(v, latency_ms=Latency.from_seconds([0.05e-3], batch=1, threads=1))
            if v.name == "dynamic" else v for v in VARIANTS]  # fmt: skip
    assert recommend_for(slow, MOBILE, max_accuracy_drop=1.0, limits=Limits(latency_ms=0.02)) == "onnx-int8"
    assert recommend_for(VARIANTS, MCU, max_accuracy_drop=1.0, limits=Limits(arena_bytes=3000)) is None
    assert recommend_for(VARIANTS, MCU, max_accuracy_drop=1.0, limits=Limits(arena_bytes=4500)) == "int8"
    by_name = {v.name: v for v in VARIANTS}
    assert beyond(by_name["int8-bigger-arena"], MCU, Limits(arena_bytes=4500)) == (
        "a 5,000-byte arena is over the 4,500-byte limit"
    )
    assert beyond(by_name["int8"], MCU, Limits()) is None


def test_sizes_parse_in_bytes_kib_and_mib():
    from effkit.config import parse_size
    from effkit.errors import ConfigError

    assert parse_size("65536", what="x") == parse_size("64KiB", what="x") == parse_size("64k", what="x") == 65536
    assert parse_size("1.5MiB", what="x") == 1_572_864 and parse_size("2M", what="x") == 2 * 1024**2
    with pytest.raises(ConfigError, match="--max-flash 'lots' is not a size"):
        parse_size("lots", what="--max-flash")
