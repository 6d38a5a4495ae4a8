"""Sparsity-preserving weight clustering with tfmot: wrap, fine-tune, strip. The caller's model is never modified.

Each clustered kernel ends with at most `clusters` distinct values (per output channel for convolutions, which
are clustered per channel), one of them exactly zero where the input was pruned, so int8 quantization, which maps
equal floats to equal integers within a channel, keeps both the cluster count and the zeros (`distinct_values`
checks the artifact). gzip then finds the few repeated bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..config import PruneConfig
from ..errors import ModelError, first_line
from ..load import keras_compat
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from ..runtime.measure import weight_name, weight_sparsity
from .made import Made
from .prune import validation_top1
from .train import fine_tune_from

log = logging.getLogger("effkit")

# The weights tfmot clusters (Dense/Conv kernels, embeddings, separable convolutions' pointwise kernels).
CLUSTERED_WEIGHTS = ("kernel", "embeddings", "pointwise_kernel")
MIN_WEIGHTS_PER_CLUSTER = 4  # smaller kernels are left alone: they hold little to share and little to save
LEARNING_RATE_FACTOR = 0.1  # clustering fine-tunes at a tenth of the pruning fine-tune's rate
# Output channels clustered per channel, over the whole model. tfmot builds each channel's clustering ops one by one
# in Python, so wrapping and the first step's tracing grow with the channel count: convolutions of 64+128+256+512
# channels took 143 s to their first epoch per channel and 12 s per tensor (AMD EPYC family 26, x86_64-avx512-vnni,
# 2 cores), and an EfficientNetB0 909 s. The narrowest convolutions keep per-channel clusters up to this sum.
PER_CHANNEL_MAX = 256


@dataclass(frozen=True)
class ClusterResult(Made):
    STAGE: ClassVar[str] = "cluster"

    model: Any  # tf_keras model, clustering wrappers stripped
    clusters: int
    clustered_layers: tuple[str, ...]
    per_channel: tuple[str, ...]  # layers clustered per output channel (convolutions)
    sparsity: float  # measured after clustering over the prunable kernels (stays at least the input's)
    epochs_run: int
    val_top1: float
    seconds: float
    input_sparsity: float = 0.0
    preserve_sparsity: bool = True
    fine_tune: dict[str, Any] = field(default_factory=dict)  # the fine-tune's agreement with its teacher
    per_tensor_for_time: tuple[str, ...] = ()  # could be clustered per channel, but past `PER_CHANNEL_MAX`

    def step_params(self) -> dict[str, Any]:
        """What the variant's `cluster` step records."""
        capped = {"per_tensor_for_time": list(self.per_tensor_for_time)} if self.per_tensor_for_time else {}
        return {
            "clusters": self.clusters,
            "layers": list(self.clustered_layers),
            "per_channel": list(self.per_channel),
            **capped,
            "preserve_sparsity": self.preserve_sparsity,
            "input_sparsity": round(self.input_sparsity, 4),
            "sparsity": round(self.sparsity, 4),
            "epochs": self.epochs_run,
            "val_top1": round(self.val_top1, 4),
            **self.fine_tune,
        }


def cluster(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    clusters: int,
    config: PruneConfig,
    seed: int = 0,
    preserve_sparsity: bool = True,
    layers: Collection[str] | None = None,
    epochs: int | None = None,
    deadline: float | None = None,
) -> ClusterResult:
    """Cluster the kernels of a (pruned) tf_keras classifier to `clusters` values each and fine-tune it.

    Convolutions are clustered per output channel when every channel has enough non-zero weights for the
    centroids; otherwise over the whole kernel, which still leaves at most `clusters` values per channel.

    Args:
        model: a tf_keras model (bridge Keras 3 models with `keras_compat.load_model` first); left unchanged.
        dataset: train split for the fine-tune, validation split for early stopping and `val_top1`. The test split
            is never read.
        info: the classifier's description; its output kind chooses the loss.
        clusters: values per kernel (per channel for convolutions), in [3, 256] with `preserve_sparsity`.
        config: the fine-tune's length, batch size, patience and learning rate (used at a tenth).
        seed: fixes shuffling and dropout (tfmot seeds its k-means++ itself).
        preserve_sparsity: keep a centroid at exactly zero and every zero weight at zero.
        layers: names of the layers to cluster (inside nested models too); None for every layer with a kernel of
            at least `clusters * MIN_WEIGHTS_PER_CLUSTER` weights.
        epochs: fine-tune epochs; `config.epochs` by default, 0 to cluster without fine-tuning.
        deadline: a wall-clock time (`time.time()`) at which the fine-tune stops (`train.fit`); None: none.

    Returns:
        A ClusterResult whose `model` is a new, stripped tf_keras model.

    Raises:
        ModelError: the model is not tf_keras, a named layer cannot be clustered, or no layer can.
    """
    if not keras_compat.is_tf_keras_model(model):
        raise ModelError("cluster() takes a tf_keras model; load Keras 3 models with keras_compat.load_model")
    if not (3 if preserve_sparsity else 2) <= clusters <= 256:
        low = 3 if preserve_sparsity else 2
        raise ModelError(f"clusters must be in [{low}, 256], got {clusters}")
    tfk = keras_compat.tf_keras()
    tfmot = keras_compat.tfmot()
    cluster_weights = keras_compat.private.experimental_cluster_weights()
    kmeans = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS

    tfk.utils.set_random_seed(seed)
    input_sparsity = weight_sparsity(model)[0]
    wanted = None if layers is None else set(layers)
    clustered: list[str] = []
    per_channel: list[str] = []
    skipped: dict[str, str] = {}
    allowed, capped = _per_channel_allowed(model, tfk, clusters=clusters, preserve_sparsity=preserve_sparsity,
                                           named=wanted)  # fmt: skip

    def wrap(layer):
        if isinstance(layer, tfk.Model):  # a nested base (MobileNetV2 inside a transfer model): cluster inside it
            return tfk.models.clone_model(layer, clone_function=wrap)
        if wanted is not None and layer.name not in wanted:
            return layer
        plan = _layer_plan(layer, tfk, clusters=clusters, preserve_sparsity=preserve_sparsity, named=wanted)
        plan = plan if plan is not True else layer.name in allowed
        if isinstance(plan, str):
            if plan:
                skipped[layer.name] = plan
            return layer
        try:
            wrapped = cluster_weights(
                layer,
                number_of_clusters=clusters,
                cluster_centroids_init=kmeans,
                preserve_sparsity=preserve_sparsity,
                cluster_per_channel=plan,
            )
        except ValueError as error:  # tfmot's registry does not know this layer
            skipped[layer.name] = f"tfmot cannot cluster it ({first_line(error)})"
            return layer
        clustered.append(layer.name)
        if plan:
            per_channel.append(layer.name)
        return wrapped

    if capped:
        log.info("cluster %d: %d convolution(s) clustered per tensor, not per channel, to keep tfmot's set-up "
                 "short (%d output channels per channel at most)", clusters, len(capped), PER_CHANNEL_MAX)  # fmt: skip
    log.info("cluster %d: wrapping the layers (tfmot's k-means++ per kernel)", clusters)
    # clone_model rebuilds every layer with fresh weights: copy them, then wrap the copies.
    working = tfk.models.clone_model(model)
    working.set_weights(model.get_weights())
    try:
        wrapped = tfk.models.clone_model(working, clone_function=wrap)
    except (ValueError, TypeError) as error:
        raise ModelError(f"tfmot cannot cluster this model: {first_line(error)}") from error
    except keras_compat.tensorflow().errors.OpError as error:  # k-means++ refused a kernel `_layer_plan` let by
        raise ModelError(f"tfmot could not initialise {clusters} clusters: {first_line(error)}") from error
    if wanted is not None:
        missing = sorted(wanted - set(clustered))
        if missing:
            reasons = "; ".join(f"{name}: {skipped.get(name, 'no such layer')}" for name in missing)
            raise ModelError(f"cannot cluster the named layers: {reasons}")
    if not clustered:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped.items()) or "no kernels"
        raise ModelError(f"the model has no layer to cluster to {clusters} values ({reasons})")
    for name, reason in skipped.items():
        log.info("cluster %d: left %s unclustered: %s", clusters, name, reason)

    label = f"cluster {clusters}"
    epochs = config.epochs if epochs is None else epochs
    log.info(
        "%s: fine-tuning %d clustered layers (%d per channel) for up to %d epochs",
        label,
        len(clustered),
        len(per_channel),
        epochs,
    )
    epochs_run, seconds, fine_tune = 0, 0.0, {}
    if epochs > 0:
        result = fine_tune_from(
            model,
            wrapped,
            dataset,
            keras=tfk,
            heads=info.heads,
            config=config,
            epochs=epochs,
            label=label,
            learning_rate_factor=LEARNING_RATE_FACTOR,
            include_start=True,  # k-means clustering alone is already a clustered model: never end below it
            deadline=deadline,
        )
        epochs_run, seconds, fine_tune = result.epochs_run, result.seconds, result.record()
    started = time.perf_counter()
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    sparsity = weight_sparsity(stripped)[0]
    val_top1 = validation_top1(stripped, dataset, info)
    seconds += time.perf_counter() - started
    log.info(
        "%s: sparsity %.4f (was %.4f), val top-1 %.2f%% after %d epochs (%.1fs)",
        label,
        sparsity,
        input_sparsity,
        val_top1 * 100,
        epochs_run,
        seconds,
    )
    return ClusterResult(
        model=stripped,
        clusters=clusters,
        clustered_layers=tuple(clustered),
        per_channel=tuple(per_channel),
        sparsity=sparsity,
        epochs_run=epochs_run,
        val_top1=val_top1,
        seconds=seconds,
        input_sparsity=input_sparsity,
        preserve_sparsity=preserve_sparsity,
        fine_tune=fine_tune,
        per_tensor_for_time=tuple(capped),
    )


def _per_channel_allowed(model: Any, tfk: Any, *, clusters: int, preserve_sparsity: bool,
                         named: set[str] | None) -> tuple[set[str], list[str]]:  # fmt: skip
    """The convolutions clustered per channel (narrowest first, while their output channels add up to at most
    `PER_CHANNEL_MAX`), and those left per tensor for time, in the model's order."""
    wanted: list[tuple[int, int, str]] = []
    for order, layer in enumerate(_all_layers(model, tfk)):
        if named is not None and layer.name not in named:
            continue
        if _layer_plan(layer, tfk, clusters=clusters, preserve_sparsity=preserve_sparsity, named=named) is True:
            kernel = layer.kernel.shape
            wanted.append((int(kernel[1] if layer.data_format == "channels_first" else kernel[-1]), order, layer.name))
    allowed, total = set(), 0
    for channels, _, name in sorted(wanted):
        if total + channels > PER_CHANNEL_MAX:
            break
        allowed.add(name)
        total += channels
    return allowed, [name for _, _, name in sorted(wanted, key=lambda w: w[1]) if name not in allowed]


def _all_layers(model: Any, tfk: Any):
    """Every layer, inside nested models too (as `cluster` wraps them)."""
    for layer in model.layers:
        if isinstance(layer, tfk.Model):
            yield from _all_layers(layer, tfk)
        else:
            yield layer


def _layer_plan(layer: Any, tfk: Any, *, clusters: int, preserve_sparsity: bool, named: set[str] | None) -> bool | str:
    """How to cluster a layer: True per output channel, False over the whole kernel, or a string saying why not
    (empty for a layer with no kernel at all, which is not worth a log line unless it was named)."""
    kernels = [w for w in layer.weights if weight_name(w) in CLUSTERED_WEIGHTS]
    if not kernels:
        return "it has no kernel to cluster" if named is not None else ""
    values = [np.asarray(kernel.numpy()) for kernel in kernels]
    smallest = min(v.size for v in values)
    if smallest < clusters * MIN_WEIGHTS_PER_CLUSTER:
        return f"its kernel has {smallest} weights, fewer than {MIN_WEIGHTS_PER_CLUSTER} per cluster"
    if not all(_centroids_fit(v, clusters, preserve_sparsity) for v in values):
        return f"its kernel has too few non-zero weights for {clusters} clusters"
    if isinstance(layer, tfk.layers.Conv2D) and not isinstance(layer, tfk.layers.Conv2DTranspose):
        kernel = values[0]
        channels = np.moveaxis(kernel, -1 if layer.data_format != "channels_first" else 1, 0)
        if all(_centroids_fit(channel, clusters, preserve_sparsity) for channel in channels):
            return True
    return False


def _centroids_fit(values: np.ndarray, clusters: int, preserve_sparsity: bool) -> bool:
    """Whether tfmot's k-means++ initialisation can place `clusters` centroids in `values`.

    With sparsity preserved, one centroid is zero and the rest are shared between the negative and the positive
    weights in proportion to their counts; k-means++ fails when a side gets more centroids than it has weights.
    """
    values = values.reshape(-1)
    if not preserve_sparsity:
        return values.size >= clusters
    negative = int(np.count_nonzero(values < 0))
    positive = int(np.count_nonzero(values > 0))
    if negative + positive == 0:
        return False
    on_negative = int(np.round((clusters - 1) * negative / (negative + positive)))
    return on_negative <= negative and clusters - 1 - on_negative <= positive


def distinct_values(tflite_path: Path) -> dict[str, int]:
    """Per weight tensor of a .tflite, named by its Keras layer: the largest number of distinct values in any one
    output channel. A kernel clustered to k values (over the whole kernel or per channel) shows at most k, in float
    and in int8 (the quantizer maps equal floats of a channel to equal integers). Biases are not counted."""
    from ..export.tflite import constant_kernels

    counts: dict[str, int] = {}
    for layer, tensors in constant_kernels(tflite_path).items():
        counts[layer] = max(max(len(np.unique(channel)) for channel in tensor) for tensor in tensors)
    return counts
