"""One experiment on several TFF `worker_binary`s, through TFF's mergeable-computation execution context.

How TFF splits a round (tensorflow_federated/python/core/impl/execution_contexts/mergeable_comp_execution_context.py
and core/backends/native/mergeable_comp_compiler.py, 0.87). A computation is compiled to a `MergeableCompForm`:
`up_to_merge` (everything up to and including its one logical aggregation, whose report step is replaced by the
identity, so it returns the aggregation's *accumulator* at SERVER), `merge` (the aggregation's merge function) and
`after_merge` (the aggregation's report step and everything after it). At call time the CLIENTS-placed, not
all-equal arguments (the cohort's datasets, or the engine's packed slots) are cut into contiguous slices, one
per worker (`ceil(remaining / remaining workers)` clients each); SERVER-placed and all-equal values (the state) are
sent to every worker. Each worker runs `up_to_merge` on its slice; partial accumulators are combined with `merge` in
completion order; `after_merge` runs once (on the worker that finished last) when the result is SERVER-placed, or
once per slice and concatenated when it has CLIENTS-placed parts (per-client evaluation, client states). TFF 0.87
concatenates those slices in completion order, which would hand a client another client's outputs (and, on the
packed engine, its client state); `OrderedMergeableContext` concatenates them in slice order.

What cannot be split: computations in which an aggregation consumes another aggregation's result (an aggregate
that is broadcast back to clients and aggregated again) — TFF can split only on ONE logical aggregation. In this
project: `aggregators.secure.secure_mean` (it broadcasts the weight total) and any factory or process built the
same way. (The engine's aggregate pass, used by the drift diagnostics, broadcasts the aggregate but aggregates
nothing after it: it splits.) Those raise
`NotMergeableError` (a ValueError) when first compiled; `check_process` raises it before training. Parallel
aggregations (FedAvg's weighted mean + metric sums, clipping, DP, robust aggregators' single `federated_aggregate`,
SCAFFOLD-style extra sums) are fine. Secure sums are lowered to plain sums first (as in `contexts`). Results equal
the single-worker run up to float summation order: slices are merged in completion order.

Workers: local ones are started and stopped with `contexts.start_worker` / `stop_worker` (PR_SET_PDEATHSIG, reaped by
`contexts.shutdown`); remote ones are reached by `host:port` and never stopped by us. The packed engine uses as many
workers as it has CLIENTS slots (`num_slots` / `--engine_slots`), since a slot is the unit TFF splits.
"""

import asyncio
import contextlib
import functools
import time
from typing import Optional, Sequence

import grpc
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as mergeable
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory as tff_executor_factory
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_fl.simulation import contexts

LOCAL_PREFIX = 'local:'
READY_TIMEOUT_S = 60.0


class NotMergeableError(ValueError):
  """A computation TFF cannot split into per-worker parts (see module docstring)."""


def parse_workers(spec: str) -> tuple[int, list[str]]:
  """`''` -> (0, []) (single managed worker); `'local:N'` -> (N, []); `'h1:p1,h2:p2'` -> (0, ['h1:p1', 'h2:p2'])."""
  spec = (spec or '').strip()
  if not spec:
    return 0, []
  if spec.startswith(LOCAL_PREFIX):
    n = spec[len(LOCAL_PREFIX):]
    if not n.isdigit() or int(n) < 1:
      raise ValueError(f"workers must be 'local:N' with N >= 1, or host:port,...; got '{spec}'.")
    return int(n), []
  addresses = [a.strip() for a in spec.split(',') if a.strip()]
  for address in addresses:
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"workers must be host:port entries (port 1-65535) or 'local:N'; got '{address}'.")
  return 0, addresses


def compile_mergeable(comp: computation_impl.ConcreteComputation) -> mergeable.MergeableCompForm:
  """Secure sums lowered to plain sums, then TFF's `compile_to_mergeable_comp_form`; NotMergeableError if TFF
  cannot split `comp` on a single aggregation. The computation's Python result containers are kept."""
  lowered = test_compiler.replace_secure_intrinsics_with_bodies(comp)
  lowered = computation_impl.ConcreteComputation.with_type(lowered, comp.type_signature)
  try:
    return tff.backends.native.compile_to_mergeable_comp_form(lowered)
  except (ValueError, TypeError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    raise NotMergeableError(
        f'workers: this computation cannot be split across TFF workers (an aggregation consumes another '
        f"aggregation's result, e.g. secure_mean); run it on one worker. TFF: {first}") from e


_compile_cached = functools.lru_cache(maxsize=128)(compile_mergeable)


def check_process(process) -> None:
  """Compiles `process.next` (a stock LearningProcess / IterativeProcess, or an adapter with `.iterative_process`
  or `.learning_process`) for the mergeable context now, so an unsplittable process fails before training
  (NotMergeableError)."""
  comp = getattr(process, 'next', None)
  for inner in ('iterative_process', 'learning_process'):
    if not isinstance(comp, computation_impl.ConcreteComputation):
      comp = getattr(getattr(process, inner, None), 'next', None)
  if isinstance(comp, computation_impl.ConcreteComputation):
    _compile_cached(comp)


def connect(address: str, timeout_s: float = READY_TIMEOUT_S, proc=None):
  """(channel, stub) to a worker at `address`, once it answers; RuntimeError naming it if it does not in time."""
  channel = grpc.insecure_channel(address, tff_executor_factory._GRPC_CHANNEL_OPTIONS)  # pylint: disable=protected-access
  stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
  deadline = time.monotonic() + timeout_s
  while not stub.is_ready:
    if proc is not None and proc.poll() is not None:
      channel.close()
      raise RuntimeError(f'TFF worker_binary for {address} exited with code {proc.returncode} during start-up.')
    if time.monotonic() > deadline:
      channel.close()
      raise RuntimeError(f'no TFF worker answered at {address} within {timeout_s:.0f}s.')
    time.sleep(0.05)
  return channel, stub


def _async_context(stub, default_num_clients: int) -> async_execution_context.AsyncExecutionContext:
  def stack_fn(cardinalities):
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    ex = remote_executor.RemoteExecutor(stub)
    ex.set_cardinalities(cardinalities)
    return ex

  return async_execution_context.AsyncExecutionContext(
      executor_fn=python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn),
      compiler_fn=contexts._compile,  # pylint: disable=protected-access  (secure sums -> sums, native compiler)
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result)


async def _after_merge_in_slice_order(comp, merge_result, arg_list, async_contexts) -> list:
  """TFF's `_invoke_after_merge_in_async_pool` (each context runs one slice at a time) with results in slice order."""
  async def task(index, arg, context):
    return index, await mergeable._compute_after_merged(  # pylint: disable=protected-access
        comp, arg, merge_result, context)

  async def collect(done, result, context):
    del context
    return done + (result,)

  results, _ = await mergeable._run_in_async_context_pool(  # pylint: disable=protected-access
      lambda item, context: asyncio.create_task(task(*item, context)), list(enumerate(arg_list)), async_contexts,
      (), collect)
  return [value for _, value in sorted(results, key=lambda pair: pair[0])]


async def _invoke_in_slice_order(comp, arg, async_contexts):
  """TFF 0.87's `_invoke_mergeable_comp_form` with CLIENTS-placed results concatenated in slice order."""
  arg_list = arg.value() if arg is not None else [None] * len(async_contexts)
  merge_result, merge_context = await mergeable._invoke_merge_in_async_pool(  # pylint: disable=protected-access
      comp, arg_list, async_contexts)
  result_type = comp.after_merge.type_signature.result
  if type_analysis.contains_only(
      result_type, lambda t: not isinstance(t, tff.FederatedType) or t.all_equal):
    return await mergeable._compute_after_merged(  # pylint: disable=protected-access
        comp, arg_list[0], merge_result, merge_context)
  results = await _after_merge_in_slice_order(comp, merge_result, arg_list, async_contexts)
  return mergeable._repackage_partitioned_values(  # pylint: disable=protected-access
      results, result_type_spec=result_type)


class OrderedMergeableContext(mergeable.MergeableCompExecutionContext):
  """TFF's mergeable-computation context whose CLIENTS-placed results keep the clients' order (module docstring)."""

  def invoke(self, comp, arg=None):
    if not isinstance(comp, mergeable.MergeableCompForm):
      comp = self._compiler_pipeline.compile(comp)
    if arg is not None:
      arg = mergeable.MergeableCompExecutionContextValue(arg, comp.up_to_merge.type_signature.parameter,
                                                         self._num_subrounds)
    result = type_conversions.type_to_py_container(
        self._async_runner.run_coro_and_return_result(
            _invoke_in_slice_order(comp, arg, self._async_execution_contexts)),
        comp.after_merge.type_signature.result)
    return self._transform_result(result) if self._transform_result is not None else result


def start_local_workers(num_workers: int, base_port: Optional[int] = None, log_path: Optional[str] = None,
                        timeout_s: float = READY_TIMEOUT_S) -> tuple[list, list[str]]:
  """Starts `num_workers` managed workers on this host (ports base_port+i, or free ports); returns (procs,
  ['127.0.0.1:port', ...]) once all answer. On failure every worker started here is stopped."""
  if num_workers < 1:
    raise ValueError(f'num_workers must be >= 1; got {num_workers}.')
  procs, addresses = [], []
  try:
    for i in range(num_workers):
      proc, port = contexts.start_worker(port=None if base_port is None else base_port + i, log_path=log_path)
      procs.append(proc)
      addresses.append(f'127.0.0.1:{port}')
    for proc, address in zip(procs, addresses):
      connect(address, timeout_s, proc)[0].close()
  except BaseException:
    for proc in procs:
      contexts.stop_worker(proc)
    raise
  return procs, addresses


def create_worker_context(addresses: Sequence[str] = (), num_local: int = 0, *, default_num_clients: int = 0,
                          log_path: Optional[str] = None, timeout_s: float = READY_TIMEOUT_S):
  """Returns (context, close_fn): TFF's MergeableCompExecutionContext over `num_local` workers started here plus
  the remote workers at `addresses` (one subround per worker). `close_fn` stops the local workers and closes every
  channel; remote workers keep running."""
  if num_local < 0 or (num_local == 0 and not addresses):
    raise ValueError(f'workers: need >= 1 worker; got num_local={num_local}, addresses={list(addresses)}.')
  procs, local = start_local_workers(num_local, log_path=log_path, timeout_s=timeout_s) if num_local else ([], [])
  channels = []

  def close():
    for channel in channels:
      channel.close()
    for proc in procs:
      contexts.stop_worker(proc)

  try:
    async_contexts = []
    for address in list(local) + list(addresses):
      channel, stub = connect(address, timeout_s)
      channels.append(channel)
      async_contexts.append(_async_context(stub, default_num_clients))
  except BaseException:
    close()
    raise
  context = OrderedMergeableContext(async_contexts, compiler_fn=_compile_cached)
  return context, close


def set_worker_context(addresses: Sequence[str] = (), num_local: int = 0, **kwargs):
  """Installs the multi-worker context as TFF's default; returns a function that closes it and re-installs the
  managed single-worker context (`contexts.set_local_cpp_context`)."""
  context, close = create_worker_context(addresses, num_local, **kwargs)
  context_stack_impl.context_stack.set_default_context(context)

  def restore():
    close()
    contexts.set_local_cpp_context()

  return restore


@contextlib.contextmanager
def worker_context(addresses: Sequence[str] = (), num_local: int = 0, **kwargs):
  """`with worker_context(num_local=2): ...` runs TFF computations split over the workers; closed on exit."""
  context, close = create_worker_context(addresses, num_local, **kwargs)
  try:
    with context_stack_impl.context_stack.install(context):
      yield context
  finally:
    close()
