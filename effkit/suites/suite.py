"""A suite: a TOML file of the compress settings its models share, the gate's thresholds, and the models, each a
reference classifier from models/ or a model file, with its data (see bench/suites/)."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import CompressConfig
from ..errors import ConfigError, InputError, first_line
from .gate import Thresholds


@dataclass(frozen=True)
class SuiteModel:
    """One entry of a suite: a reference model (trained from models/) or a model file, and its data."""

    name: str
    data: str
    reference: str | None = None
    path: str | None = None
    epochs: int | None = None  # training epochs for a reference model (each phase); None: its training plan's
    compress: dict[str, Any] = field(default_factory=dict)  # overrides of the suite's [compress] settings


@dataclass(frozen=True)
class Suite:
    name: str
    models: tuple[SuiteModel, ...]
    compress: dict[str, Any]
    thresholds: Thresholds
    seed: int = 0
    description: str = ""
    path: Path | None = None

    def config_for(self, model: SuiteModel) -> CompressConfig:
        merged = _merge(self.compress, model.compress)
        merged.setdefault("seed", self.seed)
        try:
            config = CompressConfig.from_dict(merged)
        except (TypeError, ValueError, AttributeError) as error:
            raise ConfigError(
                f"suite {self.name}: bad [compress] settings for {model.name}: {first_line(error)}"
            ) from None
        config.validate()
        return config


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file.

    Raises:
        InputError: the file is missing or not TOML.
        ConfigError: unknown keys, unknown reference models, or settings compress would refuse.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"suite not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid TOML: {first_line(error)}") from None
    _known(data, {"name", "description", "seed", "compress", "thresholds", "models"}, where=str(path))
    models = []
    for index, entry in enumerate(data.get("models", ())):
        where = f"{path} models[{index}]"
        _known(entry, {f.name for f in fields(SuiteModel)}, where=where)
        if bool(entry.get("reference")) == bool(entry.get("path")):
            raise ConfigError(f"{where}: give exactly one of reference (a model from models/) or path")
        if entry.get("reference"):
            from .. import models as reference_models

            reference_models.get(entry["reference"])  # fails with the list of known names
        name = str(entry.get("name") or entry.get("reference") or Path(entry["path"]).stem)
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ConfigError(f"{where}: model name {name!r} must be a plain folder name (it names the output folder)")
        default_data = "digits" if entry.get("path") else _reference_data(entry["reference"])
        models.append(SuiteModel(**{**entry, "name": name, "data": entry.get("data", default_data)}))
    if not models:
        raise ConfigError(f"{path} lists no [[models]]")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: model names must be unique, got {names}")
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict) or not isinstance(data.get("compress", {}), dict):
        raise ConfigError(f"{path}: [thresholds] and [compress] must be tables")
    _known(thresholds, {f.name for f in fields(Thresholds)}, where=f"{path} [thresholds]")
    try:
        suite = Suite(
            name=str(data.get("name", path.stem)),
            description=str(data.get("description", "")),
            seed=int(data.get("seed", 0)),
            compress=data.get("compress", {}),
            thresholds=Thresholds(**thresholds),
            models=tuple(models),
            path=path,
        )
        for model in suite.models:  # refuse bad settings now, not after an hour of benchmarking
            suite.config_for(model)
    except (TypeError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path}: {first_line(error)}") from None
    return suite


def _reference_data(reference: str) -> str:
    from .. import models as reference_models

    return reference_models.get(reference).OFFLINE_DATA


def _known(data: dict, known: set[str], *, where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged
