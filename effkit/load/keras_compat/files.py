"""Model files of either Keras generation: which generation saved a file, safe loading, atomic saving.

A Keras 3 model is handed to `bridge` for a tf_keras rebuild that tfmot can prune; when that fails the model is
kept as it is, with the reason (`LoadedModel.bridge_error`).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InputError, ModelError, first_line
from .bridge import bridge_to_tf_keras
from .gate import KERAS_2, KERAS_3, generation_of, keras3, tf_keras

log = logging.getLogger("effkit.keras_compat")

# --------------------------------------------------------------------------------------------------------------------
# Loading and saving


@dataclass(frozen=True)
class LoadedModel:
    """A user's model as loaded (`original`) and as effkit works with it (`model`).

    `model` is tf_keras whenever pruning can use it: a tf_keras file as loaded, or a Keras 3 model rebuilt by the
    bridge. When the bridge cannot rebuild a Keras 3 model, `model` is the original and `bridge_error` says why:
    such a model is still exported and quantized (the converters take Keras 3), only tfmot cannot prune it.
    """

    original: Any
    model: Any
    generation: int  # the Keras generation that saved the file
    path: Path | None
    bridge_error: str | None = None

    @property
    def bridged(self) -> bool:
        return self.original is not self.model


def load_model(path: str | os.PathLike, *, safe_mode: bool = True) -> LoadedModel:
    """Load a `.keras` (Keras 3 or tf_keras), `.h5` or SavedModel folder, and bridge it to tf_keras.

    Args:
        path: the model file or SavedModel folder.
        safe_mode: refuse layers that would run arbitrary code on load (Lambda). Opt out only for trusted files.

    Returns:
        The loaded model; `model` is a tf_keras model unless a Keras 3 model cannot be rebuilt in tf_keras, in which
        case it is the original and `bridge_error` says why. Verify a bridged model with
        `max_output_diff(loaded.original, loaded.model, x)`.

    Raises:
        InputError: the path does not exist or is not readable.
        ModelError: the file is not a Keras model or is corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"model not found: {path}")
    generation = saved_generation(path)
    if safe_mode and _config_has_lambda(path):
        raise ModelError(
            f"{path} contains a Lambda layer, whose code would run on load; refused. "
            "If you trust the file, pass --unsafe-load"
        )
    try:
        if generation == KERAS_3:
            original = _load_keras3(path, safe_mode=safe_mode)
        else:
            original = _load_tf_keras(path, safe_mode=safe_mode)
    except ModelError:
        raise
    except Exception as error:  # Keras raises anything from ValueError to KeyError on a bad file
        raise ModelError(f"cannot load model {path}: {first_line(error)}") from error
    return _bridged(original, generation=generation, path=path)


def adopt(model: Any) -> LoadedModel:
    """A model object handed in from Python: tf_keras as it is, Keras 3 bridged (the caller's model is untouched)."""
    return _bridged(model, generation=generation_of(model), path=None)


def _bridged(original: Any, *, generation: int, path: Path | None) -> LoadedModel:
    """A Keras 3 model is rebuilt in tf_keras when the bridge can; otherwise it is kept, with the reason."""
    if generation != KERAS_3:
        return LoadedModel(original=original, model=original, generation=generation, path=path)
    try:
        model = bridge_to_tf_keras(original)
    except Exception as error:  # one untranslatable layer must cost pruning only, never the whole model
        reason = first_line(error) if isinstance(error, ModelError) else f"{type(error).__name__}: {first_line(error)}"
        log.debug("no tf_keras rebuild of the Keras 3 model", exc_info=error)
        return LoadedModel(original=original, model=original, generation=generation, path=path, bridge_error=reason)
    return LoadedModel(original=original, model=model, generation=generation, path=path)


def saved_generation(path: Path) -> int:
    """Which Keras generation saved a model file, read from the file's own metadata."""
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path} is a folder without saved_model.pb; expected a .keras, .h5 or SavedModel")
        if not (path / "keras_metadata.pb").exists():
            raise ModelError(
                f"{path} is a SavedModel without Keras metadata (an inference-only export); "
                "effkit needs the Keras model: save it with model.save('model.keras')"
            )
        return KERAS_2
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    if not head:
        raise ModelError(f"{path} is empty; expected a Keras model (.keras, .h5 or SavedModel folder)")
    if head.startswith(b"PK"):
        return _zip_generation(path)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _h5_generation(path)
    raise ModelError(f"{path} is not a Keras model file; expected a .keras archive, an .h5 file or a SavedModel folder")


def _zip_generation(path: Path) -> int:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelError(f"{path} is a zip archive but not a Keras model (no config.json inside)")
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            json.loads(archive.read("config.json"))
    except zipfile.BadZipFile:
        raise ModelError(f"{path} is a truncated or corrupt .keras archive") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path} has a corrupt config.json; the file cannot be a working Keras model") from None
    return _major(metadata.get("keras_version"), default=KERAS_3)


def _h5_generation(path: Path) -> int:
    import h5py  # a TensorFlow dependency

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise ModelError(f"{path} is an HDF5 file without a model config (weights only?); expected a model")
            version = handle.attrs.get("keras_version")
    except OSError:
        raise ModelError(f"{path} is a truncated or corrupt HDF5 file") from None
    if isinstance(version, bytes):
        version = version.decode()
    return _major(version, default=KERAS_2)


def _major(version: str | None, *, default: int) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return default


def _config_has_lambda(path: Path) -> bool:
    """Whether the stored model config holds a Lambda layer, read before anything is deserialized.

    Keras' own safe_mode covers .keras files only; .h5 and SavedModel would rebuild (and call) a Lambda's
    stored bytecode while loading, so effkit looks at the raw config of every format first.
    """
    if path.is_dir():
        raw = (path / "keras_metadata.pb").read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("config.json")
    else:
        import h5py

        with h5py.File(path, "r") as handle:
            raw = handle.attrs["model_config"]
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return '"class_name": "Lambda"' in text or '"class_name":"Lambda"' in text


def _load_keras3(path: Path, *, safe_mode: bool):
    return keras3().models.load_model(path, compile=False, safe_mode=safe_mode)


def _load_tf_keras(path: Path, *, safe_mode: bool):
    kwargs = {"compile": False}
    if path.suffix == ".keras":
        kwargs["safe_mode"] = safe_mode
    return tf_keras().models.load_model(path, **kwargs)


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Save a model of either generation in its own `.keras` format (or `.h5` by suffix), without optimizer state.

    A deployment artifact has no use for Adam's moments, which triple a model's file. The optimizer is detached
    while saving (Keras 3's clone_model would copy it) and put back afterwards.
    """
    from ...files import atomic_output

    path = Path(path)
    optimizer = getattr(model, "optimizer", None)
    with atomic_output(path) as temporary:
        # Keras picks the format from the suffix, so the temporary name keeps it.
        staged = temporary.with_name(temporary.name + path.suffix)
        try:
            if optimizer is not None:
                model.optimizer = None
            model.save(staged)
            staged.replace(temporary)
        finally:
            if optimizer is not None:
                model.optimizer = optimizer
            if staged.exists():
                staged.unlink()
    return path
