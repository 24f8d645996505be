"""The `jaxmake` command line proper, on tyro; `jaxmake.cli` imports it once the `train` extra is there.

Commands are frozen config classes (`jaxmake.cli._commands`, and `_plan_command`); tyro turns their fields and
docstrings into options and help. A user error (a bad value, an unknown key in a config
file, a mesh that does not fit the devices or the weights) is one line on stderr and exit
status 2, never a traceback: every `JaxMakeError`, and what the system refuses (`OSError`:
a missing file, a full disk; `MemoryError`). Ctrl-C ends with exit status 130. Anything
else is a bug: its traceback is shown, with a line saying so, and the exit status is 1.
"""

import contextlib
import dataclasses
import io
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import jax
import tyro

import jaxmake as jm
from jaxmake.cli._commands import Check, Export, Sample, Summary, TrainChars, TrainDigits
from jaxmake.cli._configs import joined_lines, user_error_line
from jaxmake.cli._plan_command import Plan


@dataclasses.dataclass(frozen=True)
class Train:
    """Train a bundled model: `digits` (a ViT or a ResNet on handwritten digits) or `chars` (a GPT on text)."""

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
                {
                    "train": Train,
                    "plan": Plan,
                    "sample": Sample,
                    "export": Export,
                    "summary": Summary,
                    "check": Check,
                },
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
        with _one_line_warnings(), _quiet_orbax():
            if isinstance(command, Train):
                command.job.run()
            elif isinstance(command, Sample | Export):
                command.run_command()
            else:
                command.run()
    except KeyboardInterrupt:
        print("jaxmake: interrupted", file=sys.stderr)
        return 130
    except (jm.JaxMakeError, OSError, MemoryError) as error:
        print(f"jaxmake: error: {user_error_line(error)}", file=sys.stderr)
        return 2
    except jax.errors.JaxRuntimeError as error:
        return _runtime_error(error)
    except Exception:
        return _bug()
    return 0


def _bug() -> int:
    """Show the traceback of the exception being handled, say that it is a bug; exit status 1."""
    traceback.print_exc()
    print("jaxmake: internal error: the traceback above is a bug in jaxmake; please report it", file=sys.stderr)
    return 1


def _runtime_error(error: jax.errors.JaxRuntimeError) -> int:
    """Exit status 2 and one line for an error of the device or of the other processes; a bug otherwise.

    With several processes, a failed collective most likely means another process stopped:
    this one then ends at once, since JAX's shutdown would wait for the lost process until
    its heartbeat gives up (100 s).
    """
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if "RESOURCE_EXHAUSTED" in first:
        print(f"jaxmake: error: out of device memory ({first}); try smaller sizes", file=sys.stderr)
        return 2
    if jax.process_count() == 1:
        return _bug()
    print(
        f"jaxmake: error: process {jax.process_index()}: an operation across processes failed, most likely because "
        f"another process of the run stopped ({first}); once every process can run, start them all again with --resume",
        file=sys.stderr,
        flush=True,
    )
    os._exit(2)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each warning once per place, as one line `jaxmake: warning: ...`, whatever the caller's filters."""

    def show(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        print(f"jaxmake: warning: {joined_lines(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Silence orbax's log lines (through absl): its failures surface as jaxmake's one-line errors."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


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
