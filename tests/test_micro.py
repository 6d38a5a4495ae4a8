"""TFLite Micro: checks, arena, predictions against LiteRT, C sources that compile, LUT compression; all real."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from effkit.config import Quant
from effkit.console import silenced
from effkit.errors import ConfigError, InputError, StageError
from effkit.ship import micro

from .conftest import FAST_PRUNE


@pytest.fixture(scope="module")
def tflite_files(tiny_model, digits, tmp_path_factory) -> dict[str, Path]:
    """The tiny model as float32, dynamic-range and full-integer int8 .tflite files."""
    from effkit.export.tflite import export_tflite
    from effkit.quantize.tflite_converter import quantize_tflite

    folder = tmp_path_factory.mktemp("micro")
    files = {"float32": export_tflite(tiny_model, folder / "float32.tflite")}
    for mode in (Quant.DYNAMIC, Quant.INT8):
        files[str(mode)] = quantize_tflite(
            tiny_model, folder / f"{mode}.tflite", quantization=mode, calibration=digits.x_train[:100]
        )
    return files


def test_full_integer_int8_runs_with_a_measured_arena(tflite_files):
    result = micro.check(tflite_files["int8"])
    assert result.runs and result.reason is None
    assert result.full_integer
    assert result.ops == ("AddConv2D", "AddFullyConnected", "AddMaxPool2D", "AddReshape", "AddSoftmax")
    assert micro.MicroCheck.from_dict(result.to_dict()) == result


def _runs_in(path: Path, arena_size: int) -> bool:
    """Whether TFLite Micro's own interpreter loads the file and runs it once in an arena of this many bytes."""
    from tflite_micro import runtime

    try:
        with silenced():
            interpreter = runtime.Interpreter.from_file(str(path), arena_size=arena_size)
            detail = interpreter.get_input_details(0)
            interpreter.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), 0)
            interpreter.invoke()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("name", ["int8", "float32"])
def test_the_measured_arena_is_exactly_what_tflite_micro_needs(tflite_files, name):
    """The arena the check reports runs the file, and 16 bytes less does not: TFLite Micro aligns its buffers to 16
    bytes, so the smallest arena that works is within one alignment step of the figure (checked in TFLite Micro's
    own interpreter, apart from how effkit reads the figure)."""
    arena = micro.check(tflite_files[name]).arena_bytes
    assert _runs_in(tflite_files[name], arena)
    assert not _runs_in(tflite_files[name], arena - 16)


def test_dynamic_range_is_refused_as_hybrid(tflite_files):
    result = micro.check(tflite_files["dynamic"])
    assert not result.runs and not result.full_integer and result.arena_bytes is None
    assert result.reason.startswith(micro.HYBRID_REASON) and "\n" not in result.reason
    # The interpreter refuses it too: the static check only says why earlier and more clearly.
    with pytest.raises(StageError, match=r"Hybrid|not supported"):
        micro.measure_arena(tflite_files["dynamic"])


def test_float32_runs_but_is_not_full_integer(tflite_files):
    float32, int8 = micro.check(tflite_files["float32"]), micro.check(tflite_files["int8"])
    assert float32.runs and not float32.full_integer
    assert float32.arena_bytes > int8.arena_bytes  # float activations take four bytes each


def test_the_arena_with_margin_is_enough_and_much_less_is_not(tflite_files):
    from tflite_micro import runtime

    measured = micro.check(tflite_files["int8"]).arena_bytes
    reserved = micro.arena_with_margin(measured)
    assert reserved == math.ceil(measured * 1.25 / 16) * 16  # the README's 1.25 margin, TFLite Micro's alignment
    from effkit.ship.micro import interpreter as micro_interpreter

    interpreter = micro_interpreter._interpreter(tflite_files["int8"], reserved)
    micro_interpreter._invoke_on_zeros(interpreter, 1)
    assert np.asarray(interpreter.get_output(0)).shape == (1, 10)
    with silenced(), pytest.raises(RuntimeError):
        runtime.Interpreter.from_file(str(tflite_files["int8"]), arena_size=measured // 2)


def test_micro_predict_agrees_with_litert_on_the_test_split(tflite_files, digits):
    from effkit.runtime.litert import LiteRTRunner

    for name in ("int8", "float32"):
        on_micro = micro.micro_predict(tflite_files[name], digits.x_test)
        on_litert = LiteRTRunner(tflite_files[name]).predict(digits.x_test)[0]
        assert on_micro.shape == on_litert.shape == (len(digits.x_test), 10)
        agreement = float(np.mean(on_micro.argmax(1) == on_litert.argmax(1)))
        assert agreement >= 0.99, (name, agreement)
        assert float(np.mean(on_micro.argmax(1) == digits.y_test)) > 0.85


def _compilers() -> list[list[str]]:
    found = []
    if shutil.which("cc"):
        found.append(["cc", "-std=c11", "-pedantic"])
    if shutil.which("c++"):
        found.append(["c++", "-std=c++17", "-x", "c++"])
    return found


@pytest.mark.skipif(not _compilers(), reason="no C or C++ compiler on this machine")
def test_c_sources_compile_with_warnings_as_errors(tflite_files, tmp_path):
    path = tflite_files["int8"]
    result = micro.check(path)
    input_quant, output_quant = micro.quantization_of(path)
    labels = ['zero "0"', "back\\slash", "ünïcödé ✓", "what??!", *map(str, range(4, 10))]
    model = path.read_bytes()
    header, source = micro.c_sources(
        model,
        symbol="digits_cnn",
        input_quant=input_quant,
        output_quant=output_quant,
        labels=labels,
        arena_bytes=micro.arena_with_margin(result.arena_bytes),
        ops=result.ops,
    )
    (tmp_path / "digits_cnn_model_data.h").write_text(header)
    (tmp_path / "digits_cnn_model_data.c").write_text(source)
    assert "alignas(16) const unsigned char g_digits_cnn_model_data[]" in source
    assert f"const unsigned int g_digits_cnn_model_data_len = {len(model)};" in source
    assert "tflite::MicroMutableOpResolver<5> resolver;" in header and "resolver.AddConv2D();" in header
    assert f"kDigitsCnnTensorArenaSize = {micro.arena_with_margin(result.arena_bytes)}" in header
    # A program that includes the header checks the constants at run time against what Python knows.
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "digits_cnn_model_data.h"\n'
        "int main(void) {\n"
        '  printf("%u %u %d %.9g %d\\n", g_digits_cnn_model_data_len, g_digits_cnn_label_count,\n'
        "         (int)kDigitsCnnTensorArenaSize, (double)g_digits_cnn_input_scale, g_digits_cnn_input_zero_point);\n"
        "  for (unsigned i = 0; g_digits_cnn_labels[i]; ++i) puts(g_digits_cnn_labels[i]);\n"
        "  unsigned sum = 0;\n"
        "  for (unsigned i = 0; i < g_digits_cnn_model_data_len; ++i) sum += g_digits_cnn_model_data[i];\n"
        '  printf("%u %d\\n", sum, (int)(((unsigned long)g_digits_cnn_model_data) % 16));\n'
        "  return 0;\n}\n"
    )
    for compiler in _compilers():
        for unit in ("digits_cnn_model_data.c", "main.c"):
            done = subprocess.run(
                [*compiler, "-c", "-Wall", "-Wextra", "-Werror", unit, "-o", f"{unit}.{compiler[0]}.o"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, (compiler, unit, done.stderr)
    if shutil.which("cc"):
        linked = subprocess.run(
            ["cc", "digits_cnn_model_data.c.cc.o", "main.c.cc.o", "-o", "main"], cwd=tmp_path, capture_output=True
        )
        assert linked.returncode == 0, linked.stderr
        printed = subprocess.run([str(tmp_path / "main")], capture_output=True).stdout.decode("utf-8").splitlines()
        length, count, arena, scale, zero = printed[0].split()
        assert (int(length), int(count), int(arena)) == (len(model), 10, micro.arena_with_margin(result.arena_bytes))
        assert np.float32(float(scale)) == np.float32(input_quant[0]) and int(zero) == input_quant[1]
        assert printed[1:11] == labels
        assert printed[11] == f"{sum(model)} 0"


def test_c_sources_refuse_a_symbol_that_is_not_a_c_identifier():
    with pytest.raises(ConfigError, match="C identifier"):
        micro.c_sources(
            b"\0", symbol="digits-cnn", input_quant=None, output_quant=None, labels=None, arena_bytes=16, ops=()
        )


def test_check_refuses_a_file_that_is_not_tflite(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InputError, match=r"bad\.tflite"):
        micro.check(bad)


@pytest.fixture(scope="module")
def clustered_int8(tiny_model, digits, tiny_info, tmp_path_factory) -> Path:
    """The tiny model clustered to 16 values per kernel (no fine-tune), as full-integer int8."""
    from effkit.quantize.tflite_converter import quantize_tflite
    from effkit.techniques.cluster import cluster, distinct_values

    result = cluster(tiny_model, digits, info=tiny_info, clusters=16, config=FAST_PRUNE, epochs=0)
    path = tmp_path_factory.mktemp("lut") / "c16-int8.tflite"
    quantize_tflite(result.model, path, quantization=Quant.INT8, calibration=digits.x_train[:100])
    assert max(distinct_values(path).values()) <= 16
    return path


def test_lut_compression_saves_flash_and_still_runs(clustered_int8, digits, tmp_path):
    from effkit.runtime.litert import LiteRTRunner

    out = tmp_path / "c16-lut.tflite"
    result = micro.lut_compress(clustered_int8, out)
    assert result is not None and Path(result["path"]) == out
    assert result["flash_bytes"] == out.stat().st_size < clustered_int8.stat().st_size == result["raw_bytes"]
    assert result["index_bits"] == 4 and result["tensors"]
    assert result["runs"], result["reason"]
    # Decoded weights live in the arena: the flash saving is paid for in RAM, and the report says how much.
    assert result["arena_bytes"] > micro.check(clustered_int8).arena_bytes
    assert "AddDecode" in micro.check(out).ops
    decoded = micro.micro_predict(out, digits.x_test)
    reference = LiteRTRunner(clustered_int8).predict(digits.x_test)[0]
    assert float(np.mean(decoded.argmax(1) == reference.argmax(1))) >= 0.99


def test_lut_compression_leaves_an_unclustered_model_alone(tflite_files, tmp_path):
    assert micro.lut_compress(tflite_files["int8"], tmp_path / "x.tflite") is None
    assert not (tmp_path / "x.tflite").exists()


def test_importing_micro_loads_neither_tensorflow_nor_tflite_micro():
    import sys

    code = "import sys, effkit.ship.micro; print(any(m in sys.modules for m in ('tensorflow', 'tflite_micro')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
