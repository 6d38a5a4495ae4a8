"""The private APIs effkit relies on, named: when a TensorFlow, tf_keras, tfmot or Keras upgrade moves one, this
fails first and says which (see effkit/keras_compat/private.py)."""

import importlib

import pytest

from effkit.load.keras_compat import private


def _resolve(dotted: str):
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(dotted)


@pytest.mark.parametrize("name", [n for names in private.PRIVATE_NAMES.values() for n in names])
def test_each_private_name_still_resolves(name):
    assert _resolve(name) is not None


def test_only_keras_compat_private_reaches_private_apis():
    from pathlib import Path

    root = Path(private.__file__).resolve().parents[1]
    markers = ("tf_keras.src", "tensorflow_model_optimization.python", "._set_attr(", "keras.src.")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "private.py" and any(marker in path.read_text() for marker in markers)
    ]
    assert offenders == []


def test_the_guards_work():
    assert private.safe_mode_scope(False) is not None
    assert hasattr(private.prune_registry(), "supports")
    assert callable(private.experimental_cluster_weights())
