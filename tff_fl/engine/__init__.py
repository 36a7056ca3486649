"""The one engine: any algorithm definition + extensions + aggregator, on clients packed into CLIENTS slots.

  process = engine.build_process(FedAvg(), task.model_fn, task.data.train, order_fn, batch_size=10,
                                 client_optimizer=tff.learning.optimizers.build_sgdm(0.1))
  output = process.next(state, engine.Cohort.full(round_num, client_ids))
"""

from typing import Mapping, Optional, Sequence

import tensorflow_federated as tff

from tff_fl.algorithms import definition
from tff_fl.algorithms import extension as extension_lib
from tff_fl.engine import packing
from tff_fl.engine import process as process_lib
from tff_fl.engine import round as round_lib

Cohort = packing.Cohort
EngineProcess = process_lib.EngineProcess
Process = process_lib.Process
RoundOutput = process_lib.RoundOutput


def build_process(algorithm: definition.Algorithm, model_fn, train_arrays: Mapping[str, tuple],
                  order_fn: packing.OrderFn, *, batch_size: int,
                  client_optimizer: tff.learning.optimizers.Optimizer,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  model_aggregator=None,
                  client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
                  extensions: Sequence[extension_lib.Extension] = (), seed: int = 0, num_slots: int = 1,
                  store=None, runtime: Optional[str] = None,
                  client_axis: Optional[bool] = None) -> process_lib.EngineProcess:
  """`EngineProcess` running `algorithm` on `train_arrays` (client id -> (x, y)).

  Args:
    algorithm: an `Algorithm` definition (FedAvg(), Scaffold(...), ...).
    model_fn: no-arg callable returning a fresh `tff.learning.models.VariableModel`.
    train_arrays: client id -> (x [n, ...], y [n, ...]) numpy arrays.
    order_fn: (client_id, round_num) -> example indices of the round's local training (epochs included).
    batch_size: local batch size B.
    client_optimizer / server_optimizer: `tff.learning.optimizers.Optimizer`s (server default: SGD at the
      algorithm's default learning rate).
    model_aggregator: any `tff.aggregators` factory (ours or TFF's); default MeanFactory.
    client_weighting: NUM_EXAMPLES or UNIFORM.
    extensions: `Extension`s (components) applied to the round's stages.
    seed: seeds the per-client seeds of each round; num_slots: CLIENTS slots a cohort is split into.
    store: client-state store (get_many/put_many), or store_fn(state_dim) -> store (called for stateful
      algorithms only); default in memory.
    runtime: 'local' (one slot, run in this process; the default for one slot) or 'tff' (the installed TFF
      execution context; the default for several slots).
    client_axis: run a slot's clients together on a client axis (None, the default: whenever the model,
      algorithm and extensions allow it, else sequentially with the reason logged; True: required; False:
      sequentially).
  """
  algorithm.validate()
  runtime = process_lib.resolve_runtime(runtime, num_slots)
  if client_weighting not in (tff.learning.ClientWeighting.NUM_EXAMPLES, tff.learning.ClientWeighting.UNIFORM):
    raise ValueError(f'client_weighting must be NUM_EXAMPLES or UNIFORM; got {client_weighting}.')
  parts = round_lib.RoundParts(algorithm, model_fn, extensions)
  fields = [e for e in parts.extensions if e.field_specs()]

  def fields_fn(round_num, client_ids, sampled):
    out = {}
    for e in fields:
      out.update((round_lib.field_key(e.name, k), v) for k, v in e.fields(round_num, client_ids, sampled).items())
    return out

  ordering = [e for e in parts.extensions if e.has('client_order')]
  if ordering:
    task_order_fn = order_fn

    def order_fn(client_id, round_num):  # pylint: disable=function-redefined
      order = task_order_fn(client_id, round_num)
      for e in ordering:
        order = e.client_order(client_id, round_num, order)
      return order

  packer = packing.Packer(train_arrays, order_fn, batch_size=batch_size, seed=seed, num_slots=num_slots,
                          state_dim=parts.state_dim, field_specs=round_lib.field_specs(parts.extensions),
                          fields_fn=fields_fn if fields else None)
  round_ = round_lib.build_round(
      algorithm, model_fn, client_optimizer, server_optimizer, packer.slot_type(), batch_size=batch_size,
      model_aggregator=model_aggregator, client_weighting=client_weighting, parts=parts, client_axis=client_axis)
  return process_lib.EngineProcess(round_, packer, store, runtime)


def build_task_process(algorithm: definition.Algorithm, task, *, epochs: int, batch_size: int, seed: int,
                       **kwargs) -> process_lib.EngineProcess:
  """`build_process` on a `tff_fl.tasks.Task`: its model, its client arrays and its seeded example order."""
  if epochs < 1:
    raise ValueError(f'epochs must be >= 1; got {epochs}.')
  order_fn = lambda cid, r: task.train_order(cid, epochs=epochs, seed=seed, round_num=r)
  return build_process(algorithm, task.model_fn, task.data.train, order_fn, batch_size=batch_size, seed=seed,
                       **kwargs)
