"""Trade-off plots of a Report: accuracy against gzip size and against latency, Pareto front highlighted.

One point per measured variant (failed and mismatched ones are left out: they are not choices), coloured by format
and shaped by quantization; the recommended variant is a star.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import Format
from ..files import atomic_output
from ..types import Report, Status, Variant

COLORS = {"keras": "#7f7f7f", "tflite": "#1f77b4", "onnx": "#ff7f0e"}
MARKERS = {"none": "o", "dynamic": "s", "float16": "^", "int8": "D", "int16x8": "v", "int4": "P"}
PLOTS = {
    "accuracy_vs_size.png": ("gzip_bytes", "gzip size (KiB, log scale)", 1 / 1024),
    "accuracy_vs_latency.png": ("p50", "p50 latency (ms, log scale)", 1.0),
}
SEARCH_PLOT = "search_front.png"
SENSITIVITY_PLOT = "sensitivity.png"
ALL_PLOTS = (*PLOTS, SEARCH_PLOT, SENSITIVITY_PLOT)  # every file plotting may write, for the output folder's policy


def pareto_front(points: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both axes: smaller x (size, latency) and larger y (accuracy)."""
    front: list[tuple[float, float, str]] = []
    best = float("-inf")
    for x, y, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y, name))
            best = y
    return front


def log_ticks(low: float, high: float) -> list[float]:
    """Readable ticks across [low, high] on a log axis: 1-2-5 steps, or every digit when the range is narrow.

    Matplotlib labels only powers of ten, so an axis from 33 to 348 KiB showed one label ("100").
    """
    import math

    if not (0 < low < high):
        return []
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for steps in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in steps]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 3:
            return ticks
    return ticks


def _x(variant: Variant, field: str) -> float | None:
    if field == "p50":
        return variant.latency_ms.p50 if variant.latency_ms else None
    return getattr(variant, field)


def plot_tradeoffs(report: Report, out_dir: Path) -> list[Path]:
    """Write accuracy_vs_size.png and accuracy_vs_latency.png into `out_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    measured = [v for v in report.variants if v.status == Status.OK and v.top1 is not None]
    written = []
    for file_name, (field, label, scale) in PLOTS.items():
        points = [(x * scale, v.top1 * 100, v.name) for v in measured if (x := _x(v, field)) is not None]
        figure, axes = plt.subplots(figsize=(10, 5.2), dpi=110)
        for variant in measured:
            x = _x(variant, field)
            if x is None:
                continue
            axes.scatter(
                x * scale,
                variant.top1 * 100,
                c=COLORS.get(str(variant.format), "black"),
                marker=MARKERS.get(str(variant.quantization), "o"),
                s=46,
                alpha=0.85,
                edgecolors="white",
                linewidths=0.5,
            )
        front = pareto_front(points)
        if front:
            axes.step(
                [p[0] for p in front],
                [p[1] for p in front],
                where="post",
                color="#2ca02c",
                linewidth=1.6,
                label="Pareto front",
                zorder=1,
            )
            for x, y, name in front:
                axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#2ca02c")
        chosen = next((p for p in points if p[2] == report.recommended), None)
        if chosen:
            axes.scatter(
                [chosen[0]],
                [chosen[1]],
                marker="*",
                s=320,
                c="gold",
                edgecolors="black",
                zorder=5,
                label=f"recommended: {chosen[2]}",
            )
        for fmt, color in COLORS.items():
            axes.scatter([], [], c=color, marker="o", label=fmt)
        for quantization, marker in MARKERS.items():
            if any(str(v.quantization) == quantization for v in measured):
                axes.scatter([], [], c="white", edgecolors="black", marker=marker, label=quantization)
        axes.set_xscale("log")
        axes.autoscale_view()
        ticks = log_ticks(*axes.get_xlim())
        if ticks:
            axes.xaxis.set_major_locator(FixedLocator(ticks))
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.02, 50, 200
        axes.xaxis.set_minor_formatter(NullFormatter())
        # The artifacts' setting: the Keras row runs on TensorFlow's own process-wide thread pool.
        headline = next((v.latency_ms for v in measured if v.latency_ms and v.format != Format.KERAS), None)
        if field == "p50" and headline:
            label = f"batch-{headline.batch} p50 latency, {headline.threads} thread(s) (ms, log scale)"
        axes.set_xlabel(label)
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_title(
            f"{report.model.get('name', 'model')} on {report.data.get('name', 'data')}: "
            f"accuracy vs {'size' if field == 'gzip_bytes' else 'latency'}"
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        figure.tight_layout()
        written.append(_save(figure, Path(out_dir) / file_name))
        plt.close(figure)
    return written


def plot_search(report: Report, out_dir: Path) -> list[Path]:
    """search_front.png (validation drop against the objective for every artifact candidate, front and choice
    marked) and sensitivity.png (each layer's drops), when the report has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    trace = report.search or {}
    artifacts = [c for c in trace.get("candidates", []) if c["kind"] == "artifact" and c.get("val_drop_pp") is not None]
    if artifacts:
        key, label, scale = {
            "latency": ("p50_ms", "p50 latency, quick protocol (ms)", 1.0),
            "flash": ("size_bytes", "raw size (KiB)", 1 / 1024),
        }.get(trace.get("goal"), ("gzip_bytes", "gzip size (KiB)", 1 / 1024))
        figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
        styles = {
            "chosen": ("*", "gold", 260),
            "front": ("o", "#2ca02c", 60),
            "rejected on test": ("X", "#d62728", 70),
            "dominated": ("o", "#9ecae1", 36),
            "dropped": ("x", "#7f7f7f", 36),
        }
        for decision, (marker, color, size) in styles.items():
            points = [c for c in artifacts if c["decision"] == decision and c.get(key) is not None]
            if points:
                axes.scatter([c[key] * scale for c in points], [c["val_drop_pp"] for c in points], marker=marker,
                             c=color, s=size, edgecolors="black", linewidths=0.4, label=decision, zorder=3)  # fmt: skip
        for c in artifacts:
            if c["decision"] in ("chosen", "front", "rejected on test") and c.get(key) is not None:
                axes.annotate(c["name"], (c[key] * scale, c["val_drop_pp"]), textcoords="offset points",
                              xytext=(4, 4), fontsize=7)  # fmt: skip
        axes.axhline(trace.get("max_accuracy_drop", 0), color="#d62728", linestyle="--", linewidth=1,
                     label="budget")  # fmt: skip
        axes.set_xscale("log")
        axes.set_xlabel(f"{label}, log scale")
        axes.set_ylabel("validation top-1 drop (pp)")
        axes.set_title(f"{report.model.get('name', 'model')}: search candidates ({trace.get('goal')})")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        written.append(_save(figure, Path(out_dir) / SEARCH_PLOT))
        plt.close(figure)
    rows = (report.sensitivity or {}).get("layers", [])
    if rows:
        import numpy as np

        figure, axes = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6), dpi=110)
        positions = np.arange(len(rows))
        bars = (
            ("prune_drop_pp", "#1f77b4", "pruned (mean over the probe sparsities)"),
            ("int8_drop_pp", "#ff7f0e", "int8"),
            ("int4_drop_pp", "#2ca02c", "int4 weights"),
        )
        for offset, (field, color, name) in zip((-0.27, 0.0, 0.27), bars, strict=True):
            values = [row.get(field) or 0.0 for row in rows]
            axes.barh(positions + offset, values, height=0.26, color=color, label=name)
        axes.set_yticks(positions, [f"{row['layer']} ({row['weights']:,})" for row in rows], fontsize=7)
        axes.invert_yaxis()
        axes.set_xlabel("validation top-1 drop when this layer alone changes (pp)")
        axes.set_title(f"{report.model.get('name', 'model')}: per-layer sensitivity")
        axes.grid(True, axis="x", alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        written.append(_save(figure, Path(out_dir) / SENSITIVITY_PLOT))
        plt.close(figure)
    return written


def _save(figure, path: Path) -> Path:
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")
    return path
