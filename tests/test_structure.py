"""The house's shape, read from the code's own imports: no import circle anywhere in effkit (lazy imports inside
functions count), no private name imported across packages, and the stages in folders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "effkit"


def _module_files() -> dict[str, Path]:
    """Every effkit module by its dotted name; models/ installs as effkit.models."""
    modules = {}
    for folder, prefix in ((PACKAGE, ("effkit",)), (ROOT / "models", ("effkit", "models"))):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            modules[".".join(prefix + parts)] = path
    return modules


MODULES = _module_files()


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(module imported, name taken or '', line) for every import of an effkit module in the file, wherever it
    stands (module level or inside a function), except under `if TYPE_CHECKING:`, which never runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names if alias.name.startswith("effkit")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("effkit"):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append(
                    (submodule, "", node.lineno) if submodule in MODULES else (target, alias.name, node.lineno)
                )
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _, _ in _imports(name, path) if target in MODULES} for name, path in MODULES.items()
    }


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports itself (Tarjan)."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circle_anywhere_in_effkit():
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_a_circle():
    """The check above can fail: a graph with a loop through three modules and one self-import is caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert _circles(graph) == [["a", "b", "c"], ["d"]]


def _package_of(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _private_imports(files: dict[str, Path]) -> list[str]:
    found = []
    for name, path in files.items():
        for target, taken, line in _imports(name, path):
            leaf = taken or target.rpartition(".")[2]
            private = leaf.startswith("_") and not leaf.startswith("__")
            module_private = any(part.startswith("_") and not part.startswith("__") for part in target.split("."))
            if target not in MODULES or not (private or module_private):
                continue
            importer = _package_of(name) if name in MODULES else "outside"
            if importer != _package_of(target):
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                found.append(f"{shown}:{line} takes {leaf} from {target}")
    return found


def test_no_private_name_is_imported_across_packages():
    """A private name (leading underscore) is its module's own business, or its package's: imported from another
    package (or from bench/), it breaks when its owner changes it, as bench/ort_isa.py once did."""
    scripts = {f"bench.{path.stem}": path for path in (ROOT / "bench").glob("*.py")}
    assert _private_imports({**MODULES, **scripts}) == []


def test_the_private_import_check_can_fail(tmp_path):
    """A script taking a private name from effkit is caught; a public name from the same place is not."""
    script = tmp_path / "script.py"
    script.write_text("from effkit.pipeline import _calibration, compress\nfrom effkit.search.records import since\n")
    assert _private_imports({"bench.script": script}) == ["script.py:1 takes _calibration from effkit.pipeline"]


@pytest.mark.parametrize(
    ("stage", "modules"),
    [
        ("load", {"keras_compat", "data", "classifier"}),
        ("techniques", {"prune", "prune_native", "cluster", "qat", "train"}),
        ("export", {"tflite", "onnx"}),
        ("quantize", {"litert", "onnxruntime", "tflite_converter"}),
        ("runtime", {"measure", "litert", "onnxruntime", "keras"}),
        ("search", {"driver", "records", "judge", "plans", "moves", "artifacts", "sensitivity"}),
        ("report", {"render", "plots", "targets", "results", "recommend", "outdir"}),
        ("ship", {"bundle", "micro"}),
        ("suites", {"suite", "run", "gate", "baselines", "executors", "ray"}),
    ],
)
def test_each_stage_has_its_folder(stage, modules):
    folder = PACKAGE / stage
    present = {path.stem for path in folder.glob("*.py")} | {path.name for path in folder.iterdir() if path.is_dir()}
    assert modules <= present, f"effkit/{stage}/ lacks {sorted(modules - present)}"
