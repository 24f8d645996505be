"""The `jaxmake` command line proper, on tyro; `jaxmake.cli` imports it once the `train` extra is there.

Commands are frozen config classes (`jaxmake.cli._commands`); tyro turns their fields and
docstrings into options and help. A user error (a bad value, an unknown key in a config
file, a mesh that does not fit the devices or the weights) is one line on stderr and exit
status 2, never a traceback.
"""

import contextlib
import dataclasses
import io
import re
import sys
from collections.abc import Sequence
from typing import Annotated

import tyro

import jaxmake as jm
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
    """Run the `jaxmake` command line; returns the exit status (`jaxmake.cli.main` checks the extra first)."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            command = tyro.extras.subcommand_cli_from_dict(
                {"train": Train, "sample": Sample, "summary": Summary, "check": Check},
                prog="jaxmake",
                description="jaxmake: configs -> make -> components -> weights -> jit.",
                args=args,
                config=(tyro.conf.OmitSubcommandPrefixes,),
            )
    except SystemExit as exit:
        if exit.code in (0, None):
            raise
        print(f"jaxmake: error: {_one_line(errors.getvalue())}", file=sys.stderr)
        return 2
    try:
        if isinstance(command, Train):
            command.job.run()
        elif isinstance(command, Sample):
            command.run_command()
        else:
            command.run()
    except (CliError, jm.ShardingError) as error:
        print(f"jaxmake: error: {error}", file=sys.stderr)
        return 2
    return 0


def _one_line(box: str) -> str:
    """The message of one of tyro's error boxes, on one line, without tyro's internal names.

    A box is a title, then the message (wrapped over several lines), then rules and help;
    rich draws it with box-drawing characters, or in plain text where it cannot.
    """
    rule = re.compile(r"^[\s│|╭╮╰╯+─-]*$")
    lines = iter("" if rule.match(line) else line.strip().strip("│|").strip() for line in box.splitlines())
    next((line for line in lines if line), "")  # the title: "Value error", "Unrecognized options"
    message: list[str] = []
    for line in lines:
        if line:
            message.append(line)
        elif message:
            break
    return re.sub(r"Error parsing [\w.:-]*__tyro[\w.:-]*: ", "", " ".join(message)).replace("Error parsing ", "")
