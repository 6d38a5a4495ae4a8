"""Benchmark: models effkit did not train (issue #22), compressed as a user would, with and without labels.

Each model is pretrained here, in a process of its own, on data the compression never sees: more of it, and
shifted. The digits' 1,797 originals are split once: 1,200 feed pretraining (ten augmented copies each: rotated,
shifted, zoomed, noisy), and the other 597 become the user's set (three copies each, in another style: blurred,
lower contrast, brighter, shifted less). The text model is pretrained on 20,000 generated reviews and compressed on
2,000 shorter ones with denser cues. No compression sees more than 2,000 samples.

- `xception_mini`, a tf_keras `.h5`, 48x48x1: two Conv2D (l2), four residual blocks of SeparableConv2D-BN-ReLU-
  SeparableConv2D-BN-MaxPooling2D(3, 2) with a Conv2D 1x1 stride-2 + BN shortcut, Conv2D, GlobalAveragePooling2D,
  softmax (mini-XCEPTION);
- `mlp_k3`, a Keras 3 `.keras`, 28x28x1: Rescaling, Flatten, Dense 128, Dropout, Dense 10 (the lecture's
  Fashion-MNIST model);
- `text_gap`, a tf_keras `.keras`, 256 tokens: Embedding, GlobalAveragePooling1D, Dense 16, Dense 1 sigmoid (the
  lecture's IMDB model).

For each model, in fresh `effkit compress` processes with effkit's defaults (nothing set for the CPU):

- `--search size --budget B` on the labelled set, and again on its inputs alone (the labels are then the model's
  own top-1). Judged, on every model:
  - the recommendation is at least 4x smaller (gzip) than the float32 TFLite file (raw), within 1 pp on test;
  - where the converter's dynamic-range file is within 1 pp, the recommendation is at least as small (gzip);
  - no fine-tune ends below its start on validation (`val_agreement >= val_agreement_start` in every step).
- pruning to 50% with distillation (the default) and with `--no-distill` (labels only): both shown, with the
  validation agreement each fine-tune ended with and the test top-1 of the float32 TFLite file.

Every figure is printed with the CPU it was measured on.

Usage: python bench/foreign.py [--out DIR] [--models xception_mini,mlp_k3,text_gap] [--budget 4m]
Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("xception_mini", "mlp_k3", "text_gap")
FILES = {"xception_mini": "xception_mini.h5", "mlp_k3": "mlp_k3.keras", "text_gap": "text_gap.keras"}
IMAGE_SIZE = {"xception_mini": 48, "mlp_k3": 28}
PRETRAIN_ORIGINALS = 1200  # of the digits' 1,797, after a fixed permutation; the rest are the user's
MIN_RATIO = 4.0  # recommended gzip bytes vs float32 TFLite raw bytes
MAX_DROP_PP = 1.0
TEXT_LENGTH = 256
TEXT_WORDS = 10_000


# --------------------------------------------------------------------------------------------------------------------
# Data: the pretraining domain and the user's, from disjoint originals


def _originals() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(2017).permutation(len(digits.target))
    images, labels = digits.images[order].astype(np.float32), digits.target[order].astype(np.int64)
    cut = PRETRAIN_ORIGINALS
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def _styled(images: np.ndarray, size: int, *, copies: int, style: str, seed: int) -> np.ndarray:
    """`copies` augmented versions of each 8x8 original at size x size, 0..255, in a pretraining or a user style."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.zoom(images, (1, size / 8, size / 8), order=1) * (255.0 / 16.0)
    out = np.empty((len(images) * copies, size, size, 1), np.float32)
    for copy in range(copies):
        for index, image in enumerate(base):
            if style == "pretrain":
                angle, shift, zoom = rng.uniform(-12, 12), rng.uniform(-size / 8, size / 8, 2), rng.uniform(0.9, 1.1)
                image = ndimage.rotate(image, angle, reshape=False, order=1)
                image = ndimage.shift(ndimage.zoom(image, zoom, order=1)[:size, :size], shift, order=1)
                image = np.pad(image, ((0, size - image.shape[0]), (0, size - image.shape[1])))
                image = image + rng.normal(0, 8, image.shape)
            else:  # the user's camera: softer, flatter, brighter, less displaced
                angle, shift = rng.uniform(-6, 6), rng.uniform(-size / 12, size / 12, 2)
                image = ndimage.shift(ndimage.rotate(image, angle, reshape=False, order=1), shift, order=1)
                image = ndimage.gaussian_filter(image, size / 96) * 0.85 + 15 + rng.normal(0, 4, image.shape)
            out[copy * len(base) + index, ..., 0] = np.clip(image, 0, 255)
    return out


def _reviews(count: int, *, seed: int, shortest: float, longest: float, cue_every: int, contradict: float):
    """Token sequences (IMDB's shape) whose label is carried by sentiment words 1..100 (positive) and 101..200
    (negative) among neutral ones; `contradict` of the cues disagree with the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    x = np.zeros((count, TEXT_LENGTH), np.int32)
    for i, label in enumerate(labels):
        size = int(rng.integers(int(TEXT_LENGTH * shortest), int(TEXT_LENGTH * longest)))
        tokens = rng.integers(201, TEXT_WORDS, size)
        cues = rng.choice(size, size=max(3, size // cue_every), replace=False)
        positive = np.where(rng.random(len(cues)) > contradict, label, 1 - label)
        tokens[cues] = rng.integers(1, 101, len(cues)) + np.where(positive == 1, 0, 100)
        x[i, :size] = tokens
    return x, labels.astype(np.int64)


def user_data(name: str) -> dict[str, np.ndarray]:
    """The user's labelled set: at most 2,000 samples the pretraining never saw, with train, validation and test
    drawn from separate originals (three copies of one drawing in train and validation would let validation
    overstate what a fine-tune learned)."""
    if name == "text_gap":
        x, y = _reviews(2000, seed=99, shortest=0.12, longest=0.5, cue_every=9, contradict=0.25)
        return {"x_train": x[:1200], "y_train": y[:1200], "x_val": x[1200:1500], "y_val": y[1200:1500],
                "x_test": x[1500:], "y_test": y[1500:]}  # fmt: skip
    _, _, images, labels = _originals()
    size, copies, data = IMAGE_SIZE[name], 3, {}
    for seed, (split, part) in enumerate(
        (("train", slice(0, 300)), ("val", slice(300, 400)), ("test", slice(400, None)))
    ):
        data[f"x_{split}"] = _styled(images[part], size, copies=copies, style="user", seed=5 + seed)
        data[f"y_{split}"] = np.tile(labels[part], copies)
    return data


# --------------------------------------------------------------------------------------------------------------------
# The models, built and pretrained with plain Keras in a process of their own


def xception_mini(keras, *, size: int, classes: int = 10):
    """mini-XCEPTION (Arriaga et al. 2017), as published for facial expressions, at a smaller input."""
    layers, l2 = keras.layers, keras.regularizers.l2(0.01)
    inputs = keras.Input((size, size, 1))
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for _ in range(2):
        x = layers.Conv2D(8, 3, use_bias=False, kernel_regularizer=l2)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for filters in (16, 32, 64, 128):
        shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x))
        x = layers.SeparableConv2D(filters, 3, padding="same", depthwise_regularizer=l2, use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
        x = layers.SeparableConv2D(filters, 3, padding="same", depthwise_regularizer=l2, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Add()([layers.MaxPooling2D(3, strides=2, padding="same")(x), shortcut])
    x = layers.Conv2D(classes, 3, padding="same")(x)
    outputs = layers.Activation("softmax", name="predictions")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="xception_mini")


def mlp(keras, *, size: int, classes: int = 10):
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((size, size, 1)),
            layers.Rescaling(1.0 / 255.0),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(classes, activation="softmax"),
        ],
        name="mlp_k3",
    )


def text_gap(keras):
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((TEXT_LENGTH,), dtype="int32"),
            layers.Embedding(TEXT_WORDS, 16),
            layers.GlobalAveragePooling1D(),
            layers.Dense(16, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="text_gap",
    )


def pretrain(name: str, folder: Path) -> None:
    """Build and pretrain one model on its own domain; save it and the user's set (labelled and inputs only)."""
    # Pretraining is not what is measured: it runs with oneDNN off, which trains these networks on every CPU.
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0"
    started = time.perf_counter()
    from effkit.load import keras_compat

    keras = keras_compat.keras3() if name == "mlp_k3" else keras_compat.tf_keras()
    keras.utils.set_random_seed(0)
    if name == "text_gap":
        x, y = _reviews(20_000, seed=1, shortest=0.25, longest=1.0, cue_every=12, contradict=0.3)
        model, epochs, loss = text_gap(keras), 8, "binary_crossentropy"
    else:
        images, labels, _, _ = _originals()
        size = IMAGE_SIZE[name]
        copies = 8
        x, y = _styled(images, size, copies=copies, style="pretrain", seed=1), np.tile(labels, copies)
        build = xception_mini if name == "xception_mini" else mlp
        model, epochs, loss = build(keras, size=size), 12, "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, epochs=epochs, batch_size=64, validation_split=0.1, verbose=0)
    model.save(folder / FILES[name])
    data = user_data(name)
    np.savez(folder / f"{name}-labels.npz", **data)
    np.savez(folder / f"{name}-inputs.npz", **{key: value for key, value in data.items() if key.startswith("x_")})
    record = {
        "samples": len(x),
        "epochs": epochs,
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "params": int(model.count_params()),
        "seconds": time.perf_counter() - started,
    }
    (folder / f"{name}-pretrain.json").write_text(json.dumps(record, indent=2))


# --------------------------------------------------------------------------------------------------------------------
# Compression, as a user runs it, and the judgement


def effkit_command() -> list[str]:
    effkit = Path(sys.executable).with_name("effkit")
    return [str(effkit)] if effkit.exists() else [sys.executable, "-m", "effkit"]


def compress(model: Path, data: Path, out: Path, *extra: str) -> tuple[dict | None, float, str]:
    started = time.perf_counter()
    command = [*effkit_command(), "compress", str(model), "--data", str(data), "--out", str(out), "--quiet", *extra]
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    report = out / "report.json"
    error = "" if result.returncode in (0, 3) else f"exit {result.returncode}: {result.stderr.strip()[-400:]}"
    return (json.loads(report.read_text()) if report.exists() else None), wall, error


def fine_tunes(report: dict) -> list[dict]:
    """Every fine-tune a run made, once each: the search's model candidates (kept or not), else the variants' steps."""
    search = report.get("search") or {}
    if search:
        return [c["fine_tune"] for c in search.get("candidates", []) if c.get("fine_tune")]
    found: dict[str, dict] = {}
    for variant in report.get("variants", []):
        for step in variant.get("steps", []):
            if "val_agreement_start" in step and "val_agreement" in step:
                found[json.dumps(step, sort_keys=True)] = step
    return list(found.values())


def judge(report: dict) -> dict:
    variants = {v["name"]: v for v in report["variants"]}
    float32 = variants.get("baseline-tflite-none") or {}
    converter = variants.get("baseline-tflite-dynamic") or {}
    chosen = variants.get(report.get("recommended") or "") or {}
    raw = float32.get("size_bytes")
    gzip = chosen.get("gzip_bytes")
    drop = -(chosen.get("top1_delta_pp") or 0.0) if chosen else None
    ratio = raw / gzip if raw and gzip else None
    converter_within = converter.get("status") == "ok" and -(converter.get("top1_delta_pp") or 0.0) <= MAX_DROP_PP
    # A fine-tune's start: the model it began from (clustering, QAT), or for pruning the model magnitude-pruned at once
    # to the same sparsity. None where a step has no such start (a Keras 3 model pruned natively).
    worse = [
        t
        for t in fine_tunes(report)
        if t["val_agreement_start"] is not None and t["val_agreement"] < t["val_agreement_start"] - 1e-9
    ]
    return {
        "baseline_top1": report["baseline"]["top1"],
        "recommended": chosen.get("name"),
        "gzip_bytes": gzip,
        "float32_raw_bytes": raw,
        "ratio": ratio,
        "drop_pp": drop,
        "converter_dynamic_gzip": converter.get("gzip_bytes") if converter_within else None,
        "fine_tunes": len(fine_tunes(report)),
        "fine_tunes_worse": len(worse),
        "stopped": (report.get("search") or {}).get("stopped"),
        "ok": bool(
            ratio
            and ratio >= MIN_RATIO
            and drop is not None
            and drop <= MAX_DROP_PP
            and not worse
            and (not converter_within or gzip <= converter["gzip_bytes"])
        ),
    }


def pruned50(report: dict | None) -> dict:
    if report is None:
        return {}
    variant = next((v for v in report["variants"] if v["name"] == "pruned50-tflite-none"), None)
    if variant is None:
        return {}
    tune = next(iter(fine_tunes({"variants": [variant]})), {})
    return {
        "status": variant["status"],
        "top1": variant.get("top1"),
        "drop_pp": -(variant.get("top1_delta_pp") or 0.0),
        "val_agreement": tune.get("val_agreement"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: a temporary one)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--budget", default="4m", help="each search's --budget")
    parser.add_argument("--pretrain", help=argparse.SUPPRESS)  # the child: pretrain one model into --out
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="effkit-foreign-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.pretrain:
        pretrain(args.pretrain, out)
        return 0
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")

    from effkit.cpu import fingerprint

    cpu = fingerprint()
    print(f"CPU: {cpu.describe()}")
    results, all_ok = {}, True
    for name in names:
        model = out / FILES[name]
        if not model.exists():
            started = time.perf_counter()
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
            done = subprocess.run(
                [sys.executable, __file__, "--pretrain", name, "--out", str(out)],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                print(f"{name}: pretraining failed ({done.returncode}): {done.stderr.strip()[-600:]}")
                all_ok = False
                continue
            print(f"{name}: pretrained in {time.perf_counter() - started:.0f} s")
        entry = {"pretrain": json.loads((out / f"{name}-pretrain.json").read_text())}
        for labels in ("labels", "inputs"):
            report, wall, error = compress(
                model, out / f"{name}-{labels}.npz", out / f"{name}-search-{labels}", "--search", "size", "--budget",
                args.budget,
            )  # fmt: skip
            verdict = judge(report) if report else {"ok": False}
            verdict.update(seconds=wall, error=error)
            entry[f"search_{labels}"] = verdict
            all_ok &= verdict["ok"]
            print(f"{name} search ({labels}): {json.dumps(verdict)}")
        for distill in ("distilled", "labels-only"):
            extra = ["--sparsity", "0.5", "--clusters", "", "--quant", "none", "--formats", "tflite"]
            extra += [] if distill == "distilled" else ["--no-distill"]
            report, wall, error = compress(model, out / f"{name}-labels.npz", out / f"{name}-prune-{distill}", *extra)
            entry[f"prune50_{distill}"] = {**pruned50(report), "seconds": wall, "error": error}
            print(f"{name} pruned 50% ({distill}): {json.dumps(entry[f'prune50_{distill}'])}")
        results[name] = entry
    (out / "foreign.json").write_text(json.dumps({"cpu": cpu.to_dict(), "models": results}, indent=2))
    print(table(results, cpu.describe()))
    print(f"wrote {out / 'foreign.json'}")
    return 0 if all_ok else 1


def table(results: dict, cpu: str) -> str:
    def kib(value):
        return f"{value / 1024:.1f}" if value else "-"

    def pp(value):
        return f"{value:+.2f}" if value is not None else "-"

    lines = [
        f"Measured on {cpu}.",
        "",
        "| model | labels | recommended | gzip KiB | x f32 raw | Δ pp | converter dynamic gzip KiB "
        "| fine-tunes (worse) | s | ok |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in results.items():
        for labels in ("labels", "inputs"):
            v = entry.get(f"search_{labels}", {})
            ratio = f"{v['ratio']:.1f}" if v.get("ratio") else "-"
            delta = pp(-v["drop_pp"] if v.get("drop_pp") is not None else None)
            tunes = f"{v.get('fine_tunes', '-')} ({v.get('fine_tunes_worse', '-')})"
            lines.append(
                f"| {name} | {'given' if labels == 'labels' else 'none (own top-1)'} | `{v.get('recommended')}` "
                f"| {kib(v.get('gzip_bytes'))} | {ratio} | {delta} | {kib(v.get('converter_dynamic_gzip'))} "
                f"| {tunes} | {v.get('seconds', 0):.0f} | {'yes' if v.get('ok') else 'NO'} |"
            )
    lines += ["", "| model | pruned 50%, fine-tune | val agreement | test top-1 | Δ pp |", "|---|---|---:|---:|---:|"]
    for name, entry in results.items():
        for distill in ("distilled", "labels-only"):
            p = entry.get(f"prune50_{distill}", {})
            agreement = f"{p['val_agreement']:.2%}" if p.get("val_agreement") is not None else "-"
            top1 = f"{p['top1']:.2%}" if p.get("top1") is not None else "-"
            lines.append(
                f"| {name} | {distill} | {agreement} | {top1} | {pp(-p['drop_pp'] if 'drop_pp' in p else None)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
