"""Structured absl flags: one group per component, generated from the component's config dataclass.

`define_dataclass_flags(TaskConfig)` defines one flag per field (name, type and default from the dataclass; help
from `help`), and `from_flags(TaskConfig)` builds the dataclass back from parsed flags, so a component's Python
config and its flags cannot drift apart. Optimizer flags are generated per prefix (`client_`, `server_`).
"""

import dataclasses
import re
from typing import Any

from absl import flags

from tff_fl.algorithms import optimizers

FLAGS = flags.FLAGS
_GROUP_FLAGS: list[str] = []


def define_dataclass_flags(cls, help_text: dict[str, str]) -> None:
  for field in dataclasses.fields(cls):
    if field.name in FLAGS:
      continue
    default, text = field.default, help_text.get(field.name, field.name.replace('_', ' '))
    kind = field.type if isinstance(field.type, type) else type(default)
    if kind is bool:
      flags.DEFINE_bool(field.name, default, text)
    elif kind is int:
      flags.DEFINE_integer(field.name, default, text)
    elif kind is float:
      flags.DEFINE_float(field.name, default, text)
    else:
      flags.DEFINE_string(field.name, default, text)
    _GROUP_FLAGS.append(field.name)


def from_flags(cls):
  return cls(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(cls)})


def define_optimizer_flags(prefix: str, default_optimizer: str, default_lr: float) -> None:
  """--{prefix}_optimizer, _learning_rate, _momentum, _beta_1, _beta_2, _epsilon, _weight_decay."""
  flags.DEFINE_string(f'{prefix}_optimizer', default_optimizer, f"{prefix} optimizer: {', '.join(optimizers.OPTIMIZERS)}")
  flags.DEFINE_float(f'{prefix}_learning_rate', default_lr, f'{prefix} learning rate (> 0)')
  flags.DEFINE_float(f'{prefix}_momentum', 0.9, f'{prefix} momentum, for --{prefix}_optimizer=momentum')
  flags.DEFINE_float(f'{prefix}_beta_1', 0.9, f'{prefix} first-moment decay (adam, yogi)')
  flags.DEFINE_float(f'{prefix}_beta_2', 0.99, f'{prefix} second-moment decay (adam, yogi)')
  flags.DEFINE_float(f'{prefix}_epsilon', 1e-3, f'{prefix} adaptivity tau (adam, yogi, adagrad)')
  flags.DEFINE_float(f'{prefix}_weight_decay', 0.0, f'{prefix} L2 weight decay added to the gradient before any '
                     "optimizer's step (PyTorch SGD's weight_decay; >= 0)")
  _GROUP_FLAGS.extend(f'{prefix}_{n}' for n in ('optimizer', 'learning_rate', 'momentum', 'beta_1', 'beta_2', 'epsilon',
                                                'weight_decay'))


def optimizer_from_flags(prefix: str):
  get = lambda n: FLAGS[f'{prefix}_{n}'].value
  return optimizers.build_optimizer(get('optimizer'), get('learning_rate'), momentum=get('momentum'),
                                    beta_1=get('beta_1'), beta_2=get('beta_2'), epsilon=get('epsilon'),
                                    weight_decay=get('weight_decay'), name_prefix=prefix)


def define_flag(kind: str, name: str, default, text: str) -> None:
  """Defines a flag that belongs to the experiment's hyperparameters (written to hparams.json)."""
  getattr(flags, f'DEFINE_{kind}')(name, default, text)
  _GROUP_FLAGS.append(name)


def hparams() -> dict[str, Any]:
  """Every experiment flag's value, in definition order."""
  return {name: FLAGS[name].value for name in _GROUP_FLAGS}


def defaults() -> dict[str, Any]:
  """Every experiment flag's default value (a checkpoint written before a flag existed matches its default)."""
  return {name: FLAGS[name].default for name in _GROUP_FLAGS}


_ARGUMENT_RE = re.compile(r'(?<![\w\-.`\'"/])([a-z][a-z0-9_]*)(?==|:\s|$|\s(?:must|needs|applies|allows|and|or|>=?|<=?)\s)')
_PROSE_BEFORE = ('the ', 'a ', 'an ', 'each ', 'every ', 'this ', 'its ', 'whose ')


def flag_message(message: str) -> str:
  """A library error naming Python arguments (`algorithm=scaffold`, `mu must be >= 0`) reworded with the flags of
  the same names (`--algorithm=scaffold`, `--mu must be >= 0`); words that are not flags, or follow an article
  ('the model must ...'), are left alone."""
  def flagged(match):
    name = match.group(1)
    before = message[max(0, match.start() - 8):match.start()]
    if name not in FLAGS or before.endswith(_PROSE_BEFORE):
      return name
    return f'--{name}'
  return _ARGUMENT_RE.sub(flagged, message)
