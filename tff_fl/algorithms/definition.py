"""The one algorithm model: an algorithm is its parts on one shared round skeleton.

  server state ─► broadcast (model, extra) ─► per client: client_update(ctx) ─► ClientOutput
       ▲                                          (update ─► aggregator;  upload ─► sum;  state ─► store)
       └── server_update(model', extra, upload sum) ◄── finalizer (server optimizer) ◄── to_server_delta(aggregate)

An `Algorithm` says what the server broadcasts besides the model (`server_extra`: SCAFFOLD's c, FedDyn's h), the
client state a client keeps across rounds (`client_state`, None = stateless), the client update over one client's
batches (`client_update`: it calls `ctx.train`, the package's one local-training loop, with its extension points),
and how the server turns the aggregate and the summed uploads into the next model and extra. FedAvg is the
definition with every part at its default. `tff_fl.engine.build_process` turns a definition into the federated
round on packed clients; `tff_fl.algorithms.stock.build_learning_process` turns a stateless one into a stock
`tff.learning.templates.LearningProcess` over `tf.data`.

All methods run inside a TF graph (a `tf.function` of the engine or of the stock export); structures are
`collections.OrderedDict`s / lists of tensors. Invariants: `client_update` returns an `update` of the same structure
every call; an update that is not finite is zeroed with weight 0 (local training does it).
"""

import collections
import dataclasses
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import local_training

ClientWeighting = tff.learning.ClientWeighting
NO_VALUE = ()  # An empty extra / upload.


@dataclasses.dataclass
class ClientContext:
  """What one client's update sees. `weights`: broadcast ModelWeights; `extra`: broadcast server extra;
  `state`: this client's state (None for stateless algorithms); `data`: its batches (`.reduce` as tf.data)."""
  model: tff.learning.models.VariableModel
  weights: Any
  extra: Any
  state: Any
  data: Any
  optimizer: tff.learning.optimizers.Optimizer
  weighting: ClientWeighting
  options: local_training.LocalOptions = local_training.LocalOptions()
  passes: int = dataclasses.field(default=0, init=False)  # `train` calls so far (trace time).

  def train(self, start=None, **kwargs) -> collections.OrderedDict:
    """`local_training.train` from `start` (default: the broadcast weights) with the components' options. Each
    call (pass) draws its own DP-SGD noise: pass p folds p into the options' noise key (Ditto's two passes)."""
    kwargs.setdefault('weighting', self.weighting)
    options = self.options
    if options.noise_key is not None:
      options = dataclasses.replace(
          options, noise_key=tf.random.experimental.stateless_fold_in(options.noise_key, self.passes))
    self.passes += 1
    kwargs.setdefault('options', options)
    return local_training.train(self.model, kwargs.pop('optimizer', self.optimizer),
                                self.weights if start is None else start, self.data, **kwargs)


def client_output(result: collections.OrderedDict, *, update=None, upload=NO_VALUE,
                  state=None) -> collections.OrderedDict:
  """A `client_update` result from a local-training `result`: update (default result['update']), update_weight,
  upload (summed over the cohort), new client state (None if stateless), loss and num_examples (per-client metrics)."""
  return collections.OrderedDict(
      update=result['update'] if update is None else update, update_weight=result['update_weight'],
      upload=upload, state=state, loss=result['loss'], num_examples=result['num_examples'])


def zeros_like_trainable(model: tff.learning.models.VariableModel) -> list:
  return [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]


def own_or_global(initialized, own, glob) -> list:
  """Per tensor: the client's `own` value once `initialized` > 0 (a client state flag), else the server's `glob`."""
  return [tf.where(initialized > 0, o, g) for o, g in zip(own, glob)]


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """FedAvg (McMahan et al. 2017); subclasses override the parts they change. Frozen: hyperparameters only."""

  name = 'fedavg'
  client_axis = True  # Its client update runs on the engine's client axis (tff_fl.algorithms.client_axis).
  client_axis_note = ''  # Why not, when client_axis is False (logged).

  # Server side -------------------------------------------------------------------------------------------------
  def server_extra(self, model) -> Any:
    """Initial server extra broadcast with the model (TF structure); `NO_VALUE` if none."""
    del model
    return NO_VALUE

  def default_server_learning_rate(self) -> float:
    return 1.0

  def to_server_delta(self, aggregate):
    """The aggregated update -> the delta the server optimizer applies (structure of the trainable weights)."""
    return aggregate

  def server_update(self, trainable, extra, upload_sum):
    """After the server optimizer: (trainable weights, extra) of the next round from the summed uploads."""
    del upload_sum
    return trainable, extra

  # Client side -------------------------------------------------------------------------------------------------
  def client_state(self, model) -> Optional[Any]:
    """The state of a client never seen before (float leaves), or None for a stateless algorithm."""
    del model
    return None

  def client_update(self, ctx: ClientContext) -> collections.OrderedDict:
    return client_output(ctx.train())

  def personal_weights(self, weights, state) -> Optional[Any]:
    """The model a client deploys (ModelWeights, TF) given the global weights and its state; None = the global
    model (FedPer: global base + own head; Ditto: the personal model). Used by personalized evaluation."""
    del weights, state
    return None

  def validate(self, num_clients: Optional[int] = None) -> None:
    """Raises ValueError (naming Python arguments) for invalid hyperparameters."""
    del num_clients

  @property
  def stateless(self) -> bool:
    return type(self).client_state is Algorithm.client_state and type(self).server_extra is Algorithm.server_extra
