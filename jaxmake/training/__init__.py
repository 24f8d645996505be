"""Training: a small explicit loop on optax and orbax-checkpoint.

* `TrainConfig`: the optimizer, schedule and bookkeeping knobs, validated on construction;
* `make_optimizer`, `make_schedule`, `decay_mask`: gradient clipping, then AdamW on a linear
  warmup + cosine (or constant) schedule, with weight decay on matrices only;
  `weight_labels`: the weights frozen or given a learning-rate factor by path patterns
  (`TrainConfig.freeze`, `learning_rate_factors`), the groups of an `optax.partition`;
* `Task`, `StatefulTask`, `shuffled_batches`: what a model plugs into the loop (loss, batches,
  evaluation; and the state of a model with one, such as BatchNorm's running statistics);
* `train`: the loop, several steps per compiled call, with a progress bar or log lines, a
  metrics history (`metrics.json`), atomic keep-N checkpoints, exact resume and a clear stop
  (`TrainingDiverged`) on NaN/inf;
* `LossScaling`, `LossScale`, `LossScaledState`: dynamic loss scaling for float16 models
  (`TrainConfig.loss_scaling="dynamic"`): the scale's state, kept with the optimizer's;
* `check_shared`, `RunDirNotShared`: with several processes, `train` first checks that the
  run folder is one folder that all of them see;
* `plan_step`, `StepPlan`, `measure_step`: the loop's step compiled ahead of time on
  abstract values: its FLOPs, memory per device and collectives before anything is
  allocated, and its measured peak to check them (`jaxmake plan`);
* `load_weights`, `load_metadata`: a finished run's latest weights and metadata, for
  inference;
* `RunDirError`, `CheckpointDamaged`: a run folder's file is missing or damaged (each
  checkpoint is sealed with the sizes and CRC-32s of its files); `load_weights` then falls
  back to the latest intact checkpoint with a warning.
"""

from jaxmake.training._checkpoint import CheckpointDamaged as CheckpointDamaged
from jaxmake.training._checkpoint import Checkpoints as Checkpoints
from jaxmake.training._checkpoint import load_weights as load_weights
from jaxmake.training._config import LossScaling as LossScaling
from jaxmake.training._config import Schedule as Schedule
from jaxmake.training._config import TrainConfig as TrainConfig
from jaxmake.training._loop import TrainingDiverged as TrainingDiverged
from jaxmake.training._loop import TrainResult as TrainResult
from jaxmake.training._loop import train as train
from jaxmake.training._loss_scale import LossScale as LossScale
from jaxmake.training._loss_scale import LossScaledState as LossScaledState
from jaxmake.training._optimizer import decay_mask as decay_mask
from jaxmake.training._optimizer import make_optimizer as make_optimizer
from jaxmake.training._optimizer import make_schedule as make_schedule
from jaxmake.training._optimizer import weight_labels as weight_labels
from jaxmake.training._plan import StepPlan as StepPlan
from jaxmake.training._plan import device_bytes as device_bytes
from jaxmake.training._plan import measure_step as measure_step
from jaxmake.training._plan import plan_step as plan_step
from jaxmake.training._progress import ProgressMode as ProgressMode
from jaxmake.training._run_dir import History as History
from jaxmake.training._run_dir import RunDirError as RunDirError
from jaxmake.training._run_dir import load_metadata as load_metadata
from jaxmake.training._run_dir import record_results as record_results
from jaxmake.training._shared import RunDirNotShared as RunDirNotShared
from jaxmake.training._shared import check_shared as check_shared
from jaxmake.training._task import Batch as Batch
from jaxmake.training._task import LossFn as LossFn
from jaxmake.training._task import StatefulLossFn as StatefulLossFn
from jaxmake.training._task import StatefulTask as StatefulTask
from jaxmake.training._task import Task as Task
from jaxmake.training._task import shuffled_batches as shuffled_batches
