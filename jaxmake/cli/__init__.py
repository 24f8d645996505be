"""The `jaxmake` command: train, sample, summary, check.

Commands are frozen config classes (`jaxmake.cli._commands`); tyro turns their fields and
docstrings into options and help. A user error (a bad value, an unknown key in a config
file) is one line on stderr and exit status 2, never a traceback.
"""

import dataclasses
import sys
from collections.abc import Sequence
from typing import Annotated

import tyro

from jaxmake.cli._commands import Check, Sample, Summary, TrainChars, TrainDigits
from jaxmake.cli._configs import CliError



@dataclasses.dataclass(frozen=True)
class Train:
    """Train a bundled model: `digits` (a ViT on handwritten digits) or `chars` (a GPT on text)."""

    job: (
        Annotated[TrainDigits, tyro.conf.subcommand("digits", prefix_name=False)]
        | Annotated[TrainChars, tyro.conf.subcommand("chars", prefix_name=False)]
    )


def main(args: Sequence[str] | None = None) -> int:
    """Run the `jaxmake` command line; returns the exit status."""
    command = tyro.extras.subcommand_cli_from_dict(
        {"train": Train, "sample": Sample, "summary": Summary, "check": Check},
        prog="jaxmake",
        description="jaxmake: configs -> make -> components -> weights -> jit.",
        args=args,
        config=(tyro.conf.OmitSubcommandPrefixes,),
    )
    try:
        if isinstance(command, Train):
            command.job.run()
        elif isinstance(command, Sample):
            command.run_command()
        else:
            command.run()
    except CliError as error:
        print(f"jaxmake: error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["entry_point", "main"]


def entry_point() -> None:
    """The console script: `sys.exit(main())`."""
    sys.exit(main())
