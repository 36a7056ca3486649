"""Clients run together on the client axis give the sequential engine's results: weights, server extras, metrics,
per-client losses / example counts / client states, for every algorithm definition and the extension stages
(batch transforms, local masks, upload transforms, measurements), on clients with different step counts (uneven
sizes, several epochs, a straggler with partial work and one with none), with stateful client optimizers; and the
round falls back to sequential clients, saying why, where the client axis cannot express the round."""

import collections
import dataclasses

from absl import logging
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks
from tff_fl.data import preprocess
from tff_fl.algorithms import attacks
from tff_fl.algorithms import ditto
from tff_fl.algorithms import drift
from tff_fl.algorithms import extension
from tff_fl.algorithms import local_training
from tff_fl.algorithms import dp_sgd_client
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import error_feedback
from tff_fl.algorithms import fed_sgd
from tff_fl.algorithms import feddyn
from tff_fl.algorithms import fednova
from tff_fl.algorithms import fedper
from tff_fl.algorithms import preprocessing
from tff_fl.algorithms import scaffold

EPOCHS, BATCH = 2, 4


@pytest.fixture(scope='module')
def task():
  # Dirichlet label skew: clients of 3..30 examples, so 2..15 local steps per round.
  return tasks.build_task(tasks.TaskConfig(task='digits', model='2nn', num_clients=12, seed=3,
                                           partition='label_dirichlet', dirichlet_alpha=0.3))


def _cohorts(task):
  ids = task.client_ids
  return [engine.Cohort(1, tuple(ids[:6]), (None, 1, None, 0, None, None)),  # a straggler with 1 step, one with 0
          engine.Cohort(2, tuple(ids[3:9])), engine.Cohort(3, tuple(ids[:6]))]


def _run(task, algorithm, client_axis, rounds=3, **kwargs):
  kwargs.setdefault('client_optimizer', tff.learning.optimizers.build_sgdm(learning_rate=0.05, momentum=0.9))
  process = engine.build_task_process(algorithm, task, epochs=EPOCHS, batch_size=BATCH, seed=0,
                                      client_axis=client_axis, **kwargs)
  state = process.set_model_weights(process.initialize(), task.initial_weights(1))
  outputs = []
  for cohort in _cohorts(task)[:rounds]:
    out = process.next(state, cohort)
    state = out.state
    outputs.append(out)
  states = process.client_states(task.client_ids[:9]) if process.stateful else None
  return process, state, outputs, states


def _assert_same(task, algorithm, tol=5e-5, rounds=3, **kwargs):
  seq_process, seq_state, seq_out, seq_states = _run(task, algorithm, False, rounds, **kwargs)
  axis_process, axis_state, axis_out, axis_states = _run(task, algorithm, True, rounds, **kwargs)
  assert seq_process.client_execution.startswith('sequential')
  assert axis_process.client_execution == 'client axis'
  flat = lambda s: [np.asarray(v, np.float64) for v in tf.nest.flatten(s)]
  w0 = flat(task.initial_weights(1).trainable)
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(flat(seq_process.get_model_weights(seq_state).trainable),
                                                            w0))
  assert moved > 1e-3
  for a, b in zip(flat(seq_state), flat(axis_state)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=tol)
  for s, v in zip(seq_out, axis_out):
    for a, b in zip(flat(s.metrics), flat(v.metrics)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=tol)
    assert s.client_ids == v.client_ids and len(s.client_metrics) == len(s.client_ids) > 0
    for a, b in zip(s.client_metrics, v.client_metrics):
      assert a.keys() == b.keys()
      for k in a:
        np.testing.assert_allclose(np.float64(b[k]), np.float64(a[k]), rtol=1e-4, atol=tol, err_msg=k)
  if seq_states is not None:
    np.testing.assert_allclose(axis_states, seq_states, rtol=1e-4, atol=tol)


class _FixedMasks(extension.Extension):
  """Local-training masks (half the weights held at 0), the stage pruning uses."""
  name = 'masks'

  def server_init(self, model):
    return [tf.cast(tf.random.stateless_uniform(v.shape, [7, i]) < 0.5, v.dtype)
            for i, v in enumerate(model.trainable_variables)]

  def local_options(self, bcast, info):
    return local_training.LocalOptions(masks=bcast)


class _NormalizedSGD(tff.learning.optimizers.Optimizer):
  """w <- w - 0.05 g / ||g||: a step that reads the whole gradient."""

  def initialize(self, specs):
    return ()

  def next(self, state, weights, gradients):
    norm = tf.linalg.global_norm(list(gradients)) + 1e-12
    return state, tuple(w - 0.05 * g / norm for w, g in zip(weights, gradients))


@dataclasses.dataclass(frozen=True)
class _OneAtATime(fed_avg.FedAvg):
  client_axis = False
  client_axis_note = 'a test'


ALGORITHMS = collections.OrderedDict(
    fedavg=lambda n: fed_avg.FedAvg(),
    fedprox=lambda n: fed_avg.FedAvg(proximal_mu=0.1),
    scaffold=lambda n: scaffold.Scaffold(0.05, n),
    feddyn=lambda n: feddyn.FedDyn(alpha=0.05, num_clients=n),
    fednova=lambda n: fednova.FedNova(0.05, client_momentum=0.5),
    fedper=lambda n: fedper.FedPer(head_size=2),
    ditto=lambda n: ditto.Ditto(lam=0.1),
    fedsgd=lambda n: fed_sgd.FedSGD())


@pytest.mark.parametrize('name', list(ALGORITHMS))
def test_algorithms_match_sequential_clients(task, name):
  # FedDyn's client state accumulates every round's gradient term: float rounding grows to ~2e-4 by round 3.
  _assert_same(task, ALGORITHMS[name](len(task.client_ids)), tol=5e-4 if name == 'feddyn' else 5e-5)


def test_optimizers_the_axis_cannot_step_fall_back_while_tracing(task):
  """SCAFFOLD's NIID-Bench mode steps with an optimizer that holds the client's own shift, and a normalized-gradient
  step is not elementwise: their rounds run sequentially and say why."""
  shift = _run(task, scaffold.Scaffold(0.05, len(task.client_ids), correction='after_step'), None, rounds=1)
  assert shift[0].client_execution.startswith('sequential (the client optimizer _ShiftAfterStep holds tensors')
  normalized = _run(task, fed_avg.FedAvg(), None, rounds=1, client_optimizer=_NormalizedSGD())
  assert 'the client optimizer _NormalizedSGD is not one the client axis steps' in normalized[0].client_execution


def test_adam_clients_and_uniform_weighting_match(task):
  # One round: Adam divides by sqrt of the squared-gradient average, so on weights whose gradient is ~0 it turns
  # float rounding (1e-9) into steps of the learning rate, and two exact implementations drift apart over rounds.
  _assert_same(task, fed_avg.FedAvg(), rounds=1, client_optimizer=tff.learning.optimizers.build_adam(0.01),
               client_weighting=tff.learning.ClientWeighting.UNIFORM)


def test_extension_stages_match_sequential_clients(task):
  """Batch transforms (label flipping), local masks (fixed random masks: pruning's masks come from magnitudes,
  where a 1e-7 difference can flip a weight near the threshold), upload transforms (noise attack). Two rounds: a
  label-flipping client trains chaotically (momentum 0.9), so over more rounds float rounding grows."""
  extensions = [attacks.ByzantineAttack('label_flip', 0.3, seed=1, num_classes=task.num_classes), _FixedMasks()]
  _assert_same(task, fed_avg.FedAvg(), rounds=2, extensions=extensions)
  _assert_same(task, scaffold.Scaffold(0.05, len(task.client_ids)), rounds=2,
               extensions=[attacks.ByzantineAttack('gaussian_noise', 0.5, seed=2, noise_std=0.01)])


def test_drift_measurements_match_sequential_clients(task):
  """Drift's gradients at the broadcast weights (the client axis's 'gradient' call, as FedSGD's update) and its
  aggregate pass: per-client figures and the cohort summary as with sequential clients."""
  _assert_same(task, fed_avg.FedAvg(), rounds=2, extensions=[drift.DriftMeasurements()])


def test_dp_sgd_clients_match_sequential_clients(task):
  """DP-SGD on the client axis: per-example norms from the Dense layers' inputs and output gradients (no
  per-example gradients), clipped at 0.5 (below most examples' norms), each client's seeded noise as the sequential
  loop draws it, SCAFFOLD's correction added after the DP gradient."""
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction='none')
  _assert_same(task, scaffold.Scaffold(0.05, len(task.client_ids)), rounds=2,
               extensions=[dp_sgd_client.SampleDP(0.5, 0.7, loss)])


def test_preprocessing_and_augmentation_match_sequential_clients(task):
  spec = preprocess.PreprocessSpec.from_flags('normalize(client),take(3)', 'brightness(0.2),contrast(0.5,1.5)')
  _assert_same(task, fed_avg.FedAvg(), extensions=[preprocessing.ClientPreprocessing(
      spec, task.data.train, seed=0, epochs=EPOCHS, batch_size=BATCH)])


def test_rounds_the_client_axis_cannot_express_fall_back_and_say_why(task, monkeypatch):
  said = []
  monkeypatch.setattr(logging, 'info', lambda msg, *args: said.append(msg % args))
  process = engine.build_task_process(_OneAtATime(), task, epochs=1, batch_size=BATCH, seed=0, client_axis=None,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
  assert process.client_execution.startswith('sequential (_OneAtATime runs its clients one at a time (a test))')
  assert any('sequential (_OneAtATime' in s for s in said)
  wrapped = engine.build_task_process(error_feedback.TopKErrorFeedback(_OneAtATime(), 0.3), task, epochs=1,
                                      batch_size=BATCH, seed=0, client_axis=None,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
  assert wrapped.client_execution.startswith('sequential (_OneAtATime runs its clients one at a time')
  with pytest.raises(ValueError, match='client_axis=True.*_OneAtATime runs its clients one at a time'):
    engine.build_task_process(_OneAtATime(), task, epochs=1, batch_size=BATCH, seed=0, client_axis=True,
                              client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
  # DP-SGD's per-example norms need Dense layers: with convolutions it is refused when required, else sequential.
  dp = dp_sgd_client.SampleDP(1.0, 0.5, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                                     reduction='none'))
  cnn = dataclasses.replace(task, model_name='cnn')
  with pytest.raises(ValueError, match='client_axis=True.*DP-SGD on the client axis takes per-example gradient norms'):
    engine.build_task_process(fed_avg.FedAvg(), cnn, epochs=1, batch_size=BATCH, seed=0, client_axis=True,
                              client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1), extensions=[dp])
  assert engine.build_task_process(
      fed_avg.FedAvg(), cnn, epochs=1, batch_size=BATCH, seed=0, client_axis=None, extensions=[dp],
      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1)).client_execution.startswith(
          'sequential (DP-SGD on the client axis takes per-example gradient norms from Dense layers')


def test_convolutional_models_run_sequentially_unless_required(task):
  cnn = dataclasses.replace(task, model_name='cnn')
  process = engine.build_task_process(fed_avg.FedAvg(), cnn, epochs=1, batch_size=BATCH, seed=0, client_axis=None,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
  assert process.client_execution == ('sequential (convolutions with per-client filters are faster one client at '
                                      'a time)')
  # client_axis=True: the same training (one step is exact to 1e-5: tests/models/test_functional.py); the grouped
  # convolution sums in another order than Keras' per-client one, which a round of steps grows to ~4e-4.
  _assert_same(cnn, fed_avg.FedAvg(), rounds=1, tol=1e-3)
