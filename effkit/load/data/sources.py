"""Where datasets come from. Every loader returns a split, validated `Dataset`."""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from ...errors import DataError, InputError
from .dataset import LABELS_FROM_MODEL, Dataset, Labeller, Labels, split

log = logging.getLogger("effkit")

NPZ_REQUIRED = ("x_train", "x_test")
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "imdb")
DERIVED = ("synthetic_text", "digits_multihead")
IMDB_WORDS = 10_000
IMDB_LENGTH = 256
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_SHAPE = re.compile(r"^(\d+)x(\d+)x([13])$")


def load(
    source: str, *, seed: int, val_fraction: float, input_shape: tuple | None, label: Labeller | None = None
) -> Dataset:
    name, _, shape_text = source.partition(":")
    if name in ("digits", "digits_multihead"):
        shape = _parse_shape(shape_text) if shape_text else _image_shape(input_shape)
        return _digits(seed=seed, val_fraction=val_fraction, shape=shape, multihead=name == "digits_multihead")
    if source in KERAS_DATASETS:
        return _keras_dataset(source, seed=seed, val_fraction=val_fraction)
    if source == "synthetic_text":
        length = input_shape[0] if input_shape and len(input_shape) == 1 and input_shape[0] else IMDB_LENGTH
        return _synthetic_text(seed=seed, val_fraction=val_fraction, length=length)
    path = Path(source)
    if path.is_dir():
        return _image_folder(path, seed=seed, val_fraction=val_fraction, shape=_image_shape(input_shape), label=label)
    if path.suffix == ".npz" or path.exists():
        return load_npz(path, seed=seed, val_fraction=val_fraction, label=label)
    known = ", ".join(("digits[:HxWxC]", *KERAS_DATASETS, *DERIVED))
    raise DataError(f"unknown dataset {source!r}; known: {known}, or an .npz file or image folder")


def _parse_shape(text: str) -> tuple[int, int, int]:
    match = _SHAPE.match(text)
    if not match:
        raise DataError(f"dataset shape {text!r} is not HxWxC with C 1 or 3, e.g. 28x28x1")
    return tuple(int(part) for part in match.groups())


def _image_shape(input_shape: tuple | None) -> tuple[int, int, int] | None:
    """A model's (H, W, C) image input, when it has one of known size."""
    if input_shape and len(input_shape) == 3 and all(input_shape) and input_shape[2] in (1, 3):
        return tuple(int(d) for d in input_shape)
    return None


# --------------------------------------------------------------------------------------------------------------------
# The embedded digits, and what is made from them


def _digits(*, seed: int, val_fraction: float, shape: tuple | None, multihead: bool) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., np.newaxis]  # (1797, 8, 8, 1), values 0..16
    y = digits.target.astype(np.int64)
    name = "digits_multihead" if multihead else "digits"
    if shape is not None and shape != (8, 8, 1):
        x = _resized(x, shape) * (255.0 / 16.0)  # an 8-bit image's range, as the stand-in's models expect
        name += ":{}x{}x{}".format(*shape)
        log.info("digits resized to %dx%dx%d for the model's input", *shape)
    labels: Labels = y
    if multihead:
        # A shared base with three kinds of head, as in the lecture's age / sex / race model.
        labels = {"category": y, "flag": (y >= 5).astype(np.int64), "value": (y / 9.0).astype(np.float32)}
    x_train, y_train, x_test, y_test = split(x, labels, fraction=0.2, seed=seed)
    x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test)


def _resized(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    from scipy.ndimage import zoom

    height, width, channels = shape
    factors = (1, height / images.shape[1], width / images.shape[2], 1)
    resized = np.clip(zoom(images, factors, order=1), 0.0, None).astype(np.float32)
    return np.repeat(resized, channels, axis=3) if channels != resized.shape[3] else resized


def _synthetic_text(*, seed: int, val_fraction: float, length: int, samples: int = 2000) -> Dataset:
    """Token sequences whose label is carried by a few sentiment words among neutral ones (IMDB's shape).

    Reviews have random lengths, are padded with 0 at the end, and use tokens 1..9999; tokens 1..100 are
    positive words, 101..200 negative ones, the rest neutral. A third of the sentiment words contradict the label,
    so a good model reaches roughly 90%, not 100%.
    """
    rng = np.random.default_rng(1234)  # the data itself is fixed; `seed` only chooses the splits
    labels = rng.integers(0, 2, samples)
    x = np.zeros((samples, length), dtype=np.int32)
    for i, label in enumerate(labels):
        size = int(rng.integers(length // 4, length))
        tokens = rng.integers(201, IMDB_WORDS, size)
        cues = rng.choice(size, size=max(3, size // 12), replace=False)
        agrees = rng.random(len(cues)) > 0.3
        positive = np.where(agrees, label, 1 - label)
        tokens[cues] = rng.integers(1, 101, len(cues)) + np.where(positive == 1, 0, 100)
        x[i, :size] = tokens
    x_train, y_train, x_test, y_test = split(x, labels.astype(np.int64), fraction=0.2, seed=seed)
    x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    return Dataset("synthetic_text", x_train, y_train, x_val, y_val, x_test, y_test)


# --------------------------------------------------------------------------------------------------------------------
# Keras datasets


def _keras_dataset(name: str, *, seed: int, val_fraction: float) -> Dataset:
    from ...console import silenced
    from .. import keras_compat

    keras = keras_compat.keras3()
    loader = getattr(keras.datasets, name)
    try:
        with silenced():  # "Downloading data from ..." goes to stdout
            if name == "imdb":
                (x_train, y_train), (x_test, y_test) = loader.load_data(num_words=IMDB_WORDS)
            else:
                (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as error:
        raise DataError(
            f"{name} is not in the Keras cache (~/.keras/datasets) and cannot be downloaded here "
            f"({type(error).__name__}); run keras.datasets.{name}.load_data() where there is network and copy "
            "~/.keras/datasets, or pass --data an .npz with x_train, y_train, x_test, y_test"
        ) from None
    if name == "imdb":
        x_train, x_test = _padded(x_train), _padded(x_test)
    else:
        x_train, x_test = _images(x_train), _images(x_test)
    y_train, y_test = np.asarray(y_train).reshape(-1), np.asarray(y_test).reshape(-1)
    x_train, y_train = _checked(x_train, y_train, where=f"{name} train")
    x_test, y_test = _checked(x_test, y_test, where=f"{name} test")
    x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test)


def _images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x[..., np.newaxis] if x.ndim == 3 else x


def _padded(sequences, length: int = IMDB_LENGTH) -> np.ndarray:
    """Lists of token ids -> (n, length) int32, padded with 0 at the end or truncated, as the lecture does."""
    out = np.zeros((len(sequences), length), dtype=np.int32)
    for i, sequence in enumerate(sequences):
        values = np.asarray(sequence, dtype=np.int32)[:length]
        out[i, : len(values)] = values
    return out


# --------------------------------------------------------------------------------------------------------------------
# Files


def load_npz(path: Path, *, seed: int = 0, val_fraction: float = 0.2, label: Labeller | None = None) -> Dataset:
    """An `.npz` with `x_train, y_train, x_test, y_test` (optionally `x_val, y_val`), read without pickle.

    A multi-output dataset replaces each `y_<split>` with one `y_<split>_<head>` array per model output. Inputs
    without any labels (`x_train, x_test`, optionally `x_val`; or one `x`, split 6:2:2) are labelled by `label`.
    """
    if not path.exists():
        raise InputError(f"data file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected an .npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz archive (a zip of arrays saved by numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path} holds a single array, not an .npz archive with x_train, y_train, x_test, y_test"
                )
            arrays = {key: archive[key] for key in archive.files}
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        reason = "it holds pickled objects, which effkit never loads" if "pickle" in str(error) else str(error)
        raise DataError(f"cannot read {path} as .npz: {reason}") from None
    if not any(key.startswith("y_") for key in arrays) and any(key == "x" or key.startswith("x_") for key in arrays):
        return _unlabelled_npz(path, arrays, seed=seed, val_fraction=val_fraction, label=label)
    splits = {}
    for split_name in ("train", "val", "test"):
        labels = _npz_labels(arrays, split_name)
        if f"x_{split_name}" not in arrays and labels is None:
            continue
        if f"x_{split_name}" not in arrays or labels is None:
            if split_name == "val":
                raise DataError(f"{path} has only one of x_val, y_val; give both or neither")
            missing = f"x_{split_name}" if labels is not None else f"y_{split_name}"
            raise DataError(
                f"{path} lacks {missing}; an .npz needs x_train, y_train, x_test, y_test (and may add x_val, "
                f"y_val); it has: {', '.join(sorted(arrays)) or 'nothing'}"
            )
        splits[split_name] = _checked(arrays[f"x_{split_name}"], labels, where=f"{path.name} {split_name}")
    for required in ("train", "test"):
        if required not in splits:
            raise DataError(
                f"{path} lacks x_{required}, y_{required}; an .npz needs x_train, y_train, x_test, y_test "
                f"(and may add x_val, y_val); it has: {', '.join(sorted(arrays)) or 'nothing'}"
            )
    return _from_splits(path.stem, splits, seed=seed, val_fraction=val_fraction)


def _from_splits(
    name: str, splits: dict[str, tuple], *, seed: int, val_fraction: float, labels_from: str = "data"
) -> Dataset:
    """A Dataset from checked (x, y) splits: train and test, and validation held out of train when not given."""
    x_train, y_train = splits["train"]
    if "val" in splits:
        x_val, y_val = splits["val"]
    else:
        x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    x_test, y_test = splits["test"]
    shapes = {x_train.shape[1:], x_val.shape[1:], x_test.shape[1:]}
    if len(shapes) != 1:
        raise DataError(f"{name}: splits have different sample shapes {sorted(shapes)}")
    heads = {tuple(y) if isinstance(y, dict) else None for y in (y_train, y_val, y_test)}
    if len(heads) != 1:
        raise DataError(f"{name}: splits have different label heads")
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, labels_from=labels_from)


def _unlabelled_npz(
    path: Path, arrays: dict[str, np.ndarray], *, seed: int, val_fraction: float, label: Labeller | None
) -> Dataset:
    """Inputs only: `x_train` and `x_test` (and `x_val`), or one `x` split 6:2:2, labelled by the model."""
    inputs = {key: value for key, value in arrays.items() if key == "x" or key.startswith("x_")}
    if set(inputs) == {"x"}:
        x, y = _labelled(_checked_inputs(inputs["x"], where=f"{path.name} x"), label, where=path.name)
        return _split_three(path.stem, x, y, seed=seed)
    known = {"x_train", "x_val", "x_test"}
    if not {"x_train", "x_test"} <= set(inputs) or not set(inputs) <= known:
        raise DataError(
            f"{path} has inputs but no labels; an unlabelled .npz holds x_train and x_test (and may add x_val), or "
            f"one x; it has: {', '.join(sorted(arrays))}"
        )
    splits = {}
    for key in sorted(inputs):
        where = f"{path.name} {key[2:]}"
        splits[key[2:]] = _labelled(_checked_inputs(inputs[key], where=where), label, where=where)
    return _from_splits(path.stem, splits, seed=seed, val_fraction=val_fraction, labels_from=LABELS_FROM_MODEL)


def _labelled(x: np.ndarray, label: Labeller | None, *, where: str) -> tuple[np.ndarray, Labels]:
    """Inputs with the model's own predictions as labels."""
    if label is None:
        raise DataError(
            f"{where} has inputs but no labels; without labels effkit takes a model's own top-1 as the labels, "
            "so give it your model (the reference models are trained on labelled data)"
        )
    return _checked(x, label(x), where=where)


def _split_three(name: str, x: np.ndarray, y: Labels, *, seed: int) -> Dataset:
    """One pool of model-labelled samples split 6:2:2 into train, validation and test."""
    x_rest, y_rest, x_test, y_test = split(x, y, fraction=0.2, seed=seed)
    x_train, y_train, x_val, y_val = split(x_rest, y_rest, fraction=0.25, seed=seed)
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, labels_from=LABELS_FROM_MODEL)


def _npz_labels(arrays: dict[str, np.ndarray], split_name: str) -> Labels | None:
    prefix = f"y_{split_name}_"
    heads = {key[len(prefix) :]: value for key, value in sorted(arrays.items()) if key.startswith(prefix)}
    if f"y_{split_name}" in arrays:
        if heads:
            raise DataError(f"give either y_{split_name} or y_{split_name}_<head> arrays, not both")
        return arrays[f"y_{split_name}"]
    return heads or None


def _image_folder(
    root: Path, *, seed: int, val_fraction: float, shape: tuple | None, label: Labeller | None = None
) -> Dataset:
    """One sub-folder per class (`root/cat/*.png`); or `train/` and `test/` folders laid out that way.

    Without a test folder, the images are split 6:2:2 into train, validation and test. Images are resized to the
    model's input when it is known, else to the first image's size; channels follow the model (or the images).
    Images that lie in the folder itself (or in `train/` and `test/`) with no class sub-folders have no labels:
    they are labelled by `label`, the model's own top-1.
    """
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes and _images_in(root / "train"):
            x_train = _read_unlabelled(root / "train", shape)
            x_test = _read_unlabelled(root / "test", shape or x_train.shape[1:])
            splits = {
                "train": _labelled(x_train, label, where=str(root / "train")),
                "test": _labelled(x_test, label, where=str(root / "test")),
            }
            log.info("image folder %s: %d unlabelled images", root, len(x_train) + len(x_test))
            return _from_splits(root.name, splits, seed=seed, val_fraction=val_fraction, labels_from=LABELS_FROM_MODEL)
        unknown = sorted({p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise DataError(f"{root / 'test'} has classes with no training images: {', '.join(unknown)}")
        x_train, y_train = _read_images(root / "train", classes, shape)
        x_test, y_test = _read_images(root / "test", classes, shape or x_train.shape[1:], every_class=False)
        x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes and _images_in(root):
            x, y = _labelled(_read_unlabelled(root, shape), label, where=str(root))
            log.info("image folder %s: %d unlabelled images", root, len(x))
            return _split_three(root.name, x, y, seed=seed)
        x, y = _read_images(root, classes, shape)
        x_rest, y_rest, x_test, y_test = split(x, y, fraction=0.2, seed=seed)
        x_train, y_train, x_val, y_val = split(x_rest, y_rest, fraction=0.25, seed=seed)  # 6:2:2 overall
    log.info("image folder %s: %d classes (%s)", root, len(classes), ", ".join(classes[:10]))
    return Dataset(root.name, x_train, y_train, x_val, y_val, x_test, y_test)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_unlabelled(folder: Path, shape: tuple | None) -> np.ndarray:
    files = _images_in(folder)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for file in files:
        array, shape = _read_image(file, shape)
        images.append(array)
    return np.stack(images)


def _read_images(
    root: Path, classes: list[str], shape: tuple | None, *, every_class: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images of each class folder, labelled by the class's index; a test folder may lack some classes."""
    if len(classes) < 2:
        raise DataError(f"{root} needs one sub-folder per class (at least two); found {len(classes)}")
    images, labels = [], []
    for index, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files and every_class:
            raise DataError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            array, shape = _read_image(file, shape)
            images.append(array)
            labels.append(index)
    if not images:
        raise DataError(f"{root} holds no images")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _read_image(file: Path, shape: tuple | None) -> tuple[np.ndarray, tuple]:
    """One image as float32 (H, W, C), resized to `shape`; the first image's own size and mode when None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            if shape is None:
                shape = (image.height, image.width, 3 if image.mode in ("RGB", "RGBA", "P") else 1)
            image = image.convert("RGB" if shape[2] == 3 else "L").resize((shape[1], shape[0]))
            array = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read image {file}: {error}") from None
    return array.reshape(shape), tuple(shape)


# --------------------------------------------------------------------------------------------------------------------
# Validation


def _checked(x: np.ndarray, y: Labels, *, where: str) -> tuple[np.ndarray, Labels]:
    """Validate one split: numbers, same length, finite inputs, labels one per sample (class indices or values)."""
    x = _checked_inputs(x, where=where)
    if isinstance(y, dict):
        return x, {head: _head_labels(values, len(x), where=f"{where} {head}") for head, values in y.items()}
    return x, class_indices(_one_per_sample(y, len(x), where=where), where=where)


def _checked_inputs(x: np.ndarray, *, where: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: expected numeric inputs, got {x.dtype}")
    if x.ndim < 2 or 0 in x.shape[1:]:
        raise DataError(f"{where}: x has shape {x.shape}; expected (samples, features...)")
    if len(x) == 0:
        raise DataError(f"{where}: no samples")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: x holds {int((~np.isfinite(x)).sum())} NaN or Inf values")
    return x


def _one_per_sample(y: np.ndarray, samples: int, *, where: str) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: expected numeric labels, got {y.dtype}")
    if y.ndim == 0:
        raise DataError(f"{where}: y is a single value; expected one label per sample")
    if len(y) != samples:
        raise DataError(f"{where}: {samples} inputs but {len(y)} labels")
    return y


def _head_labels(y: np.ndarray, samples: int, *, where: str) -> np.ndarray:
    """A head's labels: class indices (whole numbers, one-hot rows become indices) or regression targets (any
    finite values). Whether whole numbers are classes or targets is the model's to say: ranges are checked later,
    against each head (`check_fits`)."""
    y = _one_per_sample(y, samples, where=where)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{where}: labels hold NaN or Inf values")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and np.isin(y, (0, 1)).all() and np.all(y.sum(axis=1) == 1):
        y = y.argmax(axis=1)
    if y.ndim == 1 and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y.astype(np.float32)


def class_indices(y: np.ndarray, *, where: str) -> np.ndarray:
    """Labels as a 1-D int64 array of class indices; one-hot rows are turned into indices."""
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim != 1:
        raise DataError(f"{where}: labels have shape {y.shape}; expected (samples,) class indices or one-hot rows")
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        raise DataError(f"{where}: labels must be whole class indices, found fractional or non-finite values")
    if y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; labels are class indices 0..N-1")
    return y.astype(np.int64)
