"""The scripts in bench/ stay alive: each answers --help, and every name it imports from effkit exists and is public
(most import inside their functions, which --help never reaches; a refactor that moves a name fails here)."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def _effkit_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from effkit... import name`, anywhere in the file, and (module, "") of each
    `import effkit...`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "effkit":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "effkit"]
    return found


def test_there_are_bench_scripts_and_they_import_effkit():
    assert len(SCRIPTS) >= 10
    assert sum(bool(_effkit_imports(path)) for path in SCRIPTS) >= 8


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_effkit_name_a_bench_script_imports_exists_and_is_public(script):
    missing, private = [], []
    for module_name, name in _effkit_imports(script):
        module = importlib.import_module(module_name)
        if name and not hasattr(module, name):
            try:  # `from effkit import models` names a submodule
                importlib.import_module(f"{module_name}.{name}")
            except ImportError:
                missing.append(f"{module_name}.{name}")
        if name.startswith("_") or any(part.startswith("_") for part in module_name.split(".")):
            private.append(f"{module_name}.{name}")
    assert missing == [], f"{script.name} imports names effkit no longer has"
    assert private == [], f"{script.name} imports private names"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_bench_script_answers_help(script):
    result = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=BENCH, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-800:]
    assert "usage" in result.stdout.lower()


def test_the_import_check_can_fail(tmp_path):
    script = tmp_path / "rotted.py"
    script.write_text("def main():\n    from effkit.pipeline import _input_dtype, compress\n")
    assert _effkit_imports(script) == [("effkit.pipeline", "_input_dtype"), ("effkit.pipeline", "compress")]
    import effkit.pipeline

    assert not hasattr(effkit.pipeline, "_input_dtype") and hasattr(effkit.pipeline, "compress")
