"""The binary's flags for NIID-Bench: partitions, feature noise, client weight decay, FedNova's and SCAFFOLD's
NIID-Bench variants built from flags, and one-line refusals naming the flag."""

import pytest
from absl import flags

from experiments import train
from tff_fl.algorithms import builders
from tff_fl.algorithms import fednova
from tff_fl.algorithms import optimizers
from tff_fl.algorithms import scaffold

FLAGS = flags.FLAGS
BASE = ('--task=digits', '--model=logreg', '--num_clients=10', '--clients_per_round=10')


def _build(parse, tmp_path, *args):
  parse(*BASE, f'--root_output_dir={tmp_path}', *args)
  return train.build_experiment()


def test_fednova_with_momentum_and_weight_decay(parse, tmp_path):
  exp = _build(parse, tmp_path, '--algorithm=fednova', '--client_optimizer=momentum', '--client_momentum=0.9',
               '--client_learning_rate=0.01', '--client_weight_decay=1e-5', '--partition=label_quantity',
               '--labels_per_client=2')
  assert exp.algorithm == fednova.FedNova(0.01, 0.9, 1e-5)
  assert isinstance(exp.client_optimizer, optimizers.WeightDecay)


def test_scaffold_after_step_runs_the_momentum_client_optimizer(parse, tmp_path):
  exp = _build(parse, tmp_path, '--algorithm=scaffold', '--scaffold_correction=after_step',
               '--client_optimizer=momentum', '--client_learning_rate=0.01', '--client_weight_decay=1e-5',
               '--partition=label_dirichlet', '--feature_noise=0.1')
  assert exp.algorithm == scaffold.Scaffold(0.01, 10, 'after_step')


@pytest.mark.parametrize('args, match', [
    (('--algorithm=scaffold', '--client_optimizer=momentum'),
     '^--algorithm=scaffold with --scaffold_correction=gradient runs plain SGD'),
    (('--algorithm=scaffold', '--client_weight_decay=1e-5'), '--client_weight_decay=0'),
    (('--algorithm=scaffold', '--scaffold_correction=after_step', '--client_optimizer=adam'),
     'needs --client_optimizer=sgd or momentum'),
    (('--scaffold_correction=inside',), '^--scaffold_correction must be one of gradient, after_step'),
    (('--partition=label_quantity', '--labels_per_client=11'), r'^--labels_per_client must be an integer in \[1, 10\]'),
    (('--partition=quantity_skew', '--dirichlet_alpha=0'), '^--dirichlet_alpha'),
    (('--client_weight_decay=-1',), '^--client_weight_decay must be a finite number >= 0'),
    (('--feature_noise=-0.5',), '^--feature_noise must be'),
    (('--model=simple_cnn',), '^--task=digits allows|^--model=simple_cnn needs 28x28x1'),
])
def test_bad_input_is_one_line_naming_the_flag(parse, tmp_path, args, match):
  with pytest.raises(ValueError, match=match) as info:
    _build(parse, tmp_path, *args)
  assert '\n' not in str(info.value)
