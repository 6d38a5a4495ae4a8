"""The pipeline's settings as plain dataclasses. No framework imports here.

A setting enters once (CLI option, Python keyword or suite file), lives here under one name, and is read by
the stage that needs it. Enums are `StrEnum`s so that CLI values, config values and JSON values are the same
strings.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from .edge.timing import DEFAULT as PROTOCOL
from .errors import ConfigError


class Format(StrEnum):
    KERAS = "keras"
    TFLITE = "tflite"
    ONNX = "onnx"


class Quant(StrEnum):
    NONE = "none"  # float32
    DYNAMIC = "dynamic"  # int8 weights, float activations
    FLOAT16 = "float16"  # float16 weights
    INT8 = "int8"  # int8 weights and activations (static, calibrated)
    INT16X8 = "int16x8"  # int8 weights, int16 activations (static, calibrated)
    INT4 = "int4"  # int4 weights (channelwise), float activations


class Precision(StrEnum):
    """A layer's weight precision in a mixed-precision plan (`quantize.litert.LayerPlan`)."""

    FLOAT = "float"  # the layer's op stays in float
    INT8 = "int8"
    INT4 = "int4"


class Backend(StrEnum):
    KERAS = "keras"
    CONVERTER = "converter"  # the TFLite converter's post-training quantization
    LITERT = "litert"  # the LiteRT quantizer, applied to the float32 .tflite
    TF2ONNX = "tf2onnx"
    ONNXRUNTIME = "onnxruntime"  # ONNX Runtime's quantization tools, applied to the float32 .onnx


class OrtCalibration(StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class OrtTypes(StrEnum):
    AUTO = "auto"  # chosen for this CPU: see `quantize.onnxruntime.ort_types`
    U8S8 = "u8s8"  # uint8 activations, int8 weights: fastest with VNNI; saturates on x86 without it
    S8S8 = "s8s8"  # int8 activations, int8 weights (ORT runs it as U8S8 on x86)
    U8U8 = "u8u8"  # uint8 activations, uint8 weights: no saturation on any CPU


class OrtOptimization(StrEnum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


def parse_enum(enum_type: type[StrEnum], value: str, *, what: str) -> StrEnum:
    """`Quant("int3")` with a message that lists what is known."""
    try:
        return enum_type(value.strip().lower())
    except ValueError:
        known = ", ".join(member.value for member in enum_type)
        raise ConfigError(f"unknown {what} {value!r}; known: {known}") from None


def parse_enum_list(enum_type: type[StrEnum], text: str, *, what: str) -> tuple:
    """A comma-separated CLI value such as `dynamic,float16,int8`."""
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"no {what} given")
    return tuple(dict.fromkeys(parse_enum(enum_type, item, what=what) for item in items))


def parse_counts(text: str, *, what: str) -> tuple[int, ...]:
    """`1,8` -> (1, 8): batch sizes or thread counts."""
    try:
        values = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise ConfigError(f"{what} must be whole numbers like 1,8; got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} must be whole numbers >= 1; got {text!r}")
    return values


def parse_sparsities(text: str) -> tuple[float, ...]:
    """`0.5,0.8` -> (0.5, 0.8); an empty string means no pruning."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(f"sparsity {item!r} is not a number; expected values in [0, 1) like 0.5,0.8") from None
    return tuple(dict.fromkeys(values))


def parse_m_by_n(text: str) -> tuple[int, int]:
    """`2:4` -> (2, 4): at most m nonzero weights in every n consecutive input channels (NVIDIA's N:M reading;
    tfmot's `sparsity_m_by_n` counts the zeros instead, n - m of them)."""
    parts = text.strip().split(":")
    try:
        m, n = (int(part) for part in parts)
    except ValueError:
        raise ConfigError(f"m-by-n sparsity must look like 2:4 (m nonzero of every n weights), got {text!r}") from None
    if not 0 < m < n:
        raise ConfigError(f"m-by-n sparsity {text!r} needs 0 < m < n (m nonzero of every n weights)")
    return m, n


MAX_CHANNEL_SHARE = 0.9  # structured pruning leaves every channel group at least a tenth
MIN_CLUSTERS = 3  # sparsity-preserving clustering keeps one centroid at zero; tfmot wants at least two more
MAX_CLUSTERS = 256  # as many values as int8 has: more clusters would not share any


def parse_clusters(text: str) -> tuple[int, ...]:
    """`16,8` -> (16, 8): cluster counts; an empty string means no clustering."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            values.append(int(item))
        except ValueError:
            raise ConfigError(f"cluster count {item!r} is not a whole number; expected counts like 16,8") from None
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning and its fine-tune (tfmot PolynomialDecay)."""

    epochs: int = 16
    batch_size: int = 64
    learning_rate: float = 2e-3
    lr_decay_rate: float = 0.9  # exponential decay per epoch
    ramp_fraction: float = 0.5  # share of the fine-tune over which sparsity rises to its target
    patience: int = 3  # early stopping on validation loss, counted after the target sparsity is reached
    m_by_n: str | None = None  # "2:4": also prune to structured m-of-n sparsity (a source next to the sparsities)
    isolate: bool = True  # each fine-tune in a child process, so that a native crash costs one step (isolation.py)
    distill: bool = True  # learn from the starting model's outputs as well as the labels; False: labels only

    @property
    def m_by_n_pair(self) -> tuple[int, int] | None:
        """`m_by_n` as (m, n), or None."""
        return None if self.m_by_n is None else parse_m_by_n(self.m_by_n)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"prune epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"prune batch size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise ConfigError(f"prune ramp fraction must be in (0, 1], got {self.ramp_fraction}")
        if self.m_by_n is not None:
            parse_m_by_n(self.m_by_n)


@dataclass(frozen=True)
class OnnxQuantConfig:
    """ONNX Runtime quantization settings: static QDQ, and the weight type of dynamic quantization."""

    per_channel: bool = True
    types: OrtTypes = OrtTypes.AUTO
    calibration: OrtCalibration = OrtCalibration.MINMAX

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", OrtTypes(self.types))
        object.__setattr__(self, "calibration", OrtCalibration(self.calibration))


@dataclass(frozen=True)
class ParityConfig:
    """How closely an artifact must follow its Keras model on the test split, by precision.

    Float artifacts must agree on `float_agreement` percent of top-1 predictions and stay within
    `float32_max_diff` / `float16_max_diff` (scaled by the largest reference output when that exceeds 1);
    quantized ones must agree on `quantized_agreement` percent.
    """

    float_agreement: float = 99.9
    float32_max_diff: float = 1e-3
    float16_max_diff: float = 2e-2
    quantized_agreement: float = 97.0
    regression_rel_diff: float = 0.1  # quantized regression heads: mean abs difference / std of the reference

    def validate(self) -> None:
        for name in ("float_agreement", "quantized_agreement"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                raise ConfigError(f"parity {name.replace('_', ' ')} must be a percentage, got {getattr(self, name)}")


@dataclass(frozen=True)
class LatencyConfig:
    """One latency protocol for every runtime: warm-up, then at least `min_runs` and `min_seconds`.

    Every artifact is timed at each batch size and thread count; the first pair gives the headline figure.
    """

    batches: tuple[int, ...] = (1,)
    threads: tuple[int, ...] = (1,)  # LiteRT num_threads and ONNX Runtime intra-op threads
    ort_optimization: OrtOptimization = OrtOptimization.ALL
    memory: bool = False  # peak memory of each runtime, in a subprocess of its own (about 1 s per artifact)
    # The protocol's defaults are the device's (`edge.timing.Protocol`): one protocol on both sides.
    warmup_runs: int = PROTOCOL.warmup_runs
    warmup_seconds: float = PROTOCOL.warmup_seconds
    min_runs: int = PROTOCOL.min_runs
    min_seconds: float = PROTOCOL.min_seconds
    max_seconds: float = PROTOCOL.max_seconds  # a very slow artifact stops here, with fewer runs recorded

    def __post_init__(self) -> None:
        object.__setattr__(self, "ort_optimization", OrtOptimization(self.ort_optimization))
        object.__setattr__(self, "batches", tuple(int(b) for b in self.batches))
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))

    @property
    def batch(self) -> int:
        """The headline batch size."""
        return self.batches[0]

    def validate(self) -> None:
        if not self.batches or not self.threads or min(self.batches) < 1 or min(self.threads) < 1:
            shown = f"batches={list(self.batches)} threads={list(self.threads)}"
            raise ConfigError(f"latency batches and threads must be >= 1, got {shown}")
        if self.min_runs < 1:
            raise ConfigError(f"latency min runs must be >= 1, got {self.min_runs}")


class SearchGoal(StrEnum):
    SIZE = "size"  # the smallest artifact (gzip bytes) within the accuracy budget
    LATENCY = "latency"  # the fastest artifact (p50 at the headline batch and threads) within the budget
    FLASH = "flash"  # the smallest artifact in raw bytes (what flash, storage or a memory map holds) within the budget


def parse_size(text: str, *, what: str) -> int:
    """`65536`, `64KiB`, `64k`, `1.5MiB`, `2M` -> bytes (k/K and KiB are 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)(i?[bB])?\s*", text)
    if match is None:
        raise ConfigError(f"{what} {text!r} is not a size; use e.g. 65536, 64KiB or 1MiB")
    value = float(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[match.group(2).lower()]
    if not value >= 1:
        raise ConfigError(f"{what} must be at least one byte, got {text!r}")
    return int(value)


@dataclass(frozen=True)
class Limits:
    """What the device allows: a variant beyond any of these is never recommended, and a search candidate beyond
    the latency or flash bound is not on its front. None: no bound."""

    latency_ms: float | None = None  # p50 at the headline batch and threads
    flash_bytes: int | None = None  # raw bytes: the file for mobile; TFLite Micro's flash (LUT copy counted) for mcu
    arena_bytes: int | None = None  # TFLite Micro's measured tensor arena (mcu)

    def exceeded(self, *, p50_ms=None, flash_bytes=None, arena_bytes=None) -> str | None:
        """Which limit these figures exceed, in one line, or None; a figure not given is not judged."""
        if self.latency_ms is not None and p50_ms is not None and p50_ms > self.latency_ms:
            return f"p50 {p50_ms} ms is over the {self.latency_ms} ms limit"
        if self.flash_bytes is not None and flash_bytes is not None and flash_bytes > self.flash_bytes:
            return f"{flash_bytes:,} raw bytes are over the {self.flash_bytes:,}-byte flash limit"
        if self.arena_bytes is not None and arena_bytes is not None and arena_bytes > self.arena_bytes:
            return f"a {arena_bytes:,}-byte arena is over the {self.arena_bytes:,}-byte limit"
        return None

    def validate(self) -> None:
        for name, value in (("latency", self.latency_ms), ("flash", self.flash_bytes), ("arena", self.arena_bytes)):
            if value is not None and not value > 0:
                raise ConfigError(f"the {name} limit must be positive, got {value}")


SEARCH_TARGETS = ("mobile", "mcu")  # as `report.targets.TARGETS`
MCU_LIMITS = {"flash_bytes": 1024**2, "arena_bytes": 256 * 1024}  # --target mcu's defaults: a Cortex-M4/M7 class part


def parse_duration(text: str) -> float:
    """`90s`, `10m`, `1.5h` or plain seconds -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"budget {text!r} is not a duration; use e.g. 300s, 10m or 1h") from None
    if not seconds > 0:
        raise ConfigError(f"budget must be positive, got {text!r}")
    return seconds


@dataclass(frozen=True)
class SearchConfig:
    """The accuracy-aware search (`effkit.search`): what it optimises, how long it may take, what it tries.

    Decisions read only the validation split; `CompressConfig.max_accuracy_drop` is the budget in percentage points.
    """

    goal: SearchGoal = SearchGoal.SIZE
    budget_seconds: float | None = None  # wall time for the search; None = no bound
    target: str | None = None  # "mobile" or "mcu": only what that target runs is on the front (None: anything)
    levels: tuple[float, ...] = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97)  # progressive overall sparsities
    level_epochs: int = 8  # fine-tune epochs per level, each continuing from the previous level's model
    clusters: tuple[int, ...] = (32, 16, 8)  # cluster counts tried on the sparsest models within budget
    cluster_epochs: int = 6
    channel_shares: tuple[float, ...] = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8)  # structured pruning levels (latency, flash)
    probe_sparsities: tuple[float, ...] = (0.5, 0.75, 0.9)  # sensitivity: one layer alone pruned to each, no fine-tune
    int4_max_drop: float = 0.5  # a layer takes int4 weights when that alone costs at most this many pp on val
    qat: bool = True  # QAT fallback when post-training int8 of the chosen model misses the budget
    force_qat: bool = False  # run the QAT path even when PTQ is within budget (tests, comparisons)

    def __post_init__(self) -> None:
        object.__setattr__(self, "goal", SearchGoal(self.goal))
        object.__setattr__(self, "levels", tuple(float(level) for level in self.levels))
        object.__setattr__(self, "clusters", tuple(int(count) for count in self.clusters))
        object.__setattr__(self, "channel_shares", tuple(float(share) for share in self.channel_shares))
        object.__setattr__(self, "probe_sparsities", tuple(float(s) for s in self.probe_sparsities))

    def validate(self) -> None:
        if not self.levels or any(not 0.0 < level < 1.0 for level in self.levels):
            raise ConfigError(f"search levels must be sparsities in (0, 1), got {list(self.levels)}")
        if list(self.levels) != sorted(set(self.levels)):
            raise ConfigError(f"search levels must increase, got {list(self.levels)}")
        if any(not 2 <= count <= 256 for count in self.clusters):
            raise ConfigError(f"cluster counts must be in [2, 256], got {list(self.clusters)}")
        if any(not 0.0 < share <= MAX_CHANNEL_SHARE for share in self.channel_shares):
            raise ConfigError(f"channel shares must be in (0, {MAX_CHANNEL_SHARE}], got {list(self.channel_shares)}")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise ConfigError(f"search budget must be positive seconds, got {self.budget_seconds}")
        if self.target not in (None, *SEARCH_TARGETS):
            raise ConfigError(f"unknown search target {self.target!r}; known: {', '.join(SEARCH_TARGETS)}")
        if self.level_epochs < 1 or self.cluster_epochs < 1:
            raise ConfigError("search fine-tune epochs must be >= 1")
        if not self.probe_sparsities or any(not 0.0 < s < 1.0 for s in self.probe_sparsities):
            raise ConfigError(f"sensitivity probe sparsities must be in (0, 1), got {list(self.probe_sparsities)}")


@dataclass(frozen=True)
class CompressConfig:
    """Everything `effkit compress` can be told."""

    sparsities: tuple[float, ...] = (0.5, 0.8)
    clusters: tuple[int, ...] = ()  # cluster counts applied to each pruned model: source `pruned80-c16`
    channels: tuple[float, ...] = ()  # shares of each channel group removed (structured pruning): source `channels50`
    qat: bool = False  # a quantization-aware-trained int8 TFLite variant of each pruned and clustered source
    quantizations: tuple[Quant, ...] = (Quant.NONE, Quant.DYNAMIC, Quant.FLOAT16, Quant.INT8)
    formats: tuple[Format, ...] = (Format.TFLITE, Format.ONNX)
    tflite_backends: tuple[Backend, ...] = (Backend.CONVERTER, Backend.LITERT)
    max_accuracy_drop: float = 1.0  # percentage points; bounds which variant is recommended
    calibration_samples: int = 200  # representative samples from the training split for int8
    seed: int = 0
    prune: PruneConfig = field(default_factory=PruneConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    onnx_quant: OnnxQuantConfig = field(default_factory=OnnxQuantConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)
    limits: Limits = field(default_factory=Limits)  # the device's bounds on what is recommended
    search: SearchConfig | None = None  # None: measure the grid above; else search within max_accuracy_drop

    def __post_init__(self) -> None:
        # Normalise so that a config built from Python strings equals one built by the CLI.
        object.__setattr__(self, "sparsities", tuple(float(s) for s in self.sparsities))
        object.__setattr__(self, "clusters", tuple(int(k) for k in self.clusters))
        object.__setattr__(self, "channels", tuple(float(s) for s in self.channels))
        object.__setattr__(self, "quantizations", tuple(Quant(q) for q in self.quantizations))
        object.__setattr__(self, "formats", tuple(Format(f) for f in self.formats))
        object.__setattr__(self, "tflite_backends", tuple(Backend(b) for b in self.tflite_backends))

    def validate(self) -> None:
        for sparsity in self.sparsities:
            if not 0.0 <= sparsity < 1.0:
                raise ConfigError(f"sparsity {sparsity} is outside [0, 1)")
        for share in self.channels:
            if not 0.0 < share <= MAX_CHANNEL_SHARE:
                raise ConfigError(f"channel share {share} is outside (0, {MAX_CHANNEL_SHARE}]")
        for clusters in self.clusters:
            if not MIN_CLUSTERS <= clusters <= MAX_CLUSTERS:
                raise ConfigError(f"cluster count {clusters} is outside [{MIN_CLUSTERS}, {MAX_CLUSTERS}]")
        if (self.clusters or self.qat) and not self.sparsities:
            asked = "clustering" if self.clusters else "QAT"
            raise ConfigError(f"{asked} is applied to pruned models; give at least one sparsity (0 for none)")
        if not self.quantizations:
            raise ConfigError("no quantization given")
        if not self.formats:
            raise ConfigError("no export format given")
        if Format.KERAS in self.formats:
            raise ConfigError("format 'keras' is the reference and always measured; choose from: tflite, onnx")
        if not self.tflite_backends or not set(self.tflite_backends) <= {Backend.CONVERTER, Backend.LITERT}:
            shown = ", ".join(self.tflite_backends) or "none"
            raise ConfigError(f"TFLite backends must be converter and/or litert, got {shown}")
        if self.max_accuracy_drop < 0:
            raise ConfigError(f"max accuracy drop must be >= 0 percentage points, got {self.max_accuracy_drop}")
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration samples must be >= 1, got {self.calibration_samples}")
        self.prune.validate()
        self.latency.validate()
        self.parity.validate()
        self.limits.validate()
        if self.search is not None:
            self.search.validate()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sparsities"] = list(self.sparsities)
        data["clusters"] = list(self.clusters)
        data["channels"] = list(self.channels)
        data["quantizations"] = [q.value for q in self.quantizations]
        data["formats"] = [f.value for f in self.formats]
        data["tflite_backends"] = [b.value for b in self.tflite_backends]
        data["latency"]["ort_optimization"] = self.latency.ort_optimization.value
        data["latency"]["batches"] = list(self.latency.batches)
        data["latency"]["threads"] = list(self.latency.threads)
        data["onnx_quant"]["types"] = self.onnx_quant.types.value
        data["onnx_quant"]["calibration"] = self.onnx_quant.calibration.value
        if self.search is not None:
            data["search"] = {
                **data["search"],
                "goal": self.search.goal.value,
                "levels": list(self.search.levels),
                "clusters": list(self.search.clusters),
                "channel_shares": list(self.search.channel_shares),
                "probe_sparsities": list(self.search.probe_sparsities),
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        nested = {
            "prune": PruneConfig,
            "latency": LatencyConfig,
            "onnx_quant": OnnxQuantConfig,
            "parity": ParityConfig,
            "limits": Limits,
            "search": SearchConfig,
        }
        for name, nested_class in nested.items():
            if values.get(name) is not None:
                allowed = {f.name for f in fields(nested_class)}
                extra = sorted(set(values[name]) - allowed)
                if extra:
                    raise ConfigError(f"unknown {name} keys {extra}; known: {sorted(allowed)}")
                values[name] = nested_class(**values[name])
        for name in ("sparsities", "clusters", "quantizations", "formats", "tflite_backends"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)
