"""SCAFFOLD (Karimireddy et al. 2020, Algorithm 1) with option II control variates, as a `StatefulProcess`.

Server state x (model), c (server control variate); client state c_i (zeros for a client never seen). A round with
cohort S out of N clients:

  client i:  y <- x;  K local SGD steps  y <- y - lr_l * (g_i(y) - c_i + c)     (K = minibatches it ran)
             c_i+ <- c_i - c + (x - y) / (K * lr_l)                              (option II)
             sends dy_i = y - x (as the FedAvg-style update x - y) and dc_i = c_i+ - c_i; stores c_i+
  server:    x <- x + lr_g * mean_i dy_i      (server SGD at lr_g; any server optimizer / aggregator may be used)
             c <- c + (1/N) * sum_i dc_i      (partial participation: 1/N, not 1/|S|)

The paper averages dy_i uniformly (`client_weighting=UNIFORM`, the default here). A client with no data or a
non-finite update keeps c_i and sends dc_i = 0 and update 0 with weight 0. With c = c_i = 0 the client step is plain
SGD, so a round with all control variates zero is exactly a FedAvg round.
Shapes: c and c_i have the structure of the model's trainable weights.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import client_work as client_work_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import stateful_process

ClientWeighting = tff.learning.ClientWeighting


def _zeros_like_trainable(model_fn):
  model = model_fn()
  return [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]


def build_scaffold(model_fn: client_work_lib.ModelFn, client_learning_rate: float, num_clients: int,
                   server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None, *,
                   client_weighting: ClientWeighting = ClientWeighting.UNIFORM,
                   model_aggregator: Optional[fed_avg.AnyFactory] = None,
                   metrics_aggregator=None) -> stateful_process.StatefulProcess:
  """SCAFFOLD (see module docstring).

  Args:
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    client_learning_rate: local SGD step size lr_l (> 0); option II divides by it.
    num_clients: N, the population size, for the server control update (>= 1).
    server_optimizer: applied to the averaged x - y; default SGD(1.0). SGD at lr_g is the paper's global step.
    client_weighting: UNIFORM (paper) or NUM_EXAMPLES, the weight of dy_i in the aggregate.
    model_aggregator: any `tff.aggregators` factory for dy_i; default MeanFactory.
    metrics_aggregator: default `tff.learning.metrics.sum_then_finalize`.
  """
  if not client_learning_rate > 0:
    raise ValueError(f'client_learning_rate (--client_learning_rate) must be > 0; got {client_learning_rate}.')
  if not isinstance(num_clients, int) or num_clients < 1:
    raise ValueError(f'num_clients (--num_clients) must be an int >= 1; got {num_clients!r}.')
  lr = float(client_learning_rate)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=lr)

  def client_state_fn():
    return collections.OrderedDict(control=_zeros_like_trainable(model_fn))

  def client_fn(weights, control, client_state, dataset):
    local_train = stateful_process.build_local_sgd_fn(model_fn(), weighting=client_weighting, with_correction=True)
    c_i = client_state['control']
    correction = tf.nest.map_structure(tf.subtract, control, c_i)  # gradient + c - c_i
    out, unfinalized = local_train(optimizer, weights, dataset, correction)
    ok = tf.logical_and(out['finite'] > 0, out['num_steps'] > 0)
    scale = 1.0 / (tf.maximum(out['num_steps'], 1.0) * lr)
    new_c_i = tf.nest.map_structure(lambda ci, c, d: tf.where(ok, ci - c + d * scale, ci),
                                    c_i, control, out['update'])
    out['upload'] = tf.nest.map_structure(tf.subtract, new_c_i, c_i)
    out['client_state'] = collections.OrderedDict(control=new_c_i)
    return out, unfinalized

  def server_extra_update(control, control_delta_sum):
    return tf.nest.map_structure(lambda c, s: c + s / float(num_clients), control, control_delta_sum)

  return stateful_process.build_stateful_process(
      model_fn, client_fn=client_fn, client_state_fn=client_state_fn, server_optimizer=server_optimizer,
      model_aggregator=model_aggregator, server_extra_fn=lambda: _zeros_like_trainable(model_fn),
      server_extra_update=server_extra_update, metrics_aggregator=metrics_aggregator)
