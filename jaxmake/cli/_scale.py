"""The options that spread `jaxmake train` over devices and processes: `--mesh`, `--rules`, ...

`Scale` is a field of both training commands; its options show without a prefix. Its
`start` sets JAX up as asked (CPU devices, `jax.distributed`) and must run before anything
touches a device; it returns the mesh to train on.

No wait between processes is unbounded. Joining: every process waits at the coordinator
until all have joined; after `--process-timeout` seconds it ends with a one-line error
(JAX's own timeout would end it with a C++ stack trace). Once joined, a process that dies
is noticed by the others: at their next collective (on CPU, Gloo reports the closed
connection at once), and by JAX's heartbeat within 100 seconds wherever they wait;
JAX then ends them. A process that loses process 0 (which runs the coordinator) ends at
once. The run folder is checked to be shared before training (`jaxmake.training.train`).
"""

import os
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Literal

import jax
from annotated_types import Ge
from jax import Array
from jax.sharding import Mesh

import jaxmake as jm
from jaxmake.cli._configs import CliError
from jaxmake.sharding import RULES, make_mesh, parse_mesh

ENVIRONMENT = {
    "--coordinator": "JAXMAKE_COORDINATOR",
    "--num-processes": "JAXMAKE_NUM_PROCESSES",
    "--process-id": "JAXMAKE_PROCESS_ID",
}
"""The environment variable read for each multi-process option left out."""


MAX_CPU_DEVICES = 1024
"""The most CPU devices `--cpu-devices` makes (each costs memory and threads)."""


class Scale(jm.Config):
    """Devices and processes: train on a mesh of devices, on one process or several.

    Args:
        mesh: lay the devices of all processes out as this mesh, e.g. `data=4,model=2`;
            batches are split over `data`. If left out: one device, or with several
            processes a `data` axis over all their devices.
        rules: how the weights are split over the mesh: `dp` keeps a whole copy on every
            device, `fsdp` splits them over `data`, `tp` splits their MLP, attention-head
            and vocabulary dims over `model`, `fsdp_tp` does both.
        cpu_devices: make JAX see this many CPU devices in each process (to try a mesh on
            one machine), at most 1024.
        coordinator: HOST:PORT that process 0 listens on, to train on several processes;
            if left out, $JAXMAKE_COORDINATOR.
        num_processes: how many processes train together; if left out,
            $JAXMAKE_NUM_PROCESSES.
        process_id: this process's number, from 0; if left out, $JAXMAKE_PROCESS_ID.
        process_timeout: with several processes, how many seconds each waits for all of
            them to join at the coordinator before it gives up with an error.
    """

    mesh: str | None = None
    rules: Literal["dp", "fsdp", "tp", "fsdp_tp"] = "dp"
    cpu_devices: int | None = None
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    process_timeout: Annotated[int, Ge(1)] = 300

    def validate(self) -> None:
        """The counts are in range and the process id >= 0 (`Annotated` bounds do not reach inside `| None`)."""
        for name, least, most in (
            ("cpu_devices", 1, MAX_CPU_DEVICES),
            ("num_processes", 1, None),
            ("process_id", 0, None),
        ):
            value = getattr(self, name)
            if value is not None and value < least:
                raise self.error(name, f"must be >= {least}")
            if value is not None and most is not None and value > most:
                raise self.error(name, f"must be <= {most}")

    def start(self, batch_size: int | None) -> Mesh | None:
        """Start JAX on the devices and processes asked for; the mesh to train on.

        Call it before anything touches a device: JAX reads `--cpu-devices` and joins the
        other processes only when it starts.

        Args:
            batch_size: examples per step, to be split over the mesh's `data` axis; `None`
                checks none (`jaxmake plan` checks the batch of each point it plans).

        Returns:
            The mesh, or `None` to train on one device (no `--mesh`, one process).

        Raises:
            CliError: JAX cannot start as asked, the multi-process options are
                incomplete or out of range, `--rules` other than `dp` without a mesh,
                or a batch that the `data` axis does not divide.
            ShardingError: a bad `--mesh`, or one that does not match the devices.

        With several processes, if they have not all joined within `--process-timeout`
        seconds, the process prints one error line and exits with status 2 (JAX would
        otherwise abort it with a stack trace).
        """
        shape = None if self.mesh is None else parse_mesh(self.mesh)  # a typo fails before JAX starts
        if self.cpu_devices is not None:
            _before_devices("--cpu-devices", lambda: jax.config.update("jax_num_cpu_devices", self.cpu_devices))
        processes = self._processes()
        if processes is not None:
            self._join(*processes)
        if shape is None:
            if jax.process_count() == 1:
                if self.rules != "dp":
                    raise CliError(
                        f"--rules {self.rules} splits the weights over a mesh: give --mesh too (e.g. --mesh data=2)"
                    )
                return None
            shape = {"data": jax.device_count()}
        mesh = make_mesh(shape)
        if batch_size is not None:
            check_batch(mesh, batch_size)
        return mesh

    def make_weights(self, key: Array, weight_params: jm.WeightParamsTree, mesh: Mesh | None) -> jm.Weights:
        """`jm.make_weights`, directly sharded over `mesh` by the `--rules` preset if there is a mesh.

        Raises:
            ShardingError: a weight's dimension is not divisible by its mesh axis.
        """
        return jm.make_weights(key, weight_params, mesh=mesh, rules=None if mesh is None else RULES[self.rules])

    def _join(self, coordinator: str, count: int, index: int) -> None:
        """Join the other processes at `coordinator` (`jax.distributed.initialize`), or end within the timeout.

        JAX ends a process that cannot join in time with a C++ stack trace (SIGABRT, which
        Python cannot catch), after a silent wait. A watchdog ends it first, at
        `process_timeout` seconds, with one line and exit status 2; JAX's own timeout,
        a minute later, stays as a backstop.
        """
        message = (
            f"not all {count} processes joined at --coordinator {coordinator} within --process-timeout "
            f"{self.process_timeout} s (this is process {index}): start each of them with the same --coordinator "
            f"and --num-processes {count} and its own --process-id from 0 to {count - 1}, and check that process "
            f"0's host and port are reachable from every host"
        )
        watchdog = threading.Timer(self.process_timeout, _give_up, (message,))
        watchdog.daemon = True
        watchdog.start()
        try:
            _before_devices(
                "--coordinator",
                lambda: jax.distributed.initialize(
                    coordinator_address=coordinator,
                    num_processes=count,
                    process_id=index,
                    initialization_timeout=self.process_timeout + _BACKSTOP,
                ),
            )
        finally:
            watchdog.cancel()

    def _processes(self) -> tuple[str, int, int] | None:
        """`(coordinator, num_processes, process_id)` from the options or the environment; `None` if none is given."""
        coordinator = self.coordinator if self.coordinator is not None else os.environ.get(ENVIRONMENT["--coordinator"])
        count = self.num_processes if self.num_processes is not None else _environment_int("--num-processes", 1)
        index = self.process_id if self.process_id is not None else _environment_int("--process-id", 0)
        given = {"--coordinator": coordinator, "--num-processes": count, "--process-id": index}
        missing = [option for option, value in given.items() if value is None]
        if len(missing) == len(given):
            return None
        if coordinator is None or count is None or index is None:
            raise CliError(
                f"training on several processes needs --coordinator, --num-processes and --process-id together "
                f"(or ${', $'.join(ENVIRONMENT.values())}); missing {', '.join(missing)}"
            )
        host, colon, port = coordinator.rpartition(":")
        if not (host and colon and port.isdecimal()):
            raise CliError(f"--coordinator takes HOST:PORT (e.g. 10.0.0.1:5678), got {coordinator!r}")
        if index >= count:
            raise CliError(f"--process-id {index} must be in [0, {count - 1}] for --num-processes {count}")
        return coordinator, count, index


def check_batch(mesh: Mesh, batch_size: int) -> None:
    """Raise `CliError` unless the mesh's `data` axis (if any) divides `batch_size`."""
    parts = mesh.shape.get("data", 1)
    if batch_size % parts:
        raise CliError(
            f"--batch-size {batch_size} cannot be split over mesh axis 'data' of size {parts}: "
            f"give a multiple of {parts}"
        )


def _environment_int(option: str, minimum: int) -> int | None:
    """The integer (>= `minimum`) in the environment variable of `option`, or `None` if it is not set."""
    name = ENVIRONMENT[option]
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip().isdecimal() or int(value) < minimum:
        raise CliError(f"${name} (for {option}) must be an integer >= {minimum}, got {value!r}")
    return int(value)


_BACKSTOP = 60
"""Seconds that JAX's own timeout for joining waits beyond `--process-timeout`."""


def _give_up(message: str) -> None:
    """End this process now, from a thread, with one error line and exit status 2.

    The main thread is blocked in JAX's C++ code, which no Python exception can reach.
    """
    print(f"jaxmake: error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def _before_devices(option: str, start: Callable[[], object]) -> None:
    """Run `start` (which must come before JAX starts), turning JAX's refusal into a `CliError`."""
    try:
        start()
    except RuntimeError as error:
        raise CliError(f"{option}: {' '.join(str(error).split())}") from None
