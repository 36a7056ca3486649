"""The `--aggregator` flag: a small spec of stages chained with '>' from client to server.

    mean | median | trimmed_mean(0.1) | krum(2) | multi_krum(2,5) | clip(1.0)>trimmed_mean(0.1)
    quantize(8)>mean | topk(0.01)>mean | secure(16)>mean | adaptive_clip(0.5)>mean | clip(1.0)>secure(16,0.5)>mean
    secagg(16,0.6)>mean | secagg_plus(24,0.5,8)>mean | clip(1.0)>secagg(16,0.6,0.5)>mean

The last stage is the server-side aggregate; every earlier stage wraps the ones after it, so `a>b>c` builds
`a(inner=b(inner=c))`: the client value passes a first. `secure(bits[,range])` must come directly before `mean`
(secure aggregation hides individual values, which robust aggregates need); so must the protocol simulations
`secagg(bits,threshold[,range])` and `secagg_plus(bits,threshold,k[,range])` (`tff_fl.aggregators.secagg`:
masks in Z_{2^bits}, dropout recovery from t = ceil(threshold * holders) Shamir shares), which need the cohort
size and the engine's `SecAggInput` extension (`tff_fl.algorithms.secagg_input`). The result is always a
`tff.aggregators.WeightedAggregationFactory`. Every error is a one-line ValueError naming `--aggregator`.
"""

import dataclasses
import re
from typing import Callable, Optional

import tensorflow_federated as tff

from tff_fl.aggregators import clipping
from tff_fl.aggregators import compression
from tff_fl.aggregators import robust
from tff_fl.aggregators import secure
from tff_fl.aggregators.secagg import factory as secagg
from tff_fl.aggregators import weighting


@dataclasses.dataclass(frozen=True)
class _Stage:
  params: tuple[tuple[str, type], ...]  # (name, int|float); trailing ones past `required` are optional.
  required: int
  build: Callable  # (*args, inner=..., cohort_size=...) -> factory
  terminal: bool
  help: str


def _terminal(params, build, help_text, required=None):
  return _Stage(params, len(params) if required is None else required, build, True, help_text)


def _wrapper(params, build, help_text, required=None):
  return _Stage(params, len(params) if required is None else required, build, False, help_text)


_STAGES = {
    'mean': _terminal((), lambda cohort_size: weighting.mean(), 'weighted mean (weights from client work)'),
    'uniform_mean': _terminal((), lambda cohort_size: weighting.uniform_mean(), 'unweighted mean'),
    'median': _terminal((), lambda cohort_size: robust.median(cohort_size), 'coordinate-wise median'),
    'trimmed_mean': _terminal((('beta', float),), lambda b, cohort_size: robust.trimmed_mean(b, cohort_size),
                              'coordinate-wise trimmed mean, 0<=beta<0.5'),
    'krum': _terminal((('f', int),), lambda f, cohort_size: robust.krum(f, cohort_size),
                      'Krum tolerating f Byzantine clients (n > 2f+2)'),
    'multi_krum': _terminal((('f', int), ('m', int)), lambda f, m, cohort_size: robust.multi_krum(f, m, cohort_size),
                            'Multi-Krum: mean of the m best-scored clients'),
    'clip': _wrapper((('norm', float),), lambda n, inner: clipping.clip(n, inner), 'L2 clip to norm'),
    'adaptive_clip': _wrapper((('quantile', float),), lambda q, inner: clipping.adaptive_clip(q, inner),
                              'L2 clip at the estimated quantile of client norms'),
    'zeroing': _wrapper((('norm', float),), lambda n, inner: clipping.zeroing(n, inner),
                        'zero values with L2 norm > norm'),
    'adaptive_zeroing': _wrapper((('quantile', float),), lambda q, inner: clipping.adaptive_zeroing(q, inner),
                                 'zero values above 2*quantile+1'),
    'quantize': _wrapper((('bits', int),), lambda b, inner: compression.quantize(b, inner),
                         'stochastic b-bit quantization, 1<=bits<=16'),
    'topk': _wrapper((('fraction', float),), lambda f, inner: compression.topk(f, inner),
                     'keep the top fraction of coordinates by magnitude'),
    'secure': _wrapper((('bits', int), ('range', float)), None,
                       f'secure sum with bits in [1,{secure.MAX_BITS}], per-coordinate clip range (default 1.0); '
                       'only directly before mean', required=1),
    'secagg': _wrapper((('bits', int), ('threshold', float), ('range', float)), None,
                       f'SecAgg protocol: masks mod 2^bits (bits <= {secagg.masking.MAX_BITS}), threshold fraction '
                       'in (0,1] of the cohort for Shamir recovery, per-coordinate clip range (default 1.0); only '
                       'directly before mean', required=2),
    'secagg_plus': _wrapper((('bits', int), ('threshold', float), ('k', int), ('range', float)), None,
                            'SecAgg+: as secagg, masks and shares with k graph neighbours; only directly before mean',
                            required=3),
}

_BEFORE_MEAN = ('secure', 'secagg', 'secagg_plus')


def _spelling(name: str) -> str:
  stage = _STAGES[name]
  names = [p for p, _ in stage.params]
  if not names:
    return name
  required, optional = names[:stage.required], names[stage.required:]
  return f'{name}({",".join(required)}{"".join(f"[,{o}]" for o in optional)})'


ALLOWED_SPELLINGS = tuple(_spelling(n) for n in _STAGES)
_ALLOWED = ('allowed: stages chained with ">" from client to server, ending in one of '
            + ', '.join(_spelling(n) for n, s in _STAGES.items() if s.terminal)
            + '; earlier stages: ' + ', '.join(_spelling(n) for n, s in _STAGES.items() if not s.terminal)
            + ' (secure, secagg, secagg_plus only directly before mean)')
_STAGE_RE = re.compile(r'^([a-z_]+)\s*(?:\((.*)\))?$')


def describe() -> str:
  """Multi-line help text for --aggregator: every stage spelling and what it does."""
  lines = ['Aggregator spec: stages chained with ">" from client to server, e.g. clip(1.0)>trimmed_mean(0.1).']
  lines += [f'  {_spelling(n):28s} {s.help}{"" if s.terminal else " (wrapper)"}' for n, s in _STAGES.items()]
  return '\n'.join(lines)


def _error(spec: str, problem: str) -> ValueError:
  return ValueError(f'--aggregator={spec!r}: {problem}; {_ALLOWED}')


def _parse_number(spec, name, param, kind, text):
  text = text.strip()
  try:
    if kind is int:
      if not re.fullmatch(r'[+-]?\d+', text):
        raise ValueError
      return int(text)
    return float(text)
  except ValueError:
    raise _error(spec, f'{name} parameter {param} must be {"an int" if kind is int else "a number"}, '
                       f'got {text!r}') from None


def _parse_stage(spec: str, text: str):
  match = _STAGE_RE.match(text.strip())
  if not match or match.group(1) not in _STAGES:
    raise _error(spec, f'unknown stage {text.strip()!r}')
  name, arg_text = match.group(1), match.group(2)
  stage = _STAGES[name]
  args = [a for a in arg_text.split(',')] if arg_text not in (None, '') else []
  if not stage.required <= len(args) <= len(stage.params):
    raise _error(spec, f'{name} takes {_spelling(name)}, got {text.strip()!r}')
  values = [_parse_number(spec, name, p, kind, a) for (p, kind), a in zip(stage.params, args)]
  return name, stage, values


def stage_names(spec: str) -> list[str]:
  """The stage names of a valid `spec`, client to server (e.g. to see whether it runs SecAgg)."""
  return [_parse_stage(spec, part)[0] for part in spec.split('>')]


def build_aggregator(spec: str, cohort_size: Optional[int] = None,
                     seed: int = 0) -> tff.aggregators.WeightedAggregationFactory:
  """Builds the weighted aggregation factory described by `spec` (see module docstring).

  Args:
    spec: The `--aggregator` flag value.
    cohort_size: Clients per round, if known: robust stages then check it is large enough (ValueError); secagg
      stages need it (the most clients a round samples).
    seed: Seeds the secagg protocol's per-round secrets.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise _error(str(spec), 'empty spec')
  parsed = [_parse_stage(spec, part) for part in spec.split('>')]
  for position, (name, stage, _) in enumerate(parsed):
    last = position == len(parsed) - 1
    if stage.terminal != last:
      raise _error(spec, f'{name} must be {"the last" if stage.terminal else "followed by another"} stage')
    if name in _BEFORE_MEAN and parsed[position + 1][0] != 'mean':
      raise _error(spec, f'{name} must be directly followed by mean, not {parsed[position + 1][0]}')
    if name in ('secagg', 'secagg_plus') and cohort_size is None:
      raise _error(spec, f'{name} needs the cohort size (--clients_per_round)')
  try:
    name, stage, values = parsed[-1]
    factory = stage.build(*values, cohort_size=cohort_size)
    for name, stage, values in reversed(parsed[:-1]):
      if name == 'secure':
        factory = secure.secure_mean(*values)
      elif name in ('secagg', 'secagg_plus'):
        factory = _secagg(name, values, cohort_size, seed)
      else:
        factory = stage.build(*values, inner=factory)
  except (ValueError, TypeError) as e:
    raise _error(spec, str(e).splitlines()[0]) from None
  return factory


def _secagg(name, values, cohort_size, seed):
  bits, threshold = values[0], values[1]
  k = values[2] if name == 'secagg_plus' else None
  rest = values[3:] if name == 'secagg_plus' else values[2:]
  clip_range = rest[0] if rest else 1.0
  return secagg.SecAggMeanFactory(bits, threshold, k=k, max_clients=cohort_size, clip_range=clip_range, seed=seed)
