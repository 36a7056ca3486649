"""Population tasks: clients of examples drawn with replacement from the source's train / test splits."""

import numpy as np
import pytest

from tff_fl import tasks
from tff_fl import tasks_population
from tff_fl.data import sources


def test_digits_population_draws_train_and_test_rows_from_disjoint_splits():
  task = tasks.build_task(tasks.TaskConfig(task='digits_population', num_clients=500, examples_per_client=7,
                                           test_fraction=0.3, seed=5))
  assert task.model_name == 'logreg' and task.input_shape == (8, 8, 1) and task.num_classes == 10
  assert len(task.client_ids) == 500 and set(task.data.num_examples('train').values()) == {7}
  assert set(task.data.num_examples('test').values()) == {3}  # round(7 * 0.3 / 0.7)
  digits = sources.load_digits()
  key = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}
  train_rows, test_rows = key(task.data.centralized('train')[0]), key(task.data.centralized('test')[0])
  assert train_rows <= key(digits.x) and not train_rows & test_rows
  x, y = task.data.train[task.client_ids[42]]  # Labels travel with their images.
  for xi, yi in zip(x, y):
    assert yi in digits.y[np.all(digits.x.reshape(len(digits.x), -1) == xi.reshape(-1), axis=1)]
  again = tasks.build_task(tasks.TaskConfig(task='digits_population', num_clients=500, examples_per_client=7,
                                            test_fraction=0.3, seed=5))
  np.testing.assert_array_equal(again.data.train.index, task.data.train.index)


@pytest.mark.parametrize('change, message', [
    (dict(partition='dirichlet'), 'use partition=iid'),
    (dict(model='char_lstm'), 'allows model=logreg or 2nn or cnn or simple_cnn'),
    (dict(examples_per_client=0), 'examples_per_client must be >= 1; got 0.'),
])
def test_bad_configs_are_one_line_errors(change, message):
  with pytest.raises(ValueError, match=message):
    tasks.build_task(tasks.TaskConfig(task='digits_population', num_clients=10, **change))


def test_test_examples_per_client():
  assert tasks_population.test_examples_per_client(10, 0.2) == 2
  assert tasks_population.test_examples_per_client(1, 0.1) == 1
  assert tasks_population.test_examples_per_client(10, 0.0) == 0
