"""The C11 header and source a TFLite Micro firmware build compiles: the model's bytes, its arena, ops and labels."""

from __future__ import annotations

import re

from ...errors import ConfigError


def c_sources(
    model: bytes,
    *,
    symbol: str,
    input_quant: tuple[float, int] | None,
    output_quant: tuple[float, int] | None,
    labels: list[str] | None,
    arena_bytes: int,
    ops: tuple[str, ...],
) -> tuple[str, str]:
    """A C11 header and source that hold the model for a TFLite Micro firmware build.

    C, not C++: every microcontroller toolchain compiles it, and the header's `extern "C"` lets TFLite Micro's C++
    application include it. (A `const` at file scope has external linkage in C, internal in C++.) The source
    compiles with `cc -std=c11 -c -Wall -Wextra -Werror -pedantic`.

    Args:
        model: the .tflite bytes.
        symbol: a C identifier; the data is `g_<symbol>_model_data`.
        input_quant, output_quant: (scale, zero point) of the input and output tensors, None when float (written
            as scale 0, TFLite's "not quantized").
        labels: class names, in output order; None for none.
        arena_bytes: the tensor arena to reserve (use `arena_with_margin` of the measured one).
        ops: the MicroMutableOpResolver methods the model needs (`MicroCheck.ops`).

    Returns:
        (header text, source text); the source includes the header as `<symbol>_model_data.h`.

    Raises:
        ConfigError: `symbol` is not a C identifier, or `arena_bytes` is not positive.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol or ""):
        raise ConfigError(
            f"C symbol {symbol!r} is not a C identifier (letters, digits, '_'; not starting with a digit)"
        )
    if arena_bytes <= 0:
        raise ConfigError(f"arena size must be positive, got {arena_bytes}")
    labels = list(labels or [])
    camel = "".join(part[:1].upper() + part[1:] for part in symbol.split("_") if part) or "Model"
    guard = f"EFFKIT_{symbol.upper()}_MODEL_DATA_H_"
    prefix = f"g_{symbol}"
    resolver = [f"//   tflite::MicroMutableOpResolver<{len(ops)}> resolver;"]
    resolver += [f"//   resolver.{op}();" for op in ops]
    add_ops = " ".join(f"(resolver).{op}();" for op in ops)
    header = "\n".join(
        [
            f"// The {symbol} model for TFLite Micro, written by effkit. Do not edit.",
            "//",
            f"// Its ops ({len(ops)}), registered with:",
            *resolver,
            f"// or {symbol.upper()}_ADD_OPS(resolver). Reserve k{camel}TensorArenaSize bytes of tensor arena,",
            "// aligned to 16: the arena TFLite Micro's interpreter measured, with effkit's margin.",
            "// A scale of 0 means the tensor is float, not quantized: real = scale * (q - zero_point).",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            "enum {",
            f"  k{camel}TensorArenaSize = {int(arena_bytes)},",
            f"  k{camel}OpCount = {len(ops)},",
            f"  k{camel}LabelCount = {len(labels)}",
            "};",
            "",
            f"#define {symbol.upper()}_ADD_OPS(resolver) \\",
            f"  do {{ {add_ops} }} while (0)",
            "",
            f"extern const unsigned char {prefix}_model_data[];",
            f"extern const unsigned int {prefix}_model_data_len;",
            f"extern const float {prefix}_input_scale;",
            f"extern const int {prefix}_input_zero_point;",
            f"extern const float {prefix}_output_scale;",
            f"extern const int {prefix}_output_zero_point;",
            f"extern const char *const {prefix}_labels[];  // k{camel}LabelCount names, then NULL",
            f"extern const unsigned int {prefix}_label_count;",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )
    in_scale, in_zero = input_quant or (0.0, 0)
    out_scale, out_zero = output_quant or (0.0, 0)
    data_lines = [
        "  " + " ".join(f"0x{byte:02x}," for byte in model[start : start + 12]) for start in range(0, len(model), 12)
    ]
    source = "\n".join(
        [
            f"// The {symbol} model for TFLite Micro, written by effkit. Do not edit.",
            f'#include "{symbol}_model_data.h"',
            "",
            "#include <stdalign.h>",
            "#include <stddef.h>",
            "",
            f"alignas(16) const unsigned char {prefix}_model_data[] = {{",
            *data_lines,
            "};",
            f"const unsigned int {prefix}_model_data_len = {len(model)};",
            "",
            f"const float {prefix}_input_scale = {_c_float(in_scale)};",
            f"const int {prefix}_input_zero_point = {int(in_zero)};",
            f"const float {prefix}_output_scale = {_c_float(out_scale)};",
            f"const int {prefix}_output_zero_point = {int(out_zero)};",
            "",
            f"const char *const {prefix}_labels[] = {{",
            *(f"  {_c_string(label)}," for label in labels),
            "  NULL,",
            "};",
            f"const unsigned int {prefix}_label_count = {len(labels)};",
            "",
        ]
    )
    return header, source


def _c_float(value: float) -> str:
    """A float literal that reads back to the same float32 (9 significant digits)."""
    return f"{float(value):.9e}f"


def _c_string(text: str) -> str:
    """A C string literal of `text` in UTF-8: quotes, backslashes, '?' (trigraphs) and every byte outside
    printable ASCII escaped in octal, which never runs into the next character as hex escapes can."""
    out = []
    for byte in str(text).encode("utf-8"):
        char = chr(byte)
        if char in '"\\?':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'
