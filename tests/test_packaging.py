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
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "effkit").rglob("__init__.py")}
    for name, folder in mapped.items():
        found |= {".".join((name, *init.parent.relative_to(folder).parts)) for init in folder.rglob("__init__.py")}
    assert found == declared


def test_the_installed_console_script_loads_the_cli():
    from importlib.metadata import entry_points

    import effkit.cli

    (script,) = entry_points(group="console_scripts", name="effkit")
    assert script.load() is effkit.cli.run
