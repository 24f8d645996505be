"""jaxmake: configs -> make -> components (weight specs + pure processes) -> weights -> jit."""

from jaxmake._checks import CHECKS_ENV_VAR as CHECKS_ENV_VAR
from jaxmake._checks import abstract_inputs as abstract_inputs
from jaxmake._checks import recorded_contracts as recorded_contracts
from jaxmake._component import Component as Component
from jaxmake._component import DimsSource as DimsSource
from jaxmake._component import FixedPipeline as FixedPipeline
from jaxmake._component import FixedProcess as FixedProcess
from jaxmake._component import Pipeline as Pipeline
from jaxmake._component import Process as Process
from jaxmake._component import current_path as current_path
from jaxmake._component import scope as scope
from jaxmake._compose import Child as Child
from jaxmake._compose import Children as Children
from jaxmake._compose import Maker as Maker
from jaxmake._compose import make_children as make_children
from jaxmake._compose import merge_params as merge_params
from jaxmake._compose import sequential as sequential
from jaxmake._config import Config as Config
from jaxmake._draw import fold_in_name as fold_in_name
from jaxmake._draw import make_weights as make_weights
from jaxmake._errors import ArgumentError as ArgumentError
from jaxmake._errors import ConfigError as ConfigError
from jaxmake._errors import JaxMakeError as JaxMakeError
from jaxmake._errors import ShapeError as ShapeError
from jaxmake._errors import WeightsError as WeightsError
from jaxmake._errors import checks_own_arguments as checks_own_arguments
from jaxmake._partition import Rules as Rules
from jaxmake._partition import ShardingError as ShardingError
from jaxmake._partition import partition_spec as partition_spec
from jaxmake._partition import weight_shardings as weight_shardings
from jaxmake._ports import Input as Input
from jaxmake._ports import Output as Output
from jaxmake._ports import ProcessPorts as ProcessPorts
from jaxmake._ports import make_ports as make_ports
from jaxmake._ports import pipeline_ports as pipeline_ports
from jaxmake._weights import ArrayGen as ArrayGen
from jaxmake._weights import WeightParams as WeightParams
from jaxmake._weights import WeightParamsTree as WeightParamsTree
from jaxmake._weights import Weights as Weights
from jaxmake._weights import abstract_weights as abstract_weights
from jaxmake._weights import check_weights as check_weights
from jaxmake._weights import get_at as get_at
from jaxmake._weights import set_at as set_at
from jaxmake._weights import stack_params as stack_params

__version__ = "0.1.0"
