"""`check_shared`: with several processes, check that the run folder is one folder that all of them see.

Every process saves its shards of each checkpoint into the run folder, and orbax commits a
checkpoint only once every process's part is there. Were each process given a folder of
its own (a local disk on each host, or a different `--out` on each process), each would
wait for files written elsewhere: the run would stop at its first checkpoint, silent for
21 minutes (orbax's timeouts), then end with errors that do not name the cause. The check
finds this at its cause, before training, in about a second (mostly compiling its three
collectives; 30 ms once compiled):

1. process 0 draws a random nonce, broadcast to every process;
2. process 0 writes it to a file named after it in the run folder;
3. after a barrier, every process reads that file and compares;
4. the answers are gathered on every process, so that all of them know the outcome and
   raise the same `RunDirNotShared` (or none); process 0 then removes the file.

The file's name is new to every process (it contains the nonce), so no network file
system can answer from a stale cache that it does not exist.
"""

import contextlib
import os
import secrets
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxmake.training._run_dir import RunDirError

_TOKEN = ".jaxmake-shared-{nonce}"
"""The name of the file that process 0 writes in the run folder for the check."""


class RunDirNotShared(RunDirError):
    """With several processes, the run folder is not one folder that every process sees.

    Raised on every process at once, before training, by `train` (so no process waits
    for the others). Give every process the same run folder on a file system that all
    of them see (e.g. a network file system).

    Attributes:
        run_dir: the run folder, as given to `train`.
        unseen: the ids of the processes that could not read process 0's file there,
            in order (all of them, 0 first, if process 0 could not write it).
    """

    def __init__(self, message: str, *, run_dir: Path, unseen: tuple[int, ...]) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.unseen = unseen


def check_shared(run_dir: str | os.PathLike[str]) -> None:
    """Check that `run_dir` is one folder shared by all processes; nothing to do with one process.

    Every process must call it, with the same folder (as `train` does). Process 0 creates
    `run_dir` if it does not exist.

    Args:
        run_dir: the run folder.

    Raises:
        RunDirNotShared: on every process, if a process cannot read the file that
            process 0 wrote in `run_dir`, or process 0 cannot write it.
    """
    if jax.process_count() == 1:
        return
    run_dir = Path(run_dir)
    words = np.frombuffer(secrets.token_bytes(16), np.uint32)  # process 0's words win the broadcast
    nonce = np.asarray(multihost_utils.broadcast_one_to_all(words), np.uint32).tobytes().hex()
    token = run_dir / _TOKEN.format(nonce=nonce)
    failure, created = "", False
    if jax.process_index() == 0:
        try:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
            token.write_text(nonce)
        except OSError as error:
            failure = f" ({type(error).__name__}: {error.strerror or error})"
    multihost_utils.sync_global_devices("jaxmake: check_shared")  # the same name on every process
    seen = np.asarray(multihost_utils.process_allgather(np.asarray(_reads(token, nonce))))
    if jax.process_index() == 0 and not failure:
        with contextlib.suppress(OSError):  # a file left behind is harmless; an error here would strand the others
            token.unlink()  # every process has read it: the gather waited for all
    unseen = tuple(int(index) for index in np.flatnonzero(~seen.astype(bool)))
    if unseen:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # leave no empty run folder behind
        raise RunDirNotShared(_message(run_dir, unseen, failure), run_dir=run_dir, unseen=unseen)


def _reads(token: Path, nonce: str) -> bool:
    """Whether this process reads `nonce` in the file `token`."""
    try:
        return token.read_text() == nonce
    except OSError:
        return False


def _message(run_dir: Path, unseen: tuple[int, ...], failure: str) -> str:
    """The one line of `RunDirNotShared`; `failure` is process 0's error writing the file, if it had one."""
    count = jax.process_count()
    if unseen[0] == 0:
        problem = (
            f"the run folder `{run_dir}` cannot be checked to be one folder shared by all {count} processes: "
            f"process 0 could not write a file in it{failure}"
        )
    else:
        ids = ", ".join(map(str, unseen))
        which = f"process {ids} does" if len(unseen) == 1 else f"processes {ids} do"
        problem = (
            f"the run folder `{run_dir}` is not one folder shared by all {count} processes: "
            f"{which} not see the file that process 0 wrote in it"
        )
    return (
        f"{problem}. With several processes, give all of them the same run folder, on a file system that "
        f"every process sees (e.g. a network file system)"
    )
