"""What a wheel of effkit would hold: every package under effkit/ and models/ is declared in pyproject.toml.

The test environment installs effkit in editable mode, where an undeclared sub-package still imports; a user's
non-editable install would lack it. This catches that before a release does.
"""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    mapped = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "effkit").rglob("__init__.py")
        if "build" not in init.relative_to(ROOT).parts  # what `pip install ./effkit/edge` leaves in the tree
    }
    for name, folder in mapped.items():
        found |= {".".join((name, *init.parent.relative_to(folder).parts)) for init in folder.rglob("__init__.py")}
    assert found == declared


def test_the_installed_console_script_loads_the_cli():
    from importlib.metadata import entry_points

    import effkit.cli

    (script,) = entry_points(group="console_scripts", name="effkit")
    assert script.load() is effkit.cli.run


def test_the_runtime_only_distribution_needs_numpy_and_a_runtime_only():
    """effkit/edge installs on a device on its own: its dependencies, and every import in it, stay that small."""
    import ast

    edge = ROOT / "effkit" / "edge"
    project = tomllib.loads((edge / "pyproject.toml").read_text())["project"]
    names = [dep.split(">")[0].split("<")[0].split("=")[0] for dep in project["dependencies"]]
    extras = [dep.split(">")[0] for deps in project["optional-dependencies"].values() for dep in deps]
    assert names == ["numpy"] and sorted(extras) == ["ai-edge-litert", "onnxruntime"]
    allowed = {"numpy", "ai_edge_litert", "onnxruntime", "__future__"}
    stdlib = set(__import__("sys").stdlib_module_names)
    for source in edge.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue  # relative imports stay inside effkit/edge
            assert all(root in allowed | stdlib for root in roots), f"{source.name} imports {roots}"
