"""What a run under `--dp` / `--sample_dp` releases, and what covers it: the privacy component's declared list.

Every value a run writes (metrics.csv columns and so TensorBoard, summary.json keys, clients.csv) or a flag that
would make it compute something from client data outside the DP mechanism has one `Release` entry below, with
its status under client-level DP (`--dp=fixed|adaptive|tree`) and under example-level DP-SGD (`--sample_dp`):

  accounted            inside the DP mechanism or post-processing of its output (the model update through the DP
                       aggregator, the model itself): covered by the reported epsilon
  public               not derived from client data (round number, fixed cohort size, timings, the accountant's
                       own output, seeded simulation of dropouts and attacks)
  evaluation           the released model evaluated on held-out examples that training never reads (pooled, never
                       per client): post-processing w.r.t. the training data epsilon protects; the held-out examples
                       themselves are not protected (as in DP papers' test accuracy)
  suppressed-under-dp  not written (summary.json's privacy.released.suppressed lists it with the reason)
  refused-under-dp     the flag that would compute it is refused before training (one line naming both flags)

With both flags a value is written only if both statuses allow it. A name no entry matches is suppressed (default
deny), so a new metric is never released next to an epsilon that does not cover it. Per-client evaluation is
suppressed even on held-out data: a figure about one identified client is what client-level DP promises not to
publish, and in a deployment it is computed on that client's device.
"""

import collections
import dataclasses
from typing import Callable, Optional

from tff_fl.algorithms import definition
from tff_fl.simulation import outputs

ACCOUNTED, PUBLIC, EVALUATION = 'accounted', 'public', 'evaluation'
SUPPRESSED, REFUSED = 'suppressed-under-dp', 'refused-under-dp'


@dataclasses.dataclass(frozen=True)
class Release:
  """`name`: fnmatch pattern of metrics.csv columns / summary.json keys, a file, or what a refused flag computes.
  `client_dp` / `sample_dp`: status under --dp / --sample_dp; `poisson`: status under --dp with
  --client_sampling=poisson when it differs. `refuse_when(flags)` -> the flag as typed (e.g. '--drift_metrics')
  when it is on, for refused entries checked from flags; `reason` says why."""
  name: str
  client_dp: str
  sample_dp: str
  reason: str
  poisson: Optional[str] = None
  refuse_when: Optional[Callable] = None


def _flag(flags, name, default=None):
  return flags[name].value if name in flags else default


def _on(name: str) -> Callable:
  return lambda flags: f'--{name}' if _flag(flags, name) else ''


def _finetune(flags) -> str:
  return f"--finetune_epochs={_flag(flags, 'finetune_epochs')}" if (_flag(flags, 'finetune_epochs') or 0) > 0 else ''


def _ditto(flags) -> str:
  return '--algorithm=ditto' if _flag(flags, 'algorithm') == 'ditto' else ''


def _central_train(flags) -> str:
  splits = [s.strip() for s in (_flag(flags, 'central_eval') or '').split(',')]
  return f"--central_eval={_flag(flags, 'central_eval')}" if 'train' in splits else ''


def _cluster_by(flags) -> str:
  by = _flag(flags, 'cluster_by')
  return f'--cluster_by={by}' if _flag(flags, 'hierarchical') and by in ('labels', 'updates') else ''


def _normalize_client(flags) -> str:
  spec = (_flag(flags, 'client_preprocess') or '').replace(' ', '')
  return f"--client_preprocess={_flag(flags, 'client_preprocess')}" if 'normalize(client)' in spec else ''


_COHORT = ('under --client_sampling=poisson the number of sampled clients depends on the population, which '
           "add/remove adjacency protects (DP-FedAvg divides by the expected count for this reason)")

RELEASES = (
    # Public: configuration, progress, the accountant, timings, the seeded simulation.
    Release('round', PUBLIC, PUBLIC, 'the round number'),
    Release('round_seconds', PUBLIC, PUBLIC, 'wall time of the simulated round (a timing side channel of a '
            'deployment is not modelled)'),
    Release('train_seconds_this_run', PUBLIC, PUBLIC, 'wall time of the run'),
    Release('clients', PUBLIC, PUBLIC, 'the cohort size, fixed by --clients_per_round (uniform, cyclic sampling); '
            + _COHORT, poisson=SUPPRESSED),
    Release('rounds_completed', PUBLIC, PUBLIC, 'progress of the loop'),
    Release('stop_reason', PUBLIC, PUBLIC, 'completed, or the budget stop, which depends on the accountant only'),
    Release('epsilon', PUBLIC, PUBLIC, "the client-level accountant's output (flags and sampling, not data)"),
    Release('example_epsilon', PUBLIC, PUBLIC, "the example-level accountant's output (flags and the seeded "
            "cohorts' largest participation count, not data)"),
    Release('target_delta', PUBLIC, PUBLIC, 'configuration'),
    Release('target_epsilon', PUBLIC, PUBLIC, 'configuration'),
    Release('privacy_budget_exhausted', PUBLIC, PUBLIC, "the accountant's output"),
    Release('privacy_stop_message', PUBLIC, PUBLIC, "the accountant's output"),
    Release('rounds_within_budget', PUBLIC, PUBLIC, "the accountant's output"),
    Release('privacy', PUBLIC, PUBLIC, 'the DP plan (configuration) and this release report'),
    Release('hparams', PUBLIC, PUBLIC, 'the flags (configuration)'),
    Release('attack/*', PUBLIC, PUBLIC, 'simulated Byzantine clients, chosen by the seed, not client data '
            "(attack/malicious_selected also uses Krum's indices: accounted)"),
    Release('secagg/*', PUBLIC, PUBLIC, 'simulated SecAgg dropouts, threshold and bit width (not client data)'),
    Release('secagg_aborted_rounds', PUBLIC, PUBLIC, 'simulated SecAgg dropouts (not client data)'),
    Release('regime/*', PUBLIC, PUBLIC, 'seeded simulation of availability, dropouts and stragglers (not derived '
            'from client data); ' + _COHORT, poisson=SUPPRESSED),
    Release('regime_total_*', PUBLIC, PUBLIC, 'totals of the seeded participation simulation; ' + _COHORT,
            poisson=SUPPRESSED),
    Release('comm/*', PUBLIC, PUBLIC, 'bytes = client counts x model size; ' + _COHORT, poisson=SUPPRESSED),
    Release('long_haul_bytes_total', PUBLIC, PUBLIC, 'bytes = client counts x model size; ' + _COHORT,
            poisson=SUPPRESSED),
    # Accounted: the DP mechanism's output and its post-processing.
    Release('aggregator/*', ACCOUNTED, ACCOUNTED, 'measurements of the model-update aggregator: with --dp the DP '
            'aggregator (e.g. the adaptive clip norm, a noised quantile estimate); with --sample_dp a function of '
            "DP-SGD updates (e.g. Krum's selected indices)"),
    Release('finalizer/*', ACCOUNTED, ACCOUNTED, "the server optimizer's check of the aggregated (noised) update"),
    Release('*/finalizer/*', ACCOUNTED, ACCOUNTED, "a cluster's or the global step's check of its aggregated "
            '(noised) update'),
    Release('pruning/*', ACCOUNTED, ACCOUNTED, 'sparsity of the released model (post-processing)'),
    Release('pruned_*', ACCOUNTED, ACCOUNTED, 'the exported released model (post-processing)'),
    # Evaluation of the released model on held-out examples, pooled over clients.
    Release('eval_loss', EVALUATION, EVALUATION, 'pooled over every client\'s held-out examples'),
    Release('eval_accuracy', EVALUATION, EVALUATION, 'pooled over every client\'s held-out examples'),
    Release('eval_clients', EVALUATION, EVALUATION, 'clients with held-out examples'),
    Release('eval_sampled_clients', PUBLIC, PUBLIC, 'the --eval_clients sample size (configuration)'),
    Release('eval_population', PUBLIC, PUBLIC, 'the number of clients (configuration)'),
    Release('client_accuracy_mean', EVALUATION, EVALUATION, 'mean over all clients of held-out accuracy'),
    Release('central_test_*', EVALUATION, EVALUATION, 'central evaluation on the test split'),
    Release('cluster/*/accuracy', EVALUATION, EVALUATION, "pooled over a cluster's clients' held-out examples"),
    Release('cluster/*/global_accuracy', EVALUATION, EVALUATION, "pooled over a cluster's held-out examples"),
    Release('cluster_*_accuracy', EVALUATION, EVALUATION, "pooled over a cluster's held-out examples"),
    Release('cluster/*/clients', SUPPRESSED, PUBLIC, "a cluster's reporting clients tell which clients were "
            'sampled, which the amplification by sampling in the client-level accounting assumes secret'),
    Release('hierarchy/global_step', PUBLIC, PUBLIC, 'the --global_every schedule'),
    Release('hierarchy/active_clusters', SUPPRESSED, PUBLIC, 'clusters with reporting clients tell which clients '
            'were sampled, which the amplification by sampling in the client-level accounting assumes secret'),
    # Suppressed: client data outside the mechanism.
    Release('train_loss', SUPPRESSED, SUPPRESSED, 'training loss summed over the cohort outside the DP mechanism '
            '(client_work/train)'),
    Release('train_accuracy', SUPPRESSED, SUPPRESSED, 'training accuracy summed over the cohort outside the DP '
            'mechanism (client_work/train)'),
    Release('client_work/train/num_examples', SUPPRESSED, PUBLIC, "example counts: a client's data at client "
            "level; public at example level (replace-one adjacency keeps a client's dataset size)"),
    Release('client_work/train/num_batches', SUPPRESSED, PUBLIC, "batch counts: a client's data at client level; "
            'public at example level (replace-one adjacency)'),
    Release('client_work/*', SUPPRESSED, SUPPRESSED, 'training metrics summed over the cohort outside the DP '
            'mechanism'),
    Release('cluster/*/train_*', SUPPRESSED, SUPPRESSED, "a cluster's training metrics, outside the DP mechanism"),
    Release('client_accuracy_min', SUPPRESSED, SUPPRESSED, 'per-client evaluation (one identified client)'),
    Release('client_accuracy_p*', SUPPRESSED, SUPPRESSED, 'per-client evaluation (order statistics are single '
            "clients' figures)"),
    Release('per_client_accuracy', SUPPRESSED, SUPPRESSED, 'per-client evaluation'),
    Release('clients.csv', SUPPRESSED, SUPPRESSED, "per client: the rounds it took part in (the cohorts' secret), "
            'its last training loss and its (personal) accuracies; not evaluated, not written'),
    # Refused before training: the flag would compute values from client data outside the mechanism.
    Release('drift/*', REFUSED, REFUSED, 'client update norms and cosines, gradient dissimilarity and client loss '
            'spread at the broadcast model, and the train-loss change, all outside the DP mechanism',
            refuse_when=_on('drift_metrics')),
    Release('central_train_*', REFUSED, REFUSED, "evaluation on the clients' training examples is a release of "
            'training data outside the DP mechanism; use --central_eval=test', refuse_when=_central_train),
    Release('clients.csv accuracy_finetuned', REFUSED, REFUSED, 'models fine-tuned on client training data '
            'outside the DP mechanism', refuse_when=_finetune),
    Release('clients.csv accuracy_personal', REFUSED, REFUSED, "Ditto's global model is FedAvg's and its personal "
            "models' accuracies are per-client evaluations outside the DP mechanism, so the run could release "
            'nothing Ditto adds; use --algorithm=fedavg', refuse_when=_ditto),
    Release('hierarchical cluster assignment', REFUSED, REFUSED, "clusters from the clients' label histograms or "
            'first-round updates are computed outside the DP mechanism and shape training and every per-cluster '
            'figure; use --cluster_by=natural', refuse_when=_cluster_by),
    Release('client normalisation statistics', REFUSED, REFUSED, "evaluation would use each client's "
            'training-data statistics outside the DP mechanism, and under DP-SGD every example would move every '
            "other example's gradient; use normalize(mean, std)", refuse_when=_normalize_client),
    Release('algorithm uploads', REFUSED, ACCOUNTED, "the algorithm's uploads (e.g. SCAFFOLD's control variates, "
            "FedDyn's gradient correction) are summed outside the DP aggregator (with --sample_dp they are "
            'post-processing of DP-SGD training)'),
)

CAVEATS = (
    '--seed (hparams.json) fixes the cohorts and the DP noise for reproducibility: epsilon holds against an '
    'observer who does not know it; a deployment draws both from a secure random source.',
    'checkpoints/ hold simulation state (per-client states and bookkeeping that in a deployment stay on the '
    'clients) and are not a release: do not share them.',
    'with --dp the model and every accounted value are covered by epsilon; with --sample_dp by example_epsilon '
    '(the most-sampled client\'s examples); with both, a value is written only if both cover it.',
)


def _status(entry: Release, mechanism: str, poisson: bool) -> str:
  if mechanism == 'client_dp':
    return entry.poisson if poisson and entry.poisson else entry.client_dp
  return entry.sample_dp


def mechanisms(flags) -> list[str]:
  """The privacy claims the flags make: 'client_dp' (--dp other than none), 'sample_dp' (--sample_dp)."""
  return [m for m, on in (('client_dp', flags.dp != 'none'), ('sample_dp', bool(flags.sample_dp))) if on]


def _dp_text(flags, mechanism: str) -> str:
  return f'--dp={flags.dp}' if mechanism == 'client_dp' else '--sample_dp'


def check_flags(flags) -> None:
  """One-line ValueError naming both flags for the first refused entry whose flag is on under an active claim."""
  for mechanism in mechanisms(flags):
    for entry in RELEASES:
      if entry.refuse_when is None or _status(entry, mechanism, False) != REFUSED:
        continue
      typed = entry.refuse_when(flags)
      if typed:
        raise ValueError(f'{typed} cannot be combined with {_dp_text(flags, mechanism)}: {entry.reason}.')


def uploads_outside_aggregator(algorithm) -> bool:
  """True if the algorithm's server consumes uploads, which the engine sums outside the model aggregator: its
  `server_update` is overridden (`definition.Algorithm.server_update` ignores them). Wrappers (`.inner`, e.g.
  top-k error feedback) pass the inner algorithm's uploads through, so the innermost definition decides."""
  while isinstance(getattr(algorithm, 'inner', None), definition.Algorithm):
    algorithm = algorithm.inner
  return type(algorithm).server_update is not definition.Algorithm.server_update


def check_algorithm(flags, algorithm_flag: str, algorithm) -> None:
  """One-line ValueError when the built algorithm uploads outside the aggregator under --dp."""
  if 'client_dp' in mechanisms(flags) and uploads_outside_aggregator(algorithm):
    entry = next(e for e in RELEASES if e.name == 'algorithm uploads')
    raise ValueError(f'--algorithm={algorithm_flag} cannot be combined with --dp={flags.dp}: {entry.reason}.')


def policy(flags, epsilon_text: dict) -> Optional[outputs.ReleasePolicy]:
  """The run's `outputs.ReleasePolicy` (None without a privacy claim). `epsilon_text`: mechanism -> what covers
  accounted values (e.g. {'client_dp': 'epsilon (client level, delta=1e-05, rdp, uniform sampling)'})."""
  active = mechanisms(flags)
  if not active:
    return None
  poisson = flags.client_sampling == 'poisson'
  rules = []
  for entry in RELEASES:
    statuses = [_status(entry, m, poisson) for m in active]
    released = [s for s in statuses if s in outputs.RELEASED_STATUSES]
    if len(released) == len(statuses):  # Released under every active claim: the most demanding status names it.
      status = ACCOUNTED if ACCOUNTED in statuses else (EVALUATION if EVALUATION in statuses else PUBLIC)
    else:
      status = next(s for s in statuses if s not in outputs.RELEASED_STATUSES)
    rules.append((entry.name, status, entry.reason))

  def report(release: outputs.ReleasePolicy) -> collections.OrderedDict:
    covered = collections.OrderedDict(
        accounted=' and '.join(epsilon_text[m] for m in active),
        public='not derived from client data: no epsilon needed',
        evaluation=('the released model on held-out examples training never reads: post-processing w.r.t. the '
                    'training data that ' + ' and '.join(epsilon_text[m] for m in active) + ' protects; the '
                    'held-out examples themselves are not protected'))
    return collections.OrderedDict(
        mechanisms=active, covered_by=covered, released=release.released(), suppressed=release.suppressed(),
        files=collections.OrderedDict([
            ('metrics.csv', 'the released columns above'), ('tb/', 'the same scalars as metrics.csv'),
            ('summary.json', 'the released keys above'), ('hparams.json', 'public: the flags'),
            ('checkpoints/', 'not a release (see caveats)')]),
        refused=[f'{e.name}: {e.reason}' for e in RELEASES
                 if any(_status(e, m, poisson) == REFUSED for m in active)],
        caveats=list(CAVEATS))

  return outputs.ReleasePolicy(rules, report=report)
