"""Parser for `--augment=flip,brightness(0.2),crop(2)` and `--client_preprocess=normalize(client),take(5)`.

A spec is a comma-separated list of `name` or `name(arg, ...)` items; commas inside parentheses separate arguments.
Each item becomes an `Op(name, args)`; `args` are floats, or words where an op allows them (`normalize(client)`).
Every error is a one-line ValueError naming the flag and what is allowed.

Augmentations (training data only, seeded per client, round and example):
  flip                random left-right flip, p = 0.5
  brightness(d)       add a uniform delta in [-d, d] to every pixel (d >= 0)
  contrast(f)         scale (x - mean) by a factor in [1 - f, 1 + f]; contrast(lo, hi) for [lo, hi] (0 <= lo <= hi)
  crop(p)             zero-pad p pixels on each side, then take a random crop of the original size (p >= 1)
  resize(s)           resize to s x s (bilinear), then take a random crop of the original size (s >= image side)
Client preprocessing:
  normalize(client)   (x - mean) / std with the client's own statistics, computed on the client
  normalize(m, s)     (x - m) / s with global constants (s > 0)
  shuffle(n)          shuffle buffer of n examples (default: the whole client dataset; 10000 if its size is unknown)
  take(n)             at most n batches per client per round (n >= 1)
"""

import dataclasses
import re

_ITEM = re.compile(r'^(?P<name>[a-z_]+)(\((?P<args>[^()]*)\))?$')

AUGMENTATIONS = {
    'flip': 'flip',
    'brightness': 'brightness(max_delta)',
    'contrast': 'contrast(f) or contrast(lower, upper)',
    'crop': 'crop(pad)',
    'resize': 'resize(size)',
}
PREPROCESSING = {
    'normalize': 'normalize(client) or normalize(mean, std)',
    'shuffle': 'shuffle(buffer)',
    'take': 'take(max_batches)',
}


@dataclasses.dataclass(frozen=True)
class Op:
  """One spec item: `name` and its arguments (floats, or words such as 'client')."""
  name: str
  args: tuple = ()


def _split_items(text: str, flag: str) -> list[str]:
  items, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += {'(': 1, ')': -1}.get(ch, 0)
    if depth < 0 or depth > 1:
      raise ValueError(f'--{flag}: unbalanced or nested parentheses in {text!r}.')
    if ch == ',' and depth == 0:
      items.append(text[start:i])
      start = i + 1
  if depth:
    raise ValueError(f'--{flag}: unbalanced parentheses in {text!r}.')
  items.append(text[start:])
  return [item.strip() for item in items]


def _arg(text: str):
  try:
    return float(text)
  except ValueError:
    return text


def parse(text: str, allowed: dict[str, str], flag: str) -> tuple[Op, ...]:
  """Parses a spec into Ops whose names are keys of `allowed` (syntax only; see `validate_*` for values)."""
  text = (text or '').strip()
  if not text or text == 'none':
    return ()
  ops = []
  for item in _split_items(text, flag):
    match = _ITEM.match(item.replace(' ', ''))
    if not match or match.group('name') not in allowed:
      raise ValueError(f"--{flag}: cannot parse {item!r}; allowed items: {', '.join(allowed.values())}.")
    raw = match.group('args')
    args = tuple(_arg(a) for a in raw.split(',')) if raw else ()
    ops.append(Op(match.group('name'), args))
  names = [op.name for op in ops]
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise ValueError(f"--{flag}: {', '.join(duplicated)} given more than once in {text!r}.")
  return tuple(ops)


def _numbers(op: Op, counts: tuple, flag: str) -> tuple:
  if len(op.args) not in counts or not all(isinstance(a, float) for a in op.args):
    allowed = AUGMENTATIONS.get(op.name) or PREPROCESSING[op.name]
    raise ValueError(f'--{flag}: {op.name} takes {" or ".join(map(str, counts))} number(s), as in {allowed}; '
                     f'got {op.name}{op.args}.')
  return op.args


def _check(ok: bool, flag: str, op: Op, what: str) -> None:
  if not ok:
    raise ValueError(f'--{flag}: {op.name} needs {what}; got {op.name}({", ".join(map(str, op.args))}).')


def parse_augment(text: str, flag: str = 'augment') -> tuple[Op, ...]:
  """Parses and validates an augmentation spec (see module docstring)."""
  ops = parse(text, AUGMENTATIONS, flag)
  for op in ops:
    if op.name == 'flip':
      _numbers(op, (0,), flag)
    elif op.name == 'brightness':
      _check(_numbers(op, (1,), flag)[0] >= 0, flag, op, 'max_delta >= 0')
    elif op.name == 'contrast':
      args = _numbers(op, (1, 2), flag)
      lower, upper = (1.0 - args[0], 1.0 + args[0]) if len(args) == 1 else args
      _check(0 <= lower <= upper, flag, op, '0 <= lower <= upper (contrast(f) means [1 - f, 1 + f], f <= 1)')
    elif op.name in ('crop', 'resize'):
      (value,) = _numbers(op, (1,), flag)
      _check(value >= 1 and value == int(value), flag, op, 'an integer >= 1')
  return ops


def parse_preprocess(text: str, flag: str = 'client_preprocess') -> tuple[Op, ...]:
  """Parses and validates a client preprocessing spec (see module docstring)."""
  ops = parse(text, PREPROCESSING, flag)
  for op in ops:
    if op.name == 'normalize':
      if op.args == ('client',):
        continue
      _check(len(op.args) == 2 and all(isinstance(a, float) for a in op.args) and op.args[1] > 0, flag, op,
             "'client' or two numbers mean, std with std > 0")
    else:
      (value,) = _numbers(op, (1,), flag)
      _check(value >= 1 and value == int(value), flag, op, 'an integer >= 1')
  return ops


def contrast_range(op: Op) -> tuple[float, float]:
  """(lower, upper) contrast factors of a validated contrast op."""
  return (1.0 - op.args[0], 1.0 + op.args[0]) if len(op.args) == 1 else (op.args[0], op.args[1])
