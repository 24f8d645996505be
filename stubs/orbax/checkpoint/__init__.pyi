# Partial stub of orbax-checkpoint 0.12 (ships no `py.typed`): the names jaxmake uses, with
# the signatures orbax declares; any other name is `Any` (typeshed's convention for an
# incomplete stub).
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from orbax.checkpoint import args as args
from orbax.checkpoint.args import CheckpointArgs

class CheckpointManagerOptions:
    def __init__(
        self,
        save_interval_steps: int = 1,
        max_to_keep: int | None = None,
        *,
        create: bool = True,
        cleanup_tmp_directories: bool = False,
        read_only: bool = False,
        enable_async_checkpointing: bool = True,
    ) -> None: ...

class CheckpointHandler: ...

class StandardCheckpointHandler(CheckpointHandler):
    def __init__(
        self, *, save_concurrent_gb: int = 96, restore_concurrent_gb: int = 96, use_ocdbt: bool = True
    ) -> None: ...

class CheckpointManager:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        checkpointers: Any = None,
        options: CheckpointManagerOptions | None = None,
        metadata: Mapping[str, Any] | None = None,
        item_names: Sequence[str] | None = None,
        item_handlers: CheckpointHandler | Mapping[str, CheckpointHandler] | None = None,
    ) -> None: ...
    def save(
        self,
        step: int,
        items: Any = None,
        save_kwargs: Any = None,
        metrics: Any = None,
        force: bool | None = False,
        args: CheckpointArgs | None = None,
        custom_metadata: dict[str, Any] | None = None,
    ) -> bool: ...
    def restore(
        self,
        step: int | None,
        items: Any = None,
        restore_kwargs: Any = None,
        directory: str | os.PathLike[str] | None = None,
        args: CheckpointArgs | None = None,
    ) -> Any: ...
    def item_metadata(self, step: int) -> Any: ...
    def latest_step(self) -> int | None: ...
    def all_steps(self, read: bool = False) -> Sequence[int]: ...
    def wait_until_finished(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

def __getattr__(name: str) -> Any: ...
