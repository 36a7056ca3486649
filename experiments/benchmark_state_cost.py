"""Per-round CPU breakdown of stateful algorithms on the packed engine (the README's state-cost figure).

  ROUNDS=12 taskset -c 0 .venv/bin/python -m experiments.benchmark_state_cost [fedavg passthrough correction scaffold ...]

Prints, per algorithm, median CPU seconds of: reading client states, packing, the round, and a whole `next`.
`passthrough` is FedAvg carrying a model-sized client state unchanged; `correction` adds it as a per-step
gradient correction (isolating the cost of state I/O and of the correction).
"""
import sys, time, statistics, collections
import numpy as np
from experiments import benchmark_setup as setup
from tff_fl import engine
from tff_fl.algorithms import fed_avg, scaffold, feddyn, ditto
from tff_fl.simulation import contexts

import collections as _c, dataclasses
from tff_fl.algorithms import definition

@dataclasses.dataclass(frozen=True)
class StatePassThrough(fed_avg.FedAvg):
  """FedAvg with a model-sized client state carried through unchanged (isolates state I/O)."""
  name = 'passthrough'
  def client_state(self, model):
    return _c.OrderedDict(s=definition.zeros_like_trainable(model))
  def client_update(self, ctx):
    out = ctx.train()
    return definition.client_output(out, state=ctx.state)

@dataclasses.dataclass(frozen=True)
class CorrectionOnly(fed_avg.FedAvg):
  """FedAvg + a per-step zero correction from the state (isolates the per-step add + state I/O)."""
  name = 'correction'
  def client_state(self, model):
    return _c.OrderedDict(s=definition.zeros_like_trainable(model))
  def client_update(self, ctx):
    out = ctx.train(correction=ctx.state['s'])
    return definition.client_output(out, state=ctx.state)

contexts.set_local_cpp_context()
task = setup.build_task(100, 9)
ids = task.client_ids
algos = collections.OrderedDict(fedavg=fed_avg.FedAvg(), scaffold=scaffold.Scaffold(0.1, len(ids)),
                                feddyn=feddyn.FedDyn(alpha=0.01, num_clients=len(ids)), ditto=ditto.Ditto(lam=0.1),
                                fedprox=fed_avg.FedAvg(proximal_mu=0.01), passthrough=StatePassThrough(), correction=CorrectionOnly())
want = sys.argv[1:] or list(algos)
runs = {}
for name in want:
  p = setup.build_packed(task, algos[name])
  s = p.set_model_weights(p.initialize(), task.initial_weights(setup.SEED))
  for r in range(2):
    s = p.next(s, engine.Cohort.full(r, ids)).state
  runs[name] = [p, s, collections.defaultdict(list)]
for r in range(int(__import__("os").environ.get("ROUNDS", 6))):
  for name, run in runs.items():
    p, s, t = run
    c = engine.Cohort.full(r, ids)
    t0 = time.process_time(); w0 = time.perf_counter()
    st = p.client_states(ids) if p.stateful else None
    t1 = time.process_time()
    slots = p.packer.pack(c, st)
    t2 = time.process_time()
    out = p._round.next(s, slots)
    t3 = time.process_time()
    run[1] = p.next(s, c).state
    t4 = time.process_time()
    t['states'].append(t1 - t0); t['pack'].append(t2 - t1); t['round'].append(t3 - t2); t['next_total'].append(t4 - t3)
for name, (_, _, t) in runs.items():
  print(name, '  '.join(f'{k} {statistics.median(v):.4f}' for k, v in t.items()))
contexts.shutdown()
