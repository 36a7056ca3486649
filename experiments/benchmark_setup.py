"""What every benchmark measurement shares: the scenarios' data, the optimizers, stock TFF FedAvg, the packed
engine, and timing (see experiments/benchmark.py).

Data: digits examples sampled per client with a fixed seed (cross-silo clients sample with replacement), 2NN
(64-200-200-10 MLP), batch 10, 1 local epoch, client SGD 0.1, server SGD 1.0. Stock TFF gets one `tf.data` dataset
per client in exactly the order the packed engine packs (`Task.train_order`), so both train on the same batches.
"""

import collections
import os
import statistics
import subprocess
import time

import numpy as np
import tensorflow_federated as tff

from tff_fl import engine
from tff_fl import tasks as tasks_lib
from tff_fl.algorithms import fed_avg
from tff_fl.data import client_data as client_data_lib
from tff_fl.data import sources
from tff_fl.engine import packing
from tff_fl.simulation import contexts
from tff_fl.simulation import stock_process
from tff_fl.simulation import training_loop

SCENARIOS = collections.OrderedDict(
    cross_device_100x9=(100, 9), cross_device_50x18=(50, 18), cross_silo_10x900=(10, 900))
BATCH_SIZE, CLIENT_LR, SEED = 10, 0.1, 0


def build_task(num_clients: int, examples: int) -> tasks_lib.Task:
  """Digits examples split over `num_clients` clients of `examples` (+-2 for small clients) examples each."""
  data = sources.load_digits()
  rng = np.random.default_rng(SEED)
  sizes = [examples] * num_clients if examples > 100 else list(examples + rng.integers(-2, 3, num_clients))
  train = {}
  for c, n in enumerate(sizes):
    idx = rng.choice(len(data), size=n, replace=n > len(data) // num_clients)
    train[f'c{c:03d}'] = (data.x[idx], data.y[idx])
  test = {cid: (x[:1], y[:1]) for cid, (x, y) in train.items()}
  fed = client_data_lib.FederatedArrays(sorted(train), train, test, data.num_classes)
  return tasks_lib.Task('digits', fed, '2nn', tuple(data.x.shape[1:]), data.num_classes)


def loop_config() -> training_loop.LoopConfig:
  return training_loop.LoopConfig(client_epochs_per_round=1, client_batch_size=BATCH_SIZE, seed=SEED)


def client_optimizer():
  return tff.learning.optimizers.build_sgdm(learning_rate=CLIENT_LR)


def server_optimizer():
  return tff.learning.optimizers.build_sgdm(learning_rate=1.0)


def build_stock(task: tasks_lib.Task) -> stock_process.StockProcess:
  """Stock TFF FedAvg (`tff.learning.algorithms.build_weighted_fed_avg`), one tf.data dataset per client."""
  learning_process = tff.learning.algorithms.build_weighted_fed_avg(
      task.model_fn, client_optimizer_fn=client_optimizer(), server_optimizer_fn=server_optimizer())
  return stock_process.StockProcess(learning_process, task, loop_config())


def build_packed(task: tasks_lib.Task, algorithm=None, *, num_slots: int = 1, **kwargs) -> engine.EngineProcess:
  """`algorithm` (default FedAvg) on the packed engine with the benchmark's data order and optimizers."""
  return engine.build_task_process(algorithm or fed_avg.FedAvg(), task, epochs=1, batch_size=BATCH_SIZE, seed=SEED,
                                   client_optimizer=client_optimizer(), server_optimizer=server_optimizer(),
                                   num_slots=num_slots, **kwargs)


def build_packer(task: tasks_lib.Task) -> packing.Packer:
  """The packed engine's packer with the same data order (the floor reads its tensors)."""
  order_fn = lambda cid, r: task.train_order(cid, epochs=1, seed=SEED, round_num=r)
  return packing.Packer(task.data.train, order_fn, batch_size=BATCH_SIZE, seed=SEED)


def commit() -> str:
  """Short hash of the code measured ('' outside git); '+' if the work tree has changes."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=repo, capture_output=True,
                           text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''
  return head + ('+' if dirty else '')


def worker_peak_mb() -> float:
  """Largest VmHWM (peak RSS, MB) among the live TFF workers this process started."""
  peaks = []
  for pid in contexts.running_workers():
    try:
      with open(f'/proc/{pid}/status') as f:
        peaks += [int(line.split()[1]) / 1024 for line in f if line.startswith('VmHWM')]
    except OSError:
      pass
  return max(peaks, default=0.0)


def code(row: dict) -> str:
  """Which code measured a row: its commit, or the fast engine that bb03dfa replaced (rows from before the port)."""
  return row.get('commit') or 'fast engine (before bb03dfa)'


def merge_scenarios(old: list, new: list) -> list:
  """Rows of `new` replace old rows of the same scenario; old rows of scenarios not run stay (SCENARIOS order)."""
  by_name = collections.OrderedDict((r['name'], r) for r in old)
  by_name.update((r['name'], r) for r in new)
  return sorted(by_name.values(), key=lambda r: list(SCENARIOS).index(r['name']) if r['name'] in SCENARIOS else 99)


_TICK = os.sysconf('SC_CLK_TCK')


def cpu_seconds() -> float:
  """CPU seconds (user + system) so far of this process and of its live TFF workers: less sensitive than wall time
  to other processes sharing the core."""
  total = time.process_time()
  for pid in contexts.running_workers():
    try:
      with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
      pass
  return total


def timed_cpu(run_round, rounds: int, warmup: int) -> tuple[float, list, float, list]:
  """(median wall s, wall times, median CPU s, CPU times) of rounds warmup+1 .. warmup+rounds of `run_round(r)`;
  CPU = this process + its TFF workers (`cpu_seconds`)."""
  times, cpu = [], []
  for r in range(1, warmup + rounds + 1):
    c0, t0 = cpu_seconds(), time.perf_counter()
    run_round(r)
    if r > warmup:
      times.append(time.perf_counter() - t0)
      cpu.append(cpu_seconds() - c0)
  return statistics.median(times), times, statistics.median(cpu), cpu


def timed(run_round, rounds: int, warmup: int) -> tuple[float, list]:
  """Median and list of the wall-clock seconds of rounds warmup+1 .. warmup+rounds of `run_round(r)`."""
  return timed_cpu(run_round, rounds, warmup)[:2]
