"""The pair matrix in CI (issue 14): every pair of the representative components (tests/component_pairs.py) composes
or is refused before training in one line naming both flags; a covering set of training runs exercises every
accepted pair; every component changes the run as it declares.

(a) every expressible pair through the binary up to the process build (the round is not traced): the refused pairs
    are exactly `component_pairs.REFUSED`, each with one `error:` line naming a flag of both; (b) a greedy
    strength-2 covering of the accepted pairs by multi-component training runs (2 rounds): exit 0, no traceback;
(c) each component alone against the baseline. (b) and (c) leave out the execution choices declared result-neutral
    (--workers, --engine=tff: their training runs start TFF workers, several times the cost of the others); their
    pairs are validated in (a), and their results equal the default's in tests/simulation/test_multi_worker.py and
    tests/engine/test_round.py. Every accepted pair trained separately with the effect per pair, those included:
    experiments/pair_matrix.py (experiments/results/pair_matrix.md).
"""

import pytest

import component_pairs as cp  # tests/component_pairs.py

TRAINED = [c for c in cp.COMPONENTS if c.effect != cp.NEUTRAL]
COVERING = cp.covering_runs({p for p in cp.accepted_pairs() if p <= {c.name for c in TRAINED}}, TRAINED)


def test_every_pair_is_accepted_or_refused_in_one_line_naming_both_flags(tmp_path):
  problems, refused = [], set()
  for c in cp.COMPONENTS:
    result = cp.validate([c], str(tmp_path))
    if result is not None:
      problems.append(f'{c.name} alone: exit {result.returncode}: {result.stderr[-500:]}')
  for a, b in cp.pairs():
    result = cp.validate([a, b], str(tmp_path))
    if result is None:
      continue
    refused.add(frozenset((a.name, b.name)))
    problem = cp.refusal_problem(result, [a, b])
    if problem:
      problems.append(f'{a.name}+{b.name}: {problem}')
  assert not problems, '\n'.join(problems)
  assert refused == set(cp.REFUSED), (f'refused, not declared: {[sorted(p) for p in refused - set(cp.REFUSED)]}; '
                                      f'declared, accepted: {[sorted(p) for p in set(cp.REFUSED) - refused]}')


def test_the_covering_runs_cover_every_accepted_pair():
  covered = {frozenset((a.name, b.name)) for run in COVERING for a in run for b in run if a is not b}
  trained = {c.name for c in TRAINED}
  assert covered >= {p for p in cp.accepted_pairs() if p <= trained} and not covered & set(cp.REFUSED)
  assert all(cp.expressible(*run) for run in COVERING)


@pytest.mark.parametrize('run', COVERING, ids=cp.run_name)
def test_covering_run_trains(tmp_path, run):
  result = cp.train(run, str(tmp_path))
  assert result.returncode == 0 and not cp.crashed(result), (
      f"{' '.join(cp.flags_of(run))}: exit {result.returncode}\n{result.stderr[-3000:]}")


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('baseline'))
  result = cp.train([], out)
  assert result.returncode == 0, result.stderr[-3000:]
  return cp.outputs(out, [])


@pytest.mark.parametrize('component', TRAINED, ids=lambda c: c.name)
def test_component_changes_the_run_as_declared(tmp_path, baseline, component):
  result = cp.train([component], str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  problem = cp.effect_problem(component, cp.outputs(str(tmp_path), [component]), baseline)
  assert problem is None, f'{component.name} ({component.effect}): {problem}'
