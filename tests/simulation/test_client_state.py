"""Client state stores (memory, disk) and checkpoint/resume of a stateful engine process in the training loop."""

import collections
import csv
import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import fed_avg
from tff_fl.algorithms import scaffold
from tff_fl.models import keras_models
from tff_fl.simulation import checkpoint as checkpoint_lib
from tff_fl.simulation import client_state
from tff_fl.simulation import training_loop

MODEL_FN = keras_models.build_tff_model_fn(
    lambda: keras_models.logreg([6], 3),
    collections.OrderedDict(x=tf.TensorSpec([6], tf.float32), y=tf.TensorSpec([], tf.int32)))


def _vec(seed, dim=5):
  return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


@pytest.mark.parametrize('backend', ['memory', 'disk'])
def test_round_trip_and_checkpoint_restore(backend, tmp_path):
  make = lambda: client_state.make_store(5, str(tmp_path / 'states') if backend == 'disk' else '')
  store = make()
  assert store.get('a') is None
  store.put_many(['a', 'b/../x y'], [_vec(0), _vec(1)])  # An id that is not a safe file name.
  np.testing.assert_array_equal(store.get('a'), _vec(0))
  np.testing.assert_array_equal(store.get('b/../x y'), _vec(1))
  arrays = store.checkpoint_arrays()
  store.put_many(['a', 'c'], [_vec(2), _vec(3)])  # Written after the checkpoint: a resume must forget these.
  assert store.client_ids() == ['a', 'b/../x y', 'c']
  restored = make()
  restored.restore_arrays({k: np.asarray(v) for k, v in arrays.items()})
  assert restored.client_ids() == ['a', 'b/../x y'] and 'c' not in restored
  np.testing.assert_array_equal(restored.get('a'), _vec(0))
  np.testing.assert_array_equal(restored.get('b/../x y'), _vec(1))
  with pytest.raises(ValueError, match='dim'):
    client_state.make_store(6, str(tmp_path / 'other') if backend == 'disk' else '').restore_arrays(arrays)
  with pytest.raises(ValueError, match='4 values; this store holds dim=5'):
    store.put('a', np.zeros(4))


def test_disk_store_fsyncs_live_files_before_returning_a_checkpoint(tmp_path, monkeypatch):
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(os.readlink(f'/proc/self/fd/{fd}')) or real_fsync(fd))
  store = client_state.DiskStore(str(tmp_path), dim=3)
  store.put_many(['a', 'b'], [_vec(0, 3), _vec(1, 3)])
  store.put_many(['a'], [_vec(2, 3)])  # Supersedes a's first file, which is deleted unsynced.
  assert not synced
  store.checkpoint_arrays()
  live = sorted(glob.glob(os.path.join(str(tmp_path), '*', '*.npy')))
  assert len(live) == 2 and set(live) <= set(synced)
  assert {os.path.dirname(p) for p in live} <= set(synced)  # The renames are durable too.
  synced.clear()
  store.checkpoint_arrays()  # Nothing new since the last checkpoint: nothing to sync.
  assert not synced


def test_disk_store_keeps_files_flat_in_rounds(tmp_path):
  store = client_state.DiskStore(str(tmp_path), dim=3, keep=2)
  ids = [f'client_{i}' for i in range(4)]
  for r in range(12):
    store.put_many(ids, [np.full(3, r + i, np.float32) for i in range(4)])
    if r % 3 == 0:
      arrays = store.checkpoint_arrays()
    files = glob.glob(os.path.join(str(tmp_path), '*', '*.npy'))
    assert len(files) <= len(ids) * (store.keep + 1)  # live version + those of the last `keep` checkpoints.
  np.testing.assert_array_equal(store.get('client_2'), np.full(3, 13.0))
  # Resume from the last checkpoint (round 9): later files are removed, values are those of round 9.
  resumed = client_state.DiskStore(str(tmp_path), dim=3)
  resumed.restore_arrays(arrays)
  np.testing.assert_array_equal(resumed.get('client_2'), np.full(3, 11.0))
  assert len(glob.glob(os.path.join(str(tmp_path), '*', '*.npy'))) == len(ids)
  os.remove(glob.glob(os.path.join(str(tmp_path), '*', '*.npy'))[0])
  with pytest.raises(ValueError, match='--client_state_dir'):
    client_state.DiskStore(str(tmp_path), dim=3).restore_arrays(arrays)


def _run(task, exp_dir, total_rounds, state_dir):
  """A fresh engine process, store and hook (as after a restart) running SCAFFOLD in the training loop."""
  hook = client_state.ClientStateHook(task.client_ids, exp_dir)

  def store_fn(dim):  # The store is sized when the process knows its client state.
    hook.store = client_state.make_store(dim, state_dir)
    return hook.store

  cfg = training_loop.LoopConfig(total_rounds=total_rounds, clients_per_round=3, client_batch_size=32,
                                 rounds_per_eval=4, seed=3)
  process = engine.build_task_process(scaffold.Scaffold(0.05, len(task.client_ids)), task, epochs=1,
                                      batch_size=cfg.client_batch_size, seed=cfg.seed,
                                      client_optimizer=tff.learning.optimizers.build_sgdm(0.05), store=store_fn)
  assert process.store is hook.store and isinstance(hook.store, client_state.DiskStore)
  assert hook.store.dim == process.state_dim == 650  # c_i of digits' logreg (64 x 10 + 10).
  training_loop.run_training(process, task, cfg, exp_dir, {'seed': 3}, fingerprint={'algo': 'scaffold'},
                             hooks=[hook], log=lambda line: None)
  _, state, extras = checkpoint_lib.CheckpointManager(os.path.join(exp_dir, 'checkpoints'), {}).restore(
      process.initialize())
  with open(os.path.join(exp_dir, 'clients.csv')) as f:
    clients_csv = f.read()
  return state, {cid: hook.store.get(cid) for cid in task.client_ids}, extras, clients_csv


def test_resumed_run_matches_uninterrupted(tmp_path):
  """4 rounds straight vs 2 + resume to 4 with the disk store (the in-memory store's checkpoint is tested above)."""
  task = tasks_lib.build_task(tasks_lib.TaskConfig(task='digits', num_clients=5, model='logreg'))
  state_dir = lambda name: str(tmp_path / name / 'client_states')
  straight = _run(task, str(tmp_path / 'straight'), 4, state_dir('straight'))
  _run(task, str(tmp_path / 'resumed'), 2, state_dir('resumed'))
  resumed = _run(task, str(tmp_path / 'resumed'), 4, state_dir('resumed'))
  for a, b in zip(tf.nest.flatten(straight[0]), tf.nest.flatten(resumed[0])):
    np.testing.assert_array_equal(a, b)
  assert sum(v is not None for v in straight[1].values()) >= 3  # Several clients hold state after 4 rounds.
  for cid, value in straight[1].items():
    if value is None:
      assert resumed[1][cid] is None
    else:
      np.testing.assert_array_equal(value, resumed[1][cid])
  np.testing.assert_array_equal(straight[2]['client_state/rounds'], resumed[2]['client_state/rounds'])
  assert straight[3] == resumed[3]  # clients.csv: rounds participated and last losses.
  rows = list(csv.DictReader(io.StringIO(straight[3])))
  assert all((r['last_loss'] != '') == (int(r['rounds_participated']) > 0) for r in rows)  # Losses per client.
  assert np.max(np.abs(np.asarray(straight[0]['extra'][0]))) > 0  # The server control variate moved.


def test_store_fn_is_not_called_for_a_stateless_algorithm():
  train = {'a': (np.zeros([4, 6], np.float32), np.zeros([4], np.int32))}
  calls = []
  process = engine.build_process(fed_avg.FedAvg(), MODEL_FN, train, lambda cid, r: np.arange(4), batch_size=2,
                                 client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
                                 store=lambda dim: calls.append(dim))
  assert not calls and process.store is None and not process.stateful
