"""Shared fixture of the algorithm tests: three clients (7, 12 and 20 examples, 6 features, 3 classes) training a
multinomial logistic regression, on the engine (`build`, `run_cohorts`) or as stock tf.data datasets."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl.models import keras_models

SPEC = collections.OrderedDict(x=tf.TensorSpec([6], tf.float32), y=tf.TensorSpec([], tf.int32))
SIZES = (7, 12, 20)
LR, BATCH = 0.1, 5
MODEL_FN = keras_models.build_tff_model_fn(lambda: keras_models.logreg([6], 3), SPEC)
NUM_EXAMPLES, UNIFORM = tff.learning.ClientWeighting.NUM_EXAMPLES, tff.learning.ClientWeighting.UNIFORM
IDS = [str(i) for i in range(len(SIZES))]


def arrays(seed=0, shift=0.0):
  """[(x float32[n, 6], y int32[n])] per client; client i's features shifted by `shift` * i (heterogeneity)."""
  rng = np.random.default_rng(seed)
  return [((rng.normal(size=(n, 6)) + shift * i).astype(np.float32), rng.integers(0, 3, n).astype(np.int32))
          for i, n in enumerate(SIZES)]


def datasets(client_arrays):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(BATCH)
          for x, y in client_arrays]


def initial_weights():
  tf.keras.utils.set_random_seed(1)
  m = keras_models.logreg([6], 3)
  return tff.learning.models.ModelWeights(trainable=[v.numpy() for v in m.trainable_weights], non_trainable=[])


def sgd(lr):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def build(algorithm, client_arrays, *, model_fn=MODEL_FN, client_lr=LR, server_lr=1.0, weighting=UNIFORM,
          num_slots=1, batch_size=BATCH, **kwargs):
  """`engine.build_process` on clients '0', '1', ... with their examples in array order (one epoch)."""
  train = {str(i): a for i, a in enumerate(client_arrays)}
  return engine.build_process(algorithm, model_fn, train, lambda cid, r: np.arange(len(train[cid][0])),
                              batch_size=batch_size, client_optimizer=sgd(client_lr),
                              server_optimizer=sgd(server_lr), client_weighting=weighting, num_slots=num_slots,
                              **kwargs)


def run_cohorts(process, cohorts, weights=None):
  """Runs `process` from `weights` (default `initial_weights()`) over `cohorts` (tuples of client indices);
  returns (server state, {client index: client state structure (numpy)}) for every client."""
  state = process.set_model_weights(process.initialize(), weights or initial_weights())
  for r, cohort in enumerate(cohorts, start=1):
    state = process.next(state, engine.Cohort.full(r, [str(i) for i in cohort])).state
  states = process.client_states([str(i) for i in range(len(SIZES))])
  return state, {i: process.client_state_structure(v) for i, v in enumerate(states)}
