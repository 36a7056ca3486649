"""Component: real-data tasks (mnist, fashion_mnist, shakespeare, emnist; `--model=char_lstm`) and central evaluation.

The tasks themselves are in the library's registry (`tff_fl.tasks_real`, registered when `tff_fl` is imported).
Flags: `--central_eval` (comma-separated splits among test, train; '' = off) adds `central_<split>_loss` /
`central_<split>_accuracy` columns every `--rounds_per_central_eval` rounds (0 = every `--rounds_per_eval`) and at the last round, computed on all clients'
examples of the split (mnist: the official 10k test set; shakespeare: pad targets excluded);
`--central_eval_max_examples` (> 0) evaluates a fixed seeded subsample instead.
"""

import dataclasses

from experiments import flag_groups
from tff_fl.simulation import central_eval


@dataclasses.dataclass
class CentralEvalConfig:
  central_eval: str = ''
  central_eval_max_examples: int = 0
  rounds_per_central_eval: int = 0


_HELP = {
    'central_eval': "comma-separated splits (test, train) on which to evaluate the server model centrally; '' = off",
    'central_eval_max_examples': 'if > 0, evaluate centrally on a fixed seeded subsample of this many examples',
    'rounds_per_central_eval': 'central evaluation every this many rounds (and at the last); 0 = --rounds_per_eval',
}


def define_flags() -> None:
  flag_groups.define_dataclass_flags(CentralEvalConfig, _HELP)


def configure(exp) -> None:
  cfg = flag_groups.from_flags(CentralEvalConfig)
  for name in ('central_eval_max_examples', 'rounds_per_central_eval'):
    if getattr(cfg, name) < 0:
      raise ValueError(f'--{name} must be >= 0; got {getattr(cfg, name)}.')
  splits = [s.strip() for s in cfg.central_eval.split(',') if s.strip()]
  if not splits:
    return
  exp.hooks.append(central_eval.CentralEvalHook(
      exp.task, lambda state: exp.process.get_model_weights(state), splits,
      every=cfg.rounds_per_central_eval or exp.loop_cfg.rounds_per_eval, total_rounds=exp.loop_cfg.total_rounds,
      max_examples=cfg.central_eval_max_examples or None, seed=exp.loop_cfg.seed))
