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
`tff.aggregators.WeightedAggregationFactory`. Every error is a one-line ValueError starting `aggregator=<spec>:` and
listing the allowed stages. Stages live in the `STAGES` registry; `register_stage` adds one (e.g. from a user module
loaded with the binary's `--plugin`).
"""

import dataclasses
import re
from typing import Callable, Optional

import tensorflow_federated as tff

from tff_fl import registry
from tff_fl.aggregators import clipping
from tff_fl.aggregators import compression
from tff_fl.aggregators import robust
from tff_fl.aggregators import secure
from tff_fl.aggregators.secagg import factory as secagg
from tff_fl.aggregators import weighting


@dataclasses.dataclass(frozen=True)
class Stage:
  """One spelling of the spec. A terminal stage builds `build(*values, cohort_size=...)` (the server aggregate; it
  must come last); a wrapper builds `build(*values, inner=factory)` around the stages after it. `params` are
  (name, int|float); those past `required` are optional. `only_before` names the one stage that must follow it;
  a `needs_cohort` wrapper's build also gets `cohort_size=` and `seed=`, a `seeded` one `seed=` (its randomness)."""
  params: tuple[tuple[str, type], ...]
  required: int
  build: Callable
  terminal: bool
  help: str
  only_before: Optional[str] = None
  needs_cohort: bool = False
  seeded: bool = False


STAGES = registry.Registry('aggregator stage')  # name -> Stage


def register_stage(name: str, build: Callable, *, terminal: bool, params: tuple = (), required: Optional[int] = None,
                   help_text: str = '', only_before: Optional[str] = None, needs_cohort: bool = False,
                   seeded: bool = False) -> Stage:
  """Adds stage `name` to the spec grammar (a name taken is a ValueError); see `Stage`. `build` returns a
  `tff.aggregators.WeightedAggregationFactory` (or an unweighted one for a wrapper's value path). A wrapper with
  `needs_cohort` also gets `cohort_size=` and `seed=` (build_aggregator's) and refuses a spec without cohort_size;
  a `seeded` wrapper gets `seed=` (its random draws repeat with the seed)."""
  for param in params:
    if len(param) != 2 or param[1] not in (int, float):
      raise ValueError(f'params of stage {name!r} are (name, int|float) pairs; got {param!r}.')
  stage = Stage(tuple(params), len(params) if required is None else required, build, terminal, help_text,
                only_before, needs_cohort, seeded)
  return STAGES.register(name, stage)


def _secagg(bits, threshold, *rest, inner, cohort_size, seed, plus=False):
  del inner  # The protocol's weighted mean replaces the mean after it.
  k, rest = (rest[0], rest[1:]) if plus else (None, rest)
  return secagg.SecAggMeanFactory(bits, threshold, k=k, max_clients=cohort_size, clip_range=rest[0] if rest else 1.0,
                                  seed=seed)


register_stage('mean', lambda cohort_size: weighting.mean(), terminal=True,
               help_text='weighted mean (weights from client work)')
register_stage('uniform_mean', lambda cohort_size: weighting.uniform_mean(), terminal=True,
               help_text='unweighted mean')
register_stage('median', lambda cohort_size: robust.median(cohort_size), terminal=True,
               help_text='coordinate-wise median')
register_stage('trimmed_mean', lambda b, cohort_size: robust.trimmed_mean(b, cohort_size), terminal=True,
               params=(('beta', float),), help_text='coordinate-wise trimmed mean, 0<=beta<0.5')
register_stage('krum', lambda f, cohort_size: robust.krum(f, cohort_size), terminal=True, params=(('f', int),),
               help_text='Krum tolerating f Byzantine clients (n > 2f+2)')
register_stage('multi_krum', lambda f, m, cohort_size: robust.multi_krum(f, m, cohort_size), terminal=True,
               params=(('f', int), ('m', int)), help_text='Multi-Krum: mean of the m best-scored clients')
register_stage('clip', lambda n, inner: clipping.clip(n, inner), terminal=False, params=(('norm', float),),
               help_text='L2 clip to norm')
register_stage('adaptive_clip', lambda q, inner: clipping.adaptive_clip(q, inner), terminal=False,
               params=(('quantile', float),), help_text='L2 clip at the estimated quantile of client norms')
register_stage('zeroing', lambda n, inner: clipping.zeroing(n, inner), terminal=False, params=(('norm', float),),
               help_text='zero values with L2 norm > norm')
register_stage('adaptive_zeroing', lambda q, inner: clipping.adaptive_zeroing(q, inner), terminal=False,
               params=(('quantile', float),), help_text='zero values above 2*quantile+1')
register_stage('quantize', lambda b, inner, seed: compression.quantize(b, inner, seed), terminal=False,
               params=(('bits', int),), seeded=True, help_text='stochastic b-bit quantization, 1<=bits<=16')
register_stage('topk', lambda f, inner: compression.topk(f, inner), terminal=False, params=(('fraction', float),),
               help_text='keep the top fraction of coordinates by magnitude')
# The secure sum replaces the mean after it (it hides individual values, which robust aggregates need).
register_stage('secure', lambda *values, inner, seed: secure.secure_mean(*values, seed=seed), terminal=False,
               params=(('bits', int), ('range', float)), required=1, only_before='mean', seeded=True,
               help_text=f'secure sum with bits in [1,{secure.MAX_BITS}], per-coordinate clip range (default 1.0); '
               'only directly before mean')
register_stage('secagg', _secagg, terminal=False, params=(('bits', int), ('threshold', float), ('range', float)),
               required=2, only_before='mean', needs_cohort=True,
               help_text=f'SecAgg protocol: masks mod 2^bits (bits <= {secagg.masking.MAX_BITS}), threshold fraction '
               'in (0,1] of the cohort for Shamir recovery, per-coordinate clip range (default 1.0); only directly '
               'before mean')
register_stage('secagg_plus', lambda *values, **kwargs: _secagg(*values, plus=True, **kwargs), terminal=False,
               params=(('bits', int), ('threshold', float), ('k', int), ('range', float)), required=3,
               only_before='mean', needs_cohort=True,
               help_text='SecAgg+: as secagg, masks and shares with k graph neighbours; only directly before mean')


def _spelling(name: str) -> str:
  stage = STAGES.get(name)
  names = [p for p, _ in stage.params]
  if not names:
    return name
  required, optional = names[:stage.required], names[stage.required:]
  return f'{name}({",".join(required)}{"".join(f"[,{o}]" for o in optional)})'


def allowed_spellings() -> tuple[str, ...]:
  """Every registered stage's spelling, e.g. 'trimmed_mean(beta)', 'secure(bits[,range])'."""
  return tuple(_spelling(n) for n in STAGES)


def _allowed() -> str:
  before = {}
  for n, s in STAGES.items():
    if s.only_before:
      before.setdefault(s.only_before, []).append(n)
  only = [f'{", ".join(names)} only directly before {after}' for after, names in before.items()]
  return ('allowed: stages chained with ">" from client to server, ending in one of '
          + ', '.join(_spelling(n) for n, s in STAGES.items() if s.terminal)
          + '; earlier stages: ' + ', '.join(_spelling(n) for n, s in STAGES.items() if not s.terminal)
          + (f" ({'; '.join(only)})" if only else ''))


_STAGE_RE = re.compile(r'^([a-z_]+)\s*(?:\((.*)\))?$')


def describe() -> str:
  """Multi-line help text for the spec: every registered stage's spelling and what it does."""
  lines = ['Aggregator spec: stages chained with ">" from client to server, e.g. clip(1.0)>trimmed_mean(0.1).']
  lines += [f'  {_spelling(n):28s} {s.help}{"" if s.terminal else " (wrapper)"}' for n, s in STAGES.items()]
  return '\n'.join(lines)


def _error(spec: str, problem: str) -> ValueError:
  return ValueError(f'aggregator={spec!r}: {problem}; {_allowed()}')


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
  if not match or match.group(1) not in STAGES:
    raise _error(spec, f'unknown stage {text.strip()!r}')
  name, arg_text = match.group(1), match.group(2)
  stage = STAGES.get(name)
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
    spec: The spec (the binary's `--aggregator` flag value).
    cohort_size: Clients per round, if known: robust stages then check it is large enough (ValueError); secagg
      stages need it (the most clients a round samples).
    seed: Seeds the secagg protocol's per-round secrets and the stochastic rounding of quantize and secure.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise _error(str(spec), 'empty spec')
  parsed = [_parse_stage(spec, part) for part in spec.split('>')]
  for position, (name, stage, _) in enumerate(parsed):
    last = position == len(parsed) - 1
    if stage.terminal != last:
      raise _error(spec, f'{name} must be {"the last" if stage.terminal else "followed by another"} stage')
    if stage.only_before and parsed[position + 1][0] != stage.only_before:
      raise _error(spec, f'{name} must be directly followed by {stage.only_before}, not {parsed[position + 1][0]}')
    if stage.needs_cohort and cohort_size is None:
      raise _error(spec, f'{name} needs cohort_size (the most clients a round samples)')
  try:
    name, stage, values = parsed[-1]
    factory = stage.build(*values, cohort_size=cohort_size)
    for name, stage, values in reversed(parsed[:-1]):
      extra = (dict(cohort_size=cohort_size, seed=seed) if stage.needs_cohort else
               dict(seed=seed) if stage.seeded else {})
      factory = stage.build(*values, inner=factory, **extra)
  except (ValueError, TypeError) as e:
    raise _error(spec, str(e).splitlines()[0]) from None
  return factory

