"""TFLite Micro: whether a .tflite runs on a microcontroller, how much tensor arena it needs, and its C build.

Everything here is measured with TFLite Micro's own Python interpreter (the `tflite-micro` package), never assumed:
`check` reads the flatbuffer op by op, then loads the file in that interpreter, invokes it once and reads the arena
the interpreter's recording allocator used. `micro_predict` runs a batch through it, `c_sources` writes the
`alignas(16) const unsigned char g_<name>_model_data[]` source and header a firmware build compiles, and
`lut_compress` turns clustered weights into TFLite Micro's look-up-table encoding, which only TFLite Micro reads.

The arena figure is the reference kernels' on a 64-bit host. Optimized kernels (CMSIS-NN, ESP-NN) may ask for
scratch buffers of their own, and a 32-bit target's pointers are smaller: `arena_with_margin` adds room for the
first. Nothing in this figure depends on the host CPU's speed or instruction set.

Three parts: `interpreter` (check, arena, predictions), `lut` (LUT compression) and `csource` (the C build).
tflite_micro and numpy are imported inside the functions; importing this package loads neither TensorFlow nor them.
"""

from __future__ import annotations

from .csource import c_sources
from .interpreter import (
    ARENA_MARGIN,
    HYBRID_REASON,
    MicroCheck,
    arena_with_margin,
    check,
    measure_arena,
    micro_predict,
    quantization_of,
)
from .lut import lut_compress

__all__ = [
    "ARENA_MARGIN",
    "HYBRID_REASON",
    "MicroCheck",
    "arena_with_margin",
    "c_sources",
    "check",
    "lut_compress",
    "measure_arena",
    "micro_predict",
    "quantization_of",
]
