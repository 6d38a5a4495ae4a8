"""effkit.edge: load and verify a bundle made by `effkit bundle`, with numpy and a runtime only (no TensorFlow).

    from effkit.edge import load
    clf = load("dist/digits")      # checks the artifact's sha256
    clf.predict(x)                 # float outputs; inputs (de)quantized as effkit measured them
    clf.classify(x, top=3)         # [(label, probability), ...]
    clf.verify().ok                # the golden inputs through this device's runtime

Installs on its own from this folder (`pip install "./effkit/edge[litert,onnx]"`: numpy plus ai-edge-litert and/or
onnxruntime), or as part of effkit. It imports nothing else of effkit.
"""

from __future__ import annotations

from .manifest import GOLDEN, MANIFEST, SCHEMA, SCHEMA_VERSION, BundleError, read_manifest, sha256_file
from .model import EdgeModel, load, verify
from .verify import Verdict

__all__ = [
    "GOLDEN",
    "MANIFEST",
    "SCHEMA",
    "SCHEMA_VERSION",
    "BundleError",
    "EdgeModel",
    "Verdict",
    "load",
    "read_manifest",
    "sha256_file",
    "verify",
]
