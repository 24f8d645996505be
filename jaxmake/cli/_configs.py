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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

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
    """The library config class called `name`, in any case (`vit` is `Vit`)."""
    cls = _MODELS_BY_FOLDED_NAME.get(name.casefold())
    if cls is None:
        raise CliError(f"unknown model {jm.value_repr(name)}; the library has: {', '.join(MODELS)}")
    return cls


_MODELS_BY_FOLDED_NAME = {name.casefold(): cls for name, cls in MODELS.items()}


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


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file read (1 MiB); a config holds a few fields, a run's `config.json` a few KiB."""


def read_file(path: Path) -> dict[str, Any]:
    """The table of a TOML (`.toml`) or JSON (any other suffix) file of at most `MAX_CONFIG_BYTES`.

    Raises:
        CliError: the file cannot be read, is too large, is not UTF-8, does not parse
            (integers of more than 4,300 digits and nesting deeper than the parser's
            recursion limit included), or is not a table.
    """
    try:
        with path.open("rb") as file:
            content = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise CliError(f"{path}: a config file is at most {MAX_CONFIG_BYTES:,} bytes; this one is larger")
    kind: Literal["TOML", "JSON"] = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        data = parse_value(content.decode("utf-8"), kind)
    except UnicodeDecodeError as error:
        raise CliError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except ValueError as error:
        raise CliError(f"{path}: not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a table at the top level")
    return data


def parse_value(text: str, kind: Literal["TOML", "JSON"]) -> Any:
    """`text` parsed as TOML or JSON.

    Raises:
        ValueError: `text` does not parse: a syntax error, an integer of more than 4,300
            digits, or nesting too deep for the parser.
    """
    try:
        return tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def load_model_config(
    path: Path, allowed: frozenset[str] = frozenset()
) -> tuple[type[jm.Config], jm.Config, dict[str, Any]]:
    """Read a config file: its model class, the validated config, and its other tables.

    A training run's `config.json` works too: its `metadata` table names the model, and
    its `train` table (the `TrainConfig`) comes back among the other tables.

    Args:
        path: the file.
        allowed: top-level keys besides `model` and `config` that the caller reads.

    Raises:
        CliError: unreadable file, unknown model or key, or an invalid config.
    """
    data = read_file(path)
    if "model" not in data and isinstance(data.get("metadata"), dict):  # a run's config.json
        data = {**data["metadata"], **({"train": data["train"]} if "train" in data else {})}
    unknown = sorted(set(data) - {"model", "config"} - allowed)
    if unknown:
        expected = ", ".join(map(repr, ["model", "config", *sorted(allowed)]))
        raise CliError(f"{path}: unknown key {', '.join(map(repr, unknown))}; expected {expected}")
    if "model" not in data:
        raise CliError(f"{path}: missing the key 'model' (one of: {', '.join(MODELS)})")
    if not isinstance(data["model"], str):
        raise CliError(f"{path}: 'model' must be a string (one of: {', '.join(MODELS)})")
    cls = model_class(data["model"])
    fields = data.get("config", {})
    if not isinstance(fields, dict):
        raise CliError(f"{path}: 'config' must be a table of field values")
    extra = {key: value for key, value in data.items() if key not in ("model", "config")}
    return cls, build_config(cls, fields, str(path)), extra


def train_table(path: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A config file's `train` table (`TrainConfig` fields), from the other tables `load_model_config` returns.

    Raises:
        CliError: `train` is not a table.
    """
    train = extra.get("train", {})
    if not isinstance(train, dict):
        raise CliError(f"{path}: 'train' must be a table of training options")
    return dict(train)


def file_batch_size(path: Path, train: Mapping[str, Any]) -> int | None:
    """The `batch_size` of a config file's `train` table, or `None` if it gives none.

    Raises:
        CliError: it is not an integer >= 1.
    """
    batch_size = train.get("batch_size")
    if batch_size is not None and (type(batch_size) is not int or batch_size < 1):  # a bool is no batch size
        raise CliError(f"{path}: train.batch_size must be an integer >= 1, got {jm.value_repr(batch_size)}")
    return batch_size


def parse_set(items: Sequence[str], flag: str) -> dict[str, Any]:
    """`FIELD=VALUE` items as a dict, each VALUE read as JSON if it parses (`3`, `[4, 4]`), else as a string."""
    fields: dict[str, Any] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise CliError(f"{flag} takes FIELD=VALUE, got {item!r}")
        fields[name] = json_or_string(value)
    return fields


def json_or_string(value: str) -> Any:
    """`value` as JSON (`3`, `[4, 4]`, `true`) if it parses, else the string itself."""
    try:
        return parse_value(value, "JSON")
    except ValueError:
        return value


def config_dict(config: jm.Config) -> dict[str, Any]:
    """The fields of a config as JSON-ready values (tuples become lists)."""
    as_json: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return as_json


def user_error_line(error: BaseException) -> str:
    """One line for an error the user can act on: jaxmake's own message, or what the system refused.

    A multi-line message (a `ShapeError`, a `WeightsError`'s list) is joined with `; `.
    """
    if isinstance(error, OSError) and not isinstance(error, jm.JaxMakeError) and error.strerror:
        where = f" ({error.filename})" if error.filename is not None else ""
        return f"{error.strerror}{where}"
    if isinstance(error, MemoryError):
        return f"out of memory{': ' if str(error) else ''}{error}; try smaller sizes (--batch-size, the model's fields)"
    return joined_lines(str(error)) or type(error).__name__


def joined_lines(text: str) -> str:
    """The non-blank lines of `text` on one line: joined by `; `, or by a space after a colon."""
    pieces: list[str] = []
    for line in (line.strip() for line in text.splitlines()):
        if line:
            pieces += [line, " " if line.endswith(":") else "; "]
    return "".join(pieces[:-1])
