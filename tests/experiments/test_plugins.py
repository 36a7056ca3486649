"""`--plugin=module`: a user module's aggregator stage, algorithm and component flag reach --helpfull, the
allowed-value errors and a run of the binary (one process per test)."""

import json
import os
import subprocess
import sys

import pytest

from experiments import components
from experiments import flag_groups
from experiments import plugins
from tff_fl import tasks
from tff_fl.aggregators import spec
from tff_fl.algorithms import builders
from tff_fl.models import keras_models

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = '--plugin=tests.experiments.plugin_example'
REGISTRIES = (tasks.TASKS, keras_models.MODELS, builders.ALGORITHMS, spec.STAGES, components.COMPONENTS)
SMALL = ['--task=digits', '--num_clients=4', '--clients_per_round=2', '--client_batch_size=20', '--total_rounds=1',
         '--rounds_per_eval=1']


def _run(*flags):
  return subprocess.run([sys.executable, '-m', 'experiments.train', *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=300, stdin=subprocess.DEVNULL,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


def _help_of(text: str, flag: str) -> str:
  """The --helpfull paragraph of `flag` (its lines up to the next flag)."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.strip().startswith(f'--{flag}:'))
  end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith('--')), len(lines))
  return ' '.join(l.strip() for l in lines[start:end])


def test_helpfull_lists_what_the_plugin_registers():
  proc = _run(PLUGIN, '--helpfull')  # absl prints the help and exits with 1.
  assert '--algorithm' in proc.stdout, proc.stderr[-2000:]
  assert 'fedprox_small' in _help_of(proc.stdout, 'algorithm')
  assert 'scaffold' in _help_of(proc.stdout, 'algorithm')  # Built-ins need no component import.
  assert 'tff_clip(norm)' in _help_of(proc.stdout, 'aggregator')
  assert 'shakespeare' in _help_of(proc.stdout, 'task') and 'regional_digits' in _help_of(proc.stdout, 'task')
  assert '--plugin_example_tag' in proc.stdout


@pytest.fixture
def plugin_loaded():
  """Imports the example plugin in this process; its registry entries are removed afterwards."""
  saved = [(r, dict(r._entries)) for r in REGISTRIES]  # pylint: disable=protected-access
  yield plugins.load(['tests.experiments.plugin_example'])
  for r, entries in saved:
    r._entries.clear()  # pylint: disable=protected-access
    r._entries.update(entries)  # pylint: disable=protected-access
  sys.modules.pop('tests.experiments.plugin_example', None)


def test_allowed_values_errors_list_the_plugins_entries(plugin_loaded):
  del plugin_loaded
  with pytest.raises(ValueError) as error:
    builders.AlgorithmConfig(algorithm='nope').validate()
  assert str(error.value).startswith('algorithm must be one of fedavg,') and 'fedprox_small' in str(error.value)
  assert flag_groups.flag_message(str(error.value)).startswith('--algorithm must be one of fedavg,')
  with pytest.raises(ValueError, match=r"^aggregator='nope>mean': unknown stage 'nope'; .*tff_clip\(norm\)"):
    spec.build_aggregator('nope>mean')
  assert 'plugin_example' in components.COMPONENTS


def test_binary_runs_the_plugins_algorithm_stage_and_flag(tmp_path):
  proc = _run(PLUGIN, *SMALL, f'--root_output_dir={tmp_path}', '--experiment_name=p', '--algorithm=fedprox_small',
              '--aggregator=tff_clip(0.5)>mean', '--plugin_example_tag=ok')
  assert proc.returncode == 0, proc.stderr[-3000:]
  hparams = json.loads((tmp_path / 'p' / 'hparams.json').read_text())
  assert hparams['algorithm'] == 'fedprox_small' and hparams['aggregator'] == 'tff_clip(0.5)>mean'
  assert hparams['plugin_example_tag'] == 'ok'
  assert (tmp_path / 'p' / 'summary.json').is_file()


def test_a_plugin_that_fails_to_import_is_one_line():
  proc = _run('--plugin=tests.experiments.no_such_plugin', *SMALL)
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: --plugin=tests.experiments.no_such_plugin: cannot import it: "
                                 "ModuleNotFoundError: No module named 'tests.experiments.no_such_plugin'")
