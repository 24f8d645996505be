"""Library models by name, and config files (TOML or JSON) that name one.

A config file holds the model's name and its fields, plus optional tables of the
command that reads it (a training run writes `train`, `task` and `run` too):

```toml
model = "Vit"

[config]
dim_model = 64
hwc = [8, 8, 1]
```

Configs come from the dataclasses themselves: no `eval`, no pickle.
"""

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jaxmake as jm
from jaxmake import components

MODELS: dict[str, type[jm.Config]] = {
    name: value
    for name, value in sorted(vars(components).items())
    if isinstance(value, type) and issubclass(value, jm.Config) and hasattr(value, "make")
}
"""Every config class of the component library, by class name."""


class CliError(jm.JaxMakeError):
    """A user error on the command line: printed as one line, exit status 2."""


def model_class(name: str) -> type[jm.Config]:
    """The library config class called `name`."""
    if name not in MODELS:
        raise CliError(f"unknown model {name!r}; the library has: {', '.join(MODELS)}")
    return MODELS[name]


C = TypeVar("C", bound=jm.Config)


def build_config(cls: type[C], fields: Mapping[str, Any], where: str) -> C:
    """`cls(**fields)`, with unknown or missing fields and `ConfigError`s as one-line errors."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise CliError(
            f"{where}: `{cls.__name__}` has no field {', '.join(map(repr, unknown))}; its fields: {', '.join(known)}"
        )
    missing = [
        name
        for name, f in known.items()
        if name not in fields and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise CliError(f"{where}: `{cls.__name__}` needs {', '.join(map(repr, missing))}")
    try:
        return cls(**fields)
    except jm.ConfigError as error:
        raise CliError(f"{where}: {error}") from None


def read_file(path: Path) -> dict[str, Any]:
    """The table of a TOML (`.toml`) or JSON (any other suffix) file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise CliError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {error}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a table at the top level")
    return data


def load_model_config(
    path: Path, allowed: frozenset[str] = frozenset()
) -> tuple[type[jm.Config], jm.Config, dict[str, Any]]:
    """Read a config file: its model class, the validated config, and its other tables.

    A training run's `config.json` works too: its `metadata` table names the model.

    Args:
        path: the file.
        allowed: top-level keys besides `model` and `config` that the caller reads.

    Raises:
        CliError: unreadable file, unknown model or key, or an invalid config.
    """
    data = read_file(path)
    if "model" not in data and isinstance(data.get("metadata"), dict):  # a run's config.json
        data = data["metadata"]
    unknown = sorted(set(data) - {"model", "config"} - allowed)
    if unknown:
        expected = ", ".join(map(repr, ["model", "config", *sorted(allowed)]))
        raise CliError(f"{path}: unknown key {', '.join(map(repr, unknown))}; expected {expected}")
    if "model" not in data:
        raise CliError(f"{path}: missing the key 'model' (one of: {', '.join(MODELS)})")
    cls = model_class(str(data["model"]))
    fields = data.get("config", {})
    if not isinstance(fields, dict):
        raise CliError(f"{path}: 'config' must be a table of field values")
    extra = {key: value for key, value in data.items() if key not in ("model", "config")}
    return cls, build_config(cls, fields, str(path)), extra


def config_dict(config: jm.Config) -> dict[str, Any]:
    """The fields of a config as JSON-ready values (tuples become lists)."""
    as_json: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return as_json
