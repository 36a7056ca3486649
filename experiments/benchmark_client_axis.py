"""Sequential clients vs clients on a client axis, interleaved round by round in one process (the README's figures).

  taskset -c 0 .venv/bin/python -m experiments.benchmark_client_axis [--scenarios=100x9,50x18,10x900]
      [--algorithms=fedavg,fedprox,scaffold,feddyn,ditto] [--model=2nn] [--rounds=10] [--compare=static_size]

For each scenario (clients x examples, `benchmark_setup.build_task`) and algorithm, builds the packed engine twice
(`client_axis=False` / `True`), runs 2 warm-up rounds each, then `--rounds` rounds alternating between the two, and
prints the median CPU seconds per round of each, their ratio, the max |weight difference| after the same rounds,
and each engine's first-round wall time (build + tracing + the first round). `--compare=static_size`: both on the
client axis, the round traced with the slot size static (the default, `local_round.LocalRound`) vs dynamic.
"""

import statistics
import time

from absl import app
from absl import flags
import numpy as np

from experiments import benchmark_setup as setup
from tff_fl import engine
from tff_fl.algorithms import ditto
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import feddyn
from tff_fl.algorithms import scaffold
from tff_fl.simulation import contexts

ALGORITHMS = {
    'fedavg': lambda n: fed_avg.FedAvg(), 'fedprox': lambda n: fed_avg.FedAvg(proximal_mu=0.01),
    'scaffold': lambda n: scaffold.Scaffold(0.1, n), 'feddyn': lambda n: feddyn.FedDyn(alpha=0.01, num_clients=n),
    'ditto': lambda n: ditto.Ditto(lam=0.1)}

_SCENARIOS = flags.DEFINE_list('scenarios', ['100x9', '50x18', '10x900'], 'clients x examples per client')
_ALGORITHMS = flags.DEFINE_list('algorithms', ['fedavg'], f'any of {", ".join(ALGORITHMS)}')
_MODEL = flags.DEFINE_string('model', '2nn', 'model of the digits task (2nn, logreg, cnn)')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'timed rounds per engine (median reported)')
_COMPARE = flags.DEFINE_enum('compare', 'sequential', ['sequential', 'static_size'],
                             'sequential: sequential clients vs the client axis; static_size: the client axis with '
                             'the slot size dynamic vs static')


def compare(num_clients: int, examples: int, algorithm: str, model: str, rounds: int,
            static_size: bool = False) -> dict:
  task = setup.build_task(num_clients, examples)
  if model != task.model_name:
    task = type(task)(task.name, task.data, model, task.input_shape, task.num_classes)
  ids = task.client_ids
  runs = {}
  first = {}
  for axis in (False, True):
    start = time.perf_counter()
    process = setup.build_packed(task, ALGORITHMS[algorithm](len(ids)), client_axis=axis or static_size)
    if static_size and not axis:
      process._round._static_size = -1  # pylint: disable=protected-access  (never static: the dynamic trace)
    state = process.set_model_weights(process.initialize(), task.initial_weights(setup.SEED))
    for r in range(2):
      state = process.next(state, engine.Cohort.full(r, ids)).state
      if r == 0:
        first[axis] = time.perf_counter() - start
    runs[axis] = [process, state, []]
  for r in range(2, 2 + rounds):
    for run in runs.values():
      start = time.process_time()
      run[1] = run[0].next(run[1], engine.Cohort.full(r, ids)).state
      run[2].append(time.process_time() - start)
  weights = {a: [np.asarray(w) for w in run[0].get_model_weights(run[1]).trainable] for a, run in runs.items()}
  sequential, axis = statistics.median(runs[False][2]), statistics.median(runs[True][2])
  return dict(sequential=sequential, client_axis=axis, ratio=axis / sequential, first_sequential=first[False],
              first_client_axis=first[True],
              execution=runs[True][0].client_execution,
              max_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(weights[False], weights[True])))


def main(argv):
  del argv
  contexts.set_local_cpp_context()
  try:
    for scenario in _SCENARIOS.value:
      num_clients, examples = map(int, scenario.split('x'))
      for algorithm in _ALGORITHMS.value:
        static = _COMPARE.value == 'static_size'
        r = compare(num_clients, examples, algorithm, _MODEL.value, _ROUNDS.value, static)
        names = ('dynamic size', 'static size') if static else ('sequential', 'client_axis')
        print(f"{algorithm} {_MODEL.value} {scenario}: {names[0]} {r['sequential']:.4f}  {names[1]} "
              f"{r['client_axis']:.4f} CPU-s/round  ratio {r['ratio']:.2f}  max|dw| {r['max_diff']:.1e}  first round "
              f"{r['first_sequential']:.1f} s / {r['first_client_axis']:.1f} s  ({r['execution']})", flush=True)
  finally:
    contexts.shutdown()


if __name__ == '__main__':
  app.run(main)
