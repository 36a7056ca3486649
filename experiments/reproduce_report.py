"""Tables and curves for `experiments.reproduce`: rounds-to-target, FedProx orderings, final accuracy.

Every number comes from a run's metrics.csv rows (dicts with a 'round' key). Rounds-to-target follows McMahan et al.
(2017): the accuracy curve is made monotone by its running maximum and the crossing of the target is linearly
interpolated between the two evaluated rounds around it. PNGs are written with matplotlib's Agg backend.
"""

import collections
import os
from typing import Callable, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def rounds_to_target(rounds: Sequence[float], values: Sequence[float], target: float) -> Optional[float]:
  """First round at which the running max of `values` reaches `target`, interpolated linearly; None if never.

  If the first evaluated round already reaches the target, that round is returned (no earlier point to interpolate).
  """
  rounds, values = np.asarray(rounds, np.float64), np.asarray(values, np.float64)
  if rounds.shape != values.shape or rounds.ndim != 1:
    raise ValueError(f'rounds and values must be 1-D of equal length; got {rounds.shape} and {values.shape}')
  best = np.maximum.accumulate(values) if values.size else values
  hits = np.flatnonzero(best >= target)
  if hits.size == 0:
    return None
  i = int(hits[0])
  if i == 0:
    return float(rounds[0])
  r0, r1, a0, a1 = rounds[i - 1], rounds[i], best[i - 1], best[i]
  return float(r0 + (target - a0) / (a1 - a0) * (r1 - r0))


def curve(rows: Sequence[dict], column: str) -> tuple[np.ndarray, np.ndarray]:
  """(rounds, values) of the rows that have a numeric `column`."""
  pts = [(r['round'], r[column]) for r in rows if isinstance(r.get(column), (int, float))]
  if not pts:
    return np.zeros(0), np.zeros(0)
  rounds, values = zip(*pts)
  return np.asarray(rounds, np.float64), np.asarray(values, np.float64)


def last_value(rows: Sequence[dict], column: str) -> Optional[float]:
  _, values = curve(rows, column)
  return float(values[-1]) if values.size else None


def tail_std(rows: Sequence[dict], column: str, fraction: float = 0.5) -> Optional[float]:
  """Std of `column` over the last `fraction` of its evaluated rounds (instability of a curve)."""
  _, values = curve(rows, column)
  if values.size < 2:
    return None
  return float(np.std(values[-max(int(round(values.size * fraction)), 2):]))


def tail_mean(rows: Sequence[dict], column: str, fraction: float = 0.5) -> Optional[float]:
  """Mean of `column` over the last `fraction` of its evaluated rounds (a level less noisy than the last value)."""
  _, values = curve(rows, column)
  if values.size == 0:
    return None
  return float(np.mean(values[-max(int(round(values.size * fraction)), 1):]))


def mean_spread(values: Sequence[Optional[float]], digits: int = 3) -> str:
  """'mean ± std (n=k)' over the non-None values; '-' if none."""
  vals = np.asarray([v for v in values if v is not None], np.float64)
  if vals.size == 0:
    return '-'
  if vals.size == 1:
    return f'{vals[0]:.{digits}f}'
  return f'{vals.mean():.{digits}f} ± {vals.std():.{digits}f} (n={vals.size})'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def plot_panels(path: str, panels: Sequence[tuple], ylabel: str, ncols: Optional[int] = None) -> str:
  """One subplot per (title, lines, hline): lines = [(label, rounds, values[, matplotlib style dict])], `hline` an
  optional target line. Labels starting with '_' are left out of the legend."""
  ncols = min(ncols or 4, max(len(panels), 1))
  nrows = int(np.ceil(len(panels) / ncols))
  fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
  for ax, (title, lines, hline) in zip(axes.ravel(), panels):
    for label, rounds, values, *style in lines:
      ax.plot(rounds, values, label=label, linewidth=1.2, **(style[0] if style else {}))
    if hline is not None:
      ax.axhline(hline, color='gray', linestyle='--', linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('round')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if lines:
      ax.legend(fontsize=7)
  for ax in axes.ravel()[len(panels):]:
    ax.axis('off')
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _fmt(value, digits=1, suffix=''):
  return '-' if value is None else f'{value:.{digits}f}{suffix}'


def _per_run_section(suite, results, out_dir: str, ours, ours_header: Sequence[str], ncols=None) -> str:
  """One table row per (run, seed): config, paper, `ours(run, result)` cells, settings, seed, rounds used, wall
  time; one PNG panel per run with a curve per seed (and the target line, if any)."""
  table, panels = [], []
  for run in suite.runs:
    mine = [r for r in results if r.run.name == run.name]
    if not mine:
      continue
    for res in mine:
      table.append([run.label, run.paper, *ours(run, res), res.settings, res.seed, res.rounds_used,
                    _fmt(res.wall_seconds / 60, 1, ' min')])
    title = run.label + (f' (paper {run.paper_rounds:g} rounds)' if run.target is not None else '')
    panels.append((title, [(f'seed {r.seed}', *curve(r.rows, run.metric)) for r in mine], run.target))
  png = plot_panels(os.path.join(out_dir, f'{suite.name}_accuracy.png'), panels, run_metric(suite), ncols)
  header = ['config', 'paper', *ours_header, 'settings', 'seed', 'rounds used', 'wall']
  return markdown_table(header, table) + f'\n\n![curves]({os.path.basename(png)})\n'


def _rounds_to_target_cells(run, res) -> list[str]:
  rounds, acc = curve(res.rows, run.metric)
  hit = rounds_to_target(rounds, acc, run.target)
  if hit is not None:
    return [f'{hit:.1f}', f'{hit / run.paper_rounds:.2f}x']
  return [f'not reached (best {acc.max():.4f})' if acc.size else 'no data', '-']


def rounds_to_target_section(suite, results, out_dir: str) -> str:
  """McMahan-style table: paper rounds vs ours (interpolated rounds to target, ratio) per seed; one PNG."""
  return _per_run_section(suite, results, out_dir, _rounds_to_target_cells,
                          ['ours: rounds to target', 'ours / paper'], ncols=2)


def run_metric(suite) -> str:
  return suite.runs[0].metric if suite.runs else ''


def fedprox_claims(iid: bool, stragglers: float) -> list[tuple[str, Callable[[dict, dict], bool]]]:
  """The paper's claims (Li et al. 2020, Fig. 1-2) for one (dataset, stragglers) cell, each a name and a test of one
  seed's FedAvg and FedProx stats (dicts with `loss` = mean train loss over the last half of the evaluated rounds,
  final `acc`, `instab`): without stragglers mu=1 slows
  Synthetic-IID and lowers the train loss on the heterogeneous sets; at 90% stragglers FedProx beats FedAvg in final
  accuracy and stability. The 50% cells carry no claim."""
  claims = []
  if stragglers == 0:
    claims.append(('mu=1 slows IID (higher loss)', lambda a, p: p['loss'] > a['loss']) if iid else
                  ('mu=1 lower loss', lambda a, p: p['loss'] < a['loss']))
  if stragglers >= 0.9:
    claims += [('higher acc', lambda a, p: p['acc'] > a['acc']),
               ('more stable', lambda a, p: p['instab'] < a['instab'])]
  return claims


def _claims_per_seed(claims, base_runs, prox_runs) -> str:
  """'claim: k/n seeds; ...' over the seeds both algorithms ran (same data seed = a paired comparison)."""
  if not claims:
    return '-'
  stats = lambda r: dict(loss=tail_mean(r.rows, 'central_train_loss'), acc=last_value(r.rows, 'eval_accuracy'),
                         instab=tail_std(r.rows, 'eval_accuracy'))
  base = {r.seed: stats(r) for r in base_runs}
  pairs = [(base[r.seed], stats(r)) for r in prox_runs if r.seed in base]
  pairs = [(a, p) for a, p in pairs if None not in a.values() and None not in p.values()]
  if not pairs:
    return '-'
  return '; '.join(f'{name}: {sum(test(a, p) for a, p in pairs)}/{len(pairs)} seeds' for name, test in claims)


def fedprox_section(suite, results, out_dir: str) -> str:
  """FedAvg vs FedProx per (dataset, stragglers): train loss (mean over the last half of the evaluated rounds) and
  final test accuracy (each mean ± std over seeds),
  instability (std of test accuracy over the last half of the run), whether the means are ordered as the paper
  says, and in how many paired seeds each of the paper's claims for the cell holds."""
  by_key = collections.defaultdict(list)
  for res in results:
    by_key[(res.run.group, res.run.stragglers, res.run.label)].append(res)
  groups = list(dict.fromkeys(r.group for r in suite.runs))
  levels = sorted({r.stragglers for r in suite.runs})
  labels = list(dict.fromkeys(r.label for r in suite.runs))
  table, loss_panels, acc_panels = [], [], []
  for level in levels:
    for group in groups:
      cells = {lab: by_key.get((group, level, lab), []) for lab in labels}
      if not any(cells.values()):
        continue
      stats = {lab: dict(loss=[tail_mean(r.rows, 'central_train_loss') for r in rs],
                         acc=[last_value(r.rows, 'eval_accuracy') for r in rs],
                         instab=[tail_std(r.rows, 'eval_accuracy') for r in rs]) for lab, rs in cells.items()}
      base, prox = labels[0], labels[-1]
      mean = lambda lab, key: (np.mean([v for v in stats[lab][key] if v is not None])
                               if any(v is not None for v in stats[lab][key]) else None)
      lower_loss = (None if mean(prox, 'loss') is None or mean(base, 'loss') is None
                    else bool(mean(prox, 'loss') < mean(base, 'loss')))
      better_acc = (None if mean(prox, 'acc') is None or mean(base, 'acc') is None
                    else bool(mean(prox, 'acc') > mean(base, 'acc')))
      table.append([group, f'{level:.0%}'] +
                   [mean_spread(stats[lab]['loss']) for lab in labels] +
                   [mean_spread(stats[lab]['acc']) for lab in labels] +
                   [mean_spread(stats[lab]['instab']) for lab in labels] +
                   [_yes_no(lower_loss), _yes_no(better_acc),
                    _claims_per_seed(fedprox_claims(all(r.run.iid for rs in cells.values() for r in rs), level),
                                     cells[base], cells[prox]),
                    max(r.rounds_used for rs in cells.values() for r in rs),
                    ','.join(str(r.seed) for r in cells[prox] or cells[base]),
                    _fmt(sum(r.wall_seconds for rs in cells.values() for r in rs) / 60, 1, ' min')])
      title = f'{group}, {level:.0%} stragglers'
      for panels, column in ((loss_panels, 'central_train_loss'), (acc_panels, 'eval_accuracy')):
        panels.append((title, [(lab if i == 0 else f'_{lab}', *curve(r.rows, column), {'color': f'C{j}'})
                               for j, lab in enumerate(labels) for i, r in enumerate(cells[lab])], None))
  ncols = max(len(groups), 1)
  loss_png = plot_panels(os.path.join(out_dir, f'{suite.name}_train_loss.png'), loss_panels, 'train loss', ncols)
  acc_png = plot_panels(os.path.join(out_dir, f'{suite.name}_test_accuracy.png'), acc_panels, 'test accuracy', ncols)
  header = (['dataset', 'stragglers'] + [f'train loss {lab} (last half)' for lab in labels] +
            [f'test acc {lab}' for lab in labels] + [f'acc instability {lab}' for lab in labels] +
            [f'{labels[-1]} lower loss', f'{labels[-1]} higher acc', "paper's claim holds", 'rounds used', 'seeds',
             'wall'])
  return (markdown_table(header, table) + f'\n\n![train loss]({os.path.basename(loss_png)})\n'
          f'![test accuracy]({os.path.basename(acc_png)})\n')


def _yes_no(flag: Optional[bool]) -> str:
  return '-' if flag is None else ('yes' if flag else 'no')


def _last_with_round(rows: Sequence[dict], column: str) -> str:
  """'0.4634 (round 110)': the last measured value and when it was measured (evaluations can be sparse)."""
  rounds, values = curve(rows, column)
  return f'{values[-1]:.4f} (round {int(rounds[-1])})' if values.size else '-'


def final_accuracy_section(suite, results, out_dir: str) -> str:
  """Accuracy after the rounds used, next to the paper's number; one PNG of the curves."""
  cells = lambda run, res: [_last_with_round(res.rows, run.metric), _last_with_round(res.rows, 'eval_accuracy')]
  return _per_run_section(suite, results, out_dir, cells,
                          [f'ours: {run_metric(suite)}', 'ours: eval_accuracy (all targets)'])


def _best_and_final(rows: Sequence[dict], column: str) -> tuple[Optional[float], Optional[float]]:
  _, values = curve(rows, column)
  return (float(values.max()), float(values[-1])) if values.size else (None, None)


def niid_bench_section(suite, results, out_dir: str) -> str:
  """NIID-Bench table: per (dataset, partition) row and algorithm, best-round and final-round test accuracy (mean ±
  std over the seeds run), with the rounds each seed completed (partial when fewer than the paper's); one PNG panel
  per (dataset, partition) with a curve per algorithm and seed."""
  metric = run_metric(suite)
  labels = list(dict.fromkeys(r.label for r in suite.runs))
  groups = list(dict.fromkeys(r.group for r in suite.runs))
  by_cell = collections.defaultdict(list)
  for res in results:
    by_cell[(res.run.group, res.run.label)].append(res)
  table, panels, status = [], [], []
  for group in groups:
    cells = {lab: sorted(by_cell.get((group, lab), []), key=lambda r: r.seed) for lab in labels}
    if not any(cells.values()):
      continue
    row = [group]
    for lab in labels:
      stats = [_best_and_final(r.rows, metric) for r in cells[lab]]
      rounds = ','.join(f'{r.rounds_used}' for r in cells[lab])
      partial = any(r.rounds_used < (r.run.paper_rounds or 0) for r in cells[lab])
      row.append('-' if not cells[lab] else
                 f"{mean_spread([b for b, _ in stats])} / {mean_spread([f for _, f in stats])} "
                 f"({'partial, ' if partial else ''}rounds {rounds})")
      for r in cells[lab]:
        wall = _fmt(r.wall_seconds / 60, 1, ' min') if np.isfinite(r.wall_seconds) else '- (first invocation running)'
        status.append([r.run.name, r.seed, r.rounds_used, 'partial' if r.rounds_used < (r.run.paper_rounds or 0)
                       else 'complete', wall])
    table.append(row)
    panels.append((group, [(f'_{lab}' if i else lab, *curve(r.rows, metric), {'color': f'C{j}'})
                           for j, lab in enumerate(labels) for i, r in enumerate(cells[lab])], None))
  png = plot_panels(os.path.join(out_dir, f'{suite.name}_accuracy.png'), panels, metric, ncols=2)
  header = ['dataset, partition'] + [f'{lab}: best / final' for lab in labels]
  return (markdown_table(header, table) + f'\n\n![curves]({os.path.basename(png)})\n\n' +
          markdown_table(['run', 'seed', 'rounds', 'status', 'wall (all invocations)'], status) + '\n')


SECTIONS = {'rounds_to_target': rounds_to_target_section, 'fedprox': fedprox_section,
            'final_accuracy': final_accuracy_section, 'niid_bench': niid_bench_section}
