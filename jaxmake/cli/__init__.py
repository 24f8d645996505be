"""The `jaxmake` command: train, sample, export, summary, check.

Commands are frozen config classes (`jaxmake.cli._commands`); tyro turns their fields and
docstrings into options and help. A user error (a bad value, an unknown key in a config
file, a mesh that does not fit the devices or the weights) is one line on stderr and exit
status 2, never a traceback.

The command needs the `train` extra (`pip install "jaxmake[train]"`: optax, orbax, tyro,
tqdm, matplotlib, scikit-learn); this module imports none of it, so that without the
extra the command says what to install, in one line and exit status 2, instead of failing
on an import.
"""

import importlib.util
import sys
from collections.abc import Sequence

TRAIN_EXTRA_MODULES: dict[str, str] = {
    "optax": "optax",
    "orbax.checkpoint": "orbax-checkpoint",
    "tyro": "tyro",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
}
"""The modules the command imports from the `train` extra, and the distribution of each."""


def missing_train_extra() -> list[str]:
    """The distributions of the `train` extra whose modules cannot be found, in the extra's order."""
    missing = []
    for module, distribution in TRAIN_EXTRA_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package (`orbax`) is not there either
            found = False
        if not found:
            missing.append(distribution)
    return missing


def main(args: Sequence[str] | None = None) -> int:
    """Run the `jaxmake` command line; returns the exit status."""
    missing = missing_train_extra()
    if missing:
        print(
            f"jaxmake: error: the jaxmake command needs the `train` extra, missing here: {', '.join(missing)};"
            ' install it with: pip install "jaxmake[train]"',
            file=sys.stderr,
        )
        return 2
    from jaxmake.cli._main import main as run

    return run(args)


def entry_point() -> None:
    """The console script: `sys.exit(main())`."""
    sys.exit(main())


__all__ = ["entry_point", "main", "missing_train_extra"]
