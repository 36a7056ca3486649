"""Checkpoint round trip, retention and the configuration guard."""

import collections

import numpy as np
import pytest

from tff_fl.simulation import checkpoint


def _state(v):
  return collections.OrderedDict(a=np.full([2, 3], v, np.float32), b=(np.int64(7), [np.arange(4.0) * v]))


def test_round_trip_and_retention(tmp_path):
  mgr = checkpoint.CheckpointManager(str(tmp_path), {'seed': 1}, keep=2)
  mgr.check_config()
  for r in (1, 2, 3):
    mgr.save(r, _state(float(r)), {'store/x': np.array([r])})
  assert mgr.rounds() == [2, 3]
  round_num, state, extras = mgr.restore(_state(0.0))
  assert round_num == 3
  np.testing.assert_array_equal(state['a'], np.full([2, 3], 3.0))
  np.testing.assert_array_equal(state['b'][1][0], np.arange(4.0) * 3)
  assert state['a'].dtype == np.float32 and extras['store/x'][0] == 3


def test_refuses_other_configuration(tmp_path):
  mgr = checkpoint.CheckpointManager(str(tmp_path), {'seed': 1, 'mu': 0.0})
  mgr.check_config()
  mgr.save(1, _state(1.0))
  other = checkpoint.CheckpointManager(str(tmp_path), {'seed': 1, 'mu': 0.5})
  with pytest.raises(ValueError, match=r'--mu'):
    other.check_config()
  with pytest.raises(ValueError, match='state tensors'):
    mgr.restore(collections.OrderedDict(a=np.zeros(1)))


def test_flags_added_later_match_only_at_their_default(tmp_path):
  """A checkpoint written before --new_flag existed resumes if the run leaves it at its default, else is refused."""
  old = checkpoint.CheckpointManager(str(tmp_path), {'seed': 1})
  old.check_config()
  old.save(1, _state(1.0))
  defaults = {'seed': 0, 'new_flag': 'off'}
  checkpoint.CheckpointManager(str(tmp_path), {'seed': 1, 'new_flag': 'off'}, defaults=defaults).check_config()
  # config.json now lists new_flag at 'off', so a non-default value is refused by name.
  changed = checkpoint.CheckpointManager(str(tmp_path), {'seed': 1, 'new_flag': 'on'}, defaults=defaults)
  with pytest.raises(ValueError, match=r"--new_flag \('off' vs 'on'\)"):
    changed.check_config()
  fresh = tmp_path / 'fresh'
  checkpoint.CheckpointManager(str(fresh), {'seed': 1}).check_config()
  checkpoint.CheckpointManager(str(fresh), {'seed': 1}).save(1, _state(1.0))
  with pytest.raises(ValueError, match=r'--new_flag \(None vs \'on\'\)'):
    checkpoint.CheckpointManager(str(fresh), {'seed': 1, 'new_flag': 'on'}, defaults=defaults).check_config()
