"""The full component pair matrix: every accepted pair of the test's representative components trained separately.

  nice -n 10 taskset -c 1 .venv/bin/python -m experiments.pair_matrix [--out_dir=/tmp/tff_fl/pair_matrix]
      [--json=PATH --reverse --skip_done_in=experiments/results/pair_matrix.json]  # a second process, other core
  .venv/bin/python -m experiments.pair_matrix --merge=PATH   # adds PATH's runs and pairs to the results
  .venv/bin/python -m experiments.pair_matrix --recheck      # the effect checks again, on the recorded runs' outputs

The components, the tiny task and the contract are tests/component_pairs.py's (the CI test,
tests/experiments/test_component_pairs.py, validates every pair before training, trains a covering set and each
component alone). Here every pair is first validated up to the process build, then every accepted pair, every
component alone and the baseline are trained (2 rounds, in this process), and per pair each member's effect is
checked against the run of the other alone: run(a, b) differs from run(b) as a declares (trains / personal models /
measures) and from run(a) as b declares; a result-neutral member (--workers, --engine=tff) leaves it equal up to
float summation order. Writes experiments/results/pair_matrix.md and .json (rewritten as runs finish, so a partial
matrix is readable); re-running reuses the finished runs recorded in the .json.
"""

import json
import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))  # The test's list and contract (tests/component_pairs.py).

# pylint: disable=g-import-not-at-top,wrong-import-position
import component_pairs as cp
from tff_fl.simulation import contexts

RESULTS = os.path.join(REPO, 'experiments', 'results')
RUN_TIMEOUT_S = 900


def _alarm(signum, frame):
  del signum, frame
  raise TimeoutError(f'run exceeded {RUN_TIMEOUT_S} s')


class Matrix:
  """Validation and training results of every pair, kept in pair_matrix.json."""

  def __init__(self, out_dir: str, json_path: str):
    self.out_dir, self.json_path = out_dir, json_path
    self.data = {'validated': {}, 'runs': {}, 'pairs': {}, 'singles': {}}
    if os.path.exists(json_path):
      with open(json_path) as f:
        self.data.update(json.load(f))

  def save(self):
    with open(self.json_path, 'w') as f:
      json.dump(self.data, f, indent=1, sort_keys=True)

  def train(self, components) -> dict:
    """The run's record (returncode, error line or crash, cpu seconds), training it if not recorded yet."""
    name = cp.run_name(components)
    if name in self.data['runs']:
      return self.data['runs'][name]
    t0 = time.process_time()
    signal.alarm(RUN_TIMEOUT_S)
    try:
      result = cp.train(components, self.out_dir)
    finally:
      signal.alarm(0)
    record = {'returncode': result.returncode, 'cpu_seconds': round(time.process_time() - t0, 1)}
    if cp.crashed(result):
      record['crash'] = (result.stderr + result.stdout)[-3000:]
    elif result.returncode == 2:
      record['error'] = cp.error_line(result.stderr) or result.stderr[-1500:]
    self.data['runs'][name] = record
    print(f"{name}: exit {record['returncode']} ({record['cpu_seconds']} cpu-s)", flush=True)
    return record

  def effects(self, components) -> list:
    """Each member's effect problem (None = as declared) against the run without it."""
    run = cp.outputs(self.out_dir, components)
    problems = []
    for member in components:
      others = [c for c in components if c is not member]
      problems.append(cp.effect_problem(member, run, cp.outputs(self.out_dir, others), others))
    return problems


def _done_elsewhere(path: str, key: str) -> bool:
  if not path or not os.path.exists(path):
    return False
  with open(path) as f:
    return key in json.load(f).get('pairs', {})


def merge(path: str) -> None:
  """Adds the runs, pairs and singles recorded in `path` (a second process's json) to the results."""
  matrix = Matrix('', os.path.join(RESULTS, 'pair_matrix.json'))
  with open(path) as f:
    other = json.load(f)
  for part in ('validated', 'runs', 'pairs', 'singles'):
    for k, v in other.get(part, {}).items():
      matrix.data[part].setdefault(k, v)
  matrix.save()
  write_report(matrix)


def recheck(out_dir: str) -> None:
  """Recomputes every trained pair's and component's effect check from the runs' outputs in `out_dir` (after a
  change of the contract in tests/component_pairs.py), and rewrites the results."""
  matrix = Matrix(out_dir, os.path.join(RESULTS, 'pair_matrix.json'))
  by_name = {c.name: c for c in cp.COMPONENTS}
  for name in list(matrix.data['singles']):
    matrix.data['singles'][name] = cp.effect_problem(by_name[name], cp.outputs(out_dir, [by_name[name]]),
                                                     cp.outputs(out_dir, []))
  for key, entry in matrix.data['pairs'].items():
    if 'effects' in entry:
      pair = [by_name[n] for n in key.split('+')]
      entry['effects'] = matrix.effects(pair)
      problems = [f'{c.name}: {p}' for c, p in zip(pair, entry['effects']) if p]
      entry['problem'] = '; '.join(problems) or None
  matrix.save()
  write_report(matrix)


def main(argv):
  """Flags (see module docstring): --out_dir (run outputs), --json (this process's record; default the results'),
  --reverse (pairs in reverse order), --skip_done_in (pairs already in that json are skipped), --merge, --recheck."""
  args = dict(a[2:].split('=', 1) if '=' in a else (a[2:], '') for a in argv[1:])
  if 'merge' in args:
    return merge(args['merge'])
  if 'recheck' in args:
    return recheck(args.get('out_dir', '/tmp/tff_fl/pair_matrix'))
  out_dir = args.get('out_dir', '/tmp/tff_fl/pair_matrix')
  os.makedirs(out_dir, exist_ok=True)
  signal.signal(signal.SIGALRM, _alarm)
  contexts.set_local_cpp_context()
  json_path = args.get('json', os.path.join(RESULTS, 'pair_matrix.json'))
  if not os.path.exists(json_path) and os.path.exists(os.path.join(RESULTS, 'pair_matrix.json')):
    with open(os.path.join(RESULTS, 'pair_matrix.json')) as f, open(json_path, 'w') as g:
      g.write(f.read())  # Starts from the results' record (its singles are trained in the same out_dir).
  matrix = Matrix(out_dir, json_path)
  started = time.time()
  pairs = cp.pairs()
  for a, b in pairs:  # Validation: cheap, before any training.
    key = f'{a.name}+{b.name}'
    if key not in matrix.data['validated']:
      result = cp.validate([a, b], os.path.join(out_dir, 'validation'))
      matrix.data['validated'][key] = None if result is None else {
          'returncode': result.returncode, 'error': cp.error_line(result.stderr) or result.stderr[-1500:],
          'problem': cp.refusal_problem(result, [a, b])}
  matrix.save()
  baseline = matrix.train([])
  assert baseline['returncode'] == 0, baseline
  for c in cp.COMPONENTS:
    record = matrix.train([c])
    if record['returncode'] == 0:
      matrix.data['singles'][c.name] = cp.effect_problem(c, cp.outputs(out_dir, [c]), cp.outputs(out_dir, []))
    matrix.save()
  for a, b in (reversed(pairs) if 'reverse' in args else pairs):
    key = f'{a.name}+{b.name}'
    if matrix.data['validated'][key] is not None or key in matrix.data['pairs']:
      continue
    if _done_elsewhere(args.get('skip_done_in', ''), key):
      continue
    record = matrix.train([a, b])
    entry = {'returncode': record['returncode']}
    if 'crash' in record:
      entry['problem'] = 'crash: ' + record['crash'].strip().splitlines()[-1]
    elif record['returncode'] == 2:
      problem = cp.refusal_problem(cp.train_binary.Result(2, '', record['error']), [a, b])
      entry.update(error=record['error'], problem=problem)
    elif all(matrix.data['runs'].get(cp.run_name([c]), {}).get('returncode') == 0 for c in (a, b)):
      effects = matrix.effects([a, b])
      entry['effects'] = effects
      problems = [f'{c.name}: {p}' for c, p in zip((a, b), effects) if p]
      entry['problem'] = '; '.join(problems) or None
    matrix.data['pairs'][key] = entry
    matrix.save()
    if json_path == os.path.join(RESULTS, 'pair_matrix.json'):
      write_report(matrix)
  matrix.data['wall_seconds_this_run'] = round(time.time() - started)
  matrix.save()
  if json_path == os.path.join(RESULTS, 'pair_matrix.json'):
    write_report(matrix)
  contexts.shutdown()


def _cell(matrix, a, b) -> str:
  if a is b:
    return ''
  if not cp.expressible(a, b):
    return '·'
  key = f'{a.name}+{b.name}' if f'{a.name}+{b.name}' in matrix.data['validated'] else f'{b.name}+{a.name}'
  refused = matrix.data['validated'].get(key)
  if refused is not None:
    return 'R' if refused['problem'] is None else '✗'
  entry = matrix.data['pairs'].get(key)
  if entry is None:
    return '?'
  if entry.get('problem'):
    return '✗'
  return 'r' if entry['returncode'] == 2 else '✓'


def write_report(matrix) -> None:
  data, comps = matrix.data, cp.COMPONENTS
  validated, trained = data['validated'], data['pairs']
  refused = {k: v for k, v in validated.items() if v is not None}
  failing = {k: v['problem'] for k, v in refused.items() if v['problem']}
  failing.update({k: v['problem'] for k, v in trained.items() if v.get('problem')})
  ran_ok = [k for k, v in trained.items() if v['returncode'] == 0 and not v.get('problem')]
  late_refusals = [k for k, v in trained.items() if v['returncode'] == 2 and not v.get('problem')]
  singles_bad = {k: v for k, v in data['singles'].items() if v}
  cpu = sum(r['cpu_seconds'] for r in data['runs'].values())
  lines = [
      '# Component pair matrix',
      '',
      'Generated by `nice -n 10 taskset -c 1 .venv/bin/python -m experiments.pair_matrix` (tests/component_pairs.py:'
      f" the components and the contract). Task: `{' '.join(cp.BASE)}`.",
      '',
      f'{len(comps)} components, {len(validated)} expressible pairs (two settings of one flag are not a pair): '
      f'**{len(ran_ok)} trained** with both members changing the run as declared, **{len(refused) - len([k for k in failing if k in refused])} '
      f'refused by design** before training (one `error:` line naming both flags), {len(late_refusals)} refused '
      f'while building the process, **{len(failing)} failing**, '
      f'{len(validated) - len(refused) - len(trained)} not run yet. Components alone: '
      f"{len(data['singles'])} trained, {len(singles_bad)} without their declared effect. "
      f'Training runs: {len(data["runs"])}, {cpu:.0f} CPU-s in this process.',
      '',
      '✓ trained, both members change the run as declared · R refused before training, naming both flags · r refused '
      'while building the process · ✗ failing (crash, no effect, or a refusal not naming both) · · one flag '
      '(not expressible) · ? not run yet',
      '',
      '| | ' + ' | '.join(f'{i}' for i in range(len(comps))) + ' |',
      '| --- ' * (len(comps) + 1) + '|',
  ]
  for i, a in enumerate(comps):
    lines.append(f'| {i} {a.name} | ' + ' | '.join(_cell(matrix, a, b) for b in comps) + ' |')
  lines += ['', '## Components', '', '| # | name | flags | declared effect | alone |', '| --- | --- | --- | --- | --- |']
  for i, c in enumerate(comps):
    alone = data['singles'].get(c.name, 'not run') or 'as declared'
    lines.append(f"| {i} | {c.name} | `{' '.join(c.flags)}` | {c.effect} | {alone} |")
  lines += ['', '## Failing pairs', '']
  lines += [f'- {k}: {v}' for k, v in sorted(failing.items())] or ['None.']
  lines += ['', '## Refused pairs (the one-line error)', '']
  for k, v in sorted(refused.items()):
    lines.append(f"- {k}: `{v['error']}`")
  for k in sorted(late_refusals):
    lines.append(f"- {k} (process build): `{trained[k]['error']}`")
  with open(os.path.join(RESULTS, 'pair_matrix.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main(sys.argv)
