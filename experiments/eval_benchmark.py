"""Per-client evaluation time of a large population on the engine's packed evaluator (not a timed test).

  taskset -c 0 .venv/bin/python -m experiments.eval_benchmark --population=mnist --model=2nn
  taskset -c 0 .venv/bin/python -m experiments.eval_benchmark --population=digits --model=2nn

Populations (data need no download): `mnist` = 10,000 clients x 1 example of MNIST's shape (28x28x1, seeded uniform
pixels: the official test set's size, one image per client), `digits` = scikit-learn digits resampled with
replacement into 10,000 clients x 6 examples. Prints one JSON line: first call (tracing included) and the median of
`--repeats` calls in seconds for all clients. The per-client tf.data path it replaced took 663 s for 10,000 digits
clients (experiments/results/benchmark_before.json).
"""

import collections
import json
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.data import sources
from tff_fl.engine import evaluation
from tff_fl.models import keras_models
from tff_fl.simulation import contexts

_POPULATION = flags.DEFINE_enum('population', 'mnist', ['mnist', 'digits'], 'population (module docstring)')
_MODEL = flags.DEFINE_enum('model', '2nn', ['logreg', '2nn', 'cnn'], 'model')
_CLIENTS = flags.DEFINE_integer('clients', 10_000, 'number of clients')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timed calls after the first (median reported)')
_BATCH = flags.DEFINE_integer('batch_size', evaluation.DEFAULT_BATCH_SIZE, 'evaluation batch size')
_SLOTS = flags.DEFINE_integer('slots', 1, 'CLIENTS slots')


def population(name: str, num_clients: int) -> tuple[dict, tuple]:
  rng = np.random.default_rng(0)
  if name == 'mnist':
    x = rng.uniform(size=(num_clients, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, num_clients).astype(np.int32)
    return {str(i): (x[i:i + 1], y[i:i + 1]) for i in range(num_clients)}, (28, 28, 1)
  data = sources.load_digits()
  idx = rng.integers(0, len(data.y), (num_clients, 6))
  return {str(i): (data.x[idx[i]], data.y[idx[i]]) for i in range(num_clients)}, tuple(data.x.shape[1:])


def main(argv):
  del argv
  arrays, shape = population(_POPULATION.value, _CLIENTS.value)
  x0, y0 = next(iter(arrays.values()))
  spec = collections.OrderedDict(x=tf.TensorSpec(shape, tf.as_dtype(x0.dtype)), y=tf.TensorSpec([], tf.int32))
  keras_fn = lambda: keras_models.get_builder(_MODEL.value)(shape, 10)
  model_fn = keras_models.build_tff_model_fn(keras_fn, spec)
  tf.keras.utils.set_random_seed(0)
  model = keras_fn()
  weights = tff.learning.models.ModelWeights([v.numpy() for v in model.trainable_weights], [])
  t0 = time.perf_counter()
  evaluator = evaluation.build_evaluator(model_fn, arrays, batch_size=_BATCH.value, num_slots=_SLOTS.value)
  results = evaluator(weights)
  first = time.perf_counter() - t0
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    results = evaluator(weights)
    times.append(time.perf_counter() - t0)
  out = collections.OrderedDict(
      population=_POPULATION.value, model=_MODEL.value, clients=len(arrays),
      examples=int(sum(r['num_examples'] for r in results)), first_call_s=round(first, 3),
      median_s=round(statistics.median(times), 3), times_s=[round(t, 3) for t in times],
      accuracy=evaluation.summarize(list(arrays), results)['eval_accuracy'])
  print(json.dumps(out))


if __name__ == '__main__':
  contexts.set_local_cpp_context()  # Before flag parsing: even a usage error exits on this context.
  app.run(main)
