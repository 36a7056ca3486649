"""`--engine=tff|fast`: the simulation engine that runs fedavg / fedprox.

`tff` (default) is the stock path: one `tf.data` dataset per client per round. `fast` runs the same algorithm with
`tff_fl.simulation.fast` (the cohort packed into `--engine_slots` CLIENTS slots, each trained in one TF call; any
aggregator without secure sums keeps its per-client semantics): same data order and results up to float summation
order, much less time per round for small clients. Comes last in COMPONENTS: it keeps the dropouts and stragglers of
`regimes` / `stragglers` (their `RegimeInputs.reports` pick and cut the packed clients) and refuses experiments whose
other components changed the client inputs, the client work or the process (those are tf.data-based).
"""

from absl import flags

from experiments import flag_groups
from tff_fl.algorithms import builders
from tff_fl.simulation import regimes
from tff_fl.simulation.fast import engine as fast_engine
from tff_fl.simulation.fast import packing

FLAGS = flags.FLAGS
ENGINES = ('tff', 'fast')
FAST_ALGORITHMS = ('fedavg', 'fedprox')


def define_flags() -> None:
  flag_groups.define_flag('string', 'engine', 'tff', 'simulation engine: tff (stock, one tf.data dataset per '
                          'client) or fast (packed clients trained in one TF call per slot; same results)')
  flag_groups.define_flag('integer', 'engine_slots', 1, '--engine=fast: CLIENTS slots the cohort is split into')


def validate(engine: str, slots: int, exp) -> None:
  """One-line ValueErrors naming the flag; `exp` is the experiment as configured by the earlier components."""
  if engine not in ENGINES:
    raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got '{engine}'.")
  if slots < 1:
    raise ValueError(f'--engine_slots must be >= 1; got {slots}.')
  if engine == 'tff':
    return
  if exp.algo_cfg.algorithm not in FAST_ALGORITHMS:
    raise ValueError(f"--engine=fast runs --algorithm={' or '.join(FAST_ALGORITHMS)}; got "
                     f'--algorithm={exp.algo_cfg.algorithm}.')
  regime_inputs = isinstance(exp.client_inputs_fn, regimes.RegimeInputs)
  if ((exp.client_inputs_fn is not None and not regime_inputs) or exp.client_work_wrappers or
      exp.process_builder is not None or exp.process_wrappers):
    raise ValueError('--engine=fast cannot be combined with components that change client inputs (other than '
                     'dropouts/stragglers), client work or the process (attacks, hierarchical, pruning, drift, '
                     'preprocessing); use --engine=tff.')


def configure(exp) -> None:
  validate(FLAGS.engine, FLAGS.engine_slots, exp)
  if FLAGS.engine == 'tff':
    return
  loop = exp.loop_cfg
  regime = exp.client_inputs_fn  # None or a regimes.RegimeInputs (dropouts / stragglers), checked by validate.
  exp.client_inputs_fn = packing.build_client_inputs_fn(
      exp.task, epochs=loop.client_epochs_per_round, seed=loop.seed, num_groups=FLAGS.engine_slots,
      batch_size=loop.client_batch_size, reports_fn=regime.reports if regime is not None else None)

  def build_process(e):
    e.algo_cfg.validate()
    return fast_engine.build_fast_fed_avg(
        e.task.model_fn, e.client_optimizer, e.server_optimizer, batch_size=loop.client_batch_size,
        client_weighting=builders.WEIGHTINGS[e.algo_cfg.client_weighting], proximal_mu=e.algo_cfg.mu,
        model_aggregator=e.model_aggregator)

  exp.replace_process_builder(build_process, '--engine=fast')
