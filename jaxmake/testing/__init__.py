"""Testing helpers for jaxmake components, the library's and your own.

* `configs(Config, **fixed)` / `invalid_configs(Config, **fixed)`: hypothesis strategies of
  valid configs, and of configs with one field pushed out of its range;
* `assert_contracts(component, key)`: every annotated process meets its contract on real
  numbers, under `jit` and `vmap`;
* `assert_gradients(loss, weights)`: finite, non-zero gradients;
* `random_inputs(ports, dims, key)`: inputs that match a process's annotations.
"""

from jaxmake.testing._assertions import assert_contracts as assert_contracts
from jaxmake.testing._assertions import assert_gradients as assert_gradients
from jaxmake.testing._assertions import random_inputs as random_inputs
from jaxmake.testing._strategies import configs as configs
from jaxmake.testing._strategies import invalid_configs as invalid_configs
from jaxmake.testing._strategies import out_of_range as out_of_range
from jaxmake.testing._strategies import value_strategy as value_strategy
