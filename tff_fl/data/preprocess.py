"""Client preprocessing and augmentation primitives (numpy and TF); `tff_fl.algorithms.preprocessing` runs them on
the engine's packed clients as an `Extension`.

What a client does to its raw training examples each round, in order:

  example order: the task's E seeded permutations, or per epoch a shuffle buffer of `shuffle_buffer` examples
                 (`buffered_shuffle`), cut to the first `max_batches` * B examples (`take`)
  each example:  augment (`augment_batch`, seeded per client, round and example) ► normalise ((x - mean) / std)

Randomness is stateless: an example's draws are a hash of (client_round_seed, AUGMENT_STREAM, k, augmentation,
draw), k its position in the client's round stream (epochs included), client_round_seed the engine's per-client
seed of the round (`tasks.derived_seed(seed, round, client)`): the same (seed, client, round) gives the same
examples on any machine, after a resume, for any batch size and with clients run one at a time or on a client
axis; another round other draws. A batch is augmented at once (no per-example loop). Per-client normalisation
statistics are the scalar mean and population std over all features of the client's raw training examples
(float64, std floored at 1e-6). Evaluation is never augmented; it is normalised with the same statistics as the
client's training data (`normalized_eval_arrays`).
"""

import collections
import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_fl.data import augment_spec

AUGMENT_STREAM = 0x417567  # Separates augmentation draws from other uses of a client's round seed.
_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
  """What a client does to its raw training examples each round (module docstring)."""
  shuffle_buffer: Optional[int] = None  # None: the task's full permutation per epoch.
  max_batches: Optional[int] = None  # None: every batch.
  normalize: Optional[tuple] = None  # None, ('client',) or (mean, std).
  augment: tuple = ()  # augment_spec.Op items, applied in order.

  @classmethod
  def from_flags(cls, client_preprocess: str, augment: str) -> 'PreprocessSpec':
    """Spec from `--client_preprocess` and `--augment` strings (ValueError naming the flag on bad input)."""
    kwargs = {}
    for op in augment_spec.parse_preprocess(client_preprocess):
      if op.name == 'normalize':
        kwargs['normalize'] = op.args
      else:
        kwargs['shuffle_buffer' if op.name == 'shuffle' else 'max_batches'] = int(op.args[0])
    return cls(augment=augment_spec.parse_augment(augment), **kwargs)

  @property
  def active(self) -> bool:
    return bool(self.augment) or any(v is not None for v in (self.shuffle_buffer, self.max_batches, self.normalize))

  def validate(self, x_shape: Sequence[int], x_dtype=np.float32) -> None:
    """ValueError (naming the flag) if the items do not fit examples of shape `x_shape` and dtype `x_dtype`."""
    shape = tuple(x_shape)
    for flag, used in (('augment', bool(self.augment)), ('client_preprocess', self.normalize is not None)):
      if used and not np.issubdtype(np.dtype(x_dtype), np.floating):
        raise ValueError(f'--{flag} needs float examples (augment / normalize change their values); this task has x '
                         f'of dtype {np.dtype(x_dtype).name}.')
    if self.augment and (len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape)):
      raise ValueError(f'--augment needs image examples [H, W, C]; this task has x of shape {shape}.')
    for op in self.augment:
      if op.name == 'resize' and op.args[0] < max(shape[0], shape[1]):
        raise ValueError(f'--augment: resize(size) needs size >= the image side {max(shape[0], shape[1])} (it '
                         f'crops back to {shape[0]}x{shape[1]}); got resize({int(op.args[0])}).')


def _mix(h: tf.Tensor) -> tf.Tensor:
  """MurmurHash3's 32-bit finalizer (uint32 -> uint32, a bijection that spreads every input bit)."""
  shift, xor = tf.bitwise.right_shift, tf.bitwise.bitwise_xor
  h = xor(h, shift(h, 16)) * tf.constant(0x85EBCA6B, tf.uint32)
  h = xor(h, shift(h, 13)) * tf.constant(0xC2B2AE35, tf.uint32)
  return xor(h, shift(h, 16))


def _word(value) -> tf.Tensor:
  """The low 32 bits of an integer tensor, as uint32."""
  return tf.cast(tf.bitwise.bitwise_and(tf.cast(value, tf.int64), 0xFFFFFFFF), tf.uint32)


def example_uniforms(client_round_seed, positions: tf.Tensor, op_index: int, num: int) -> tf.Tensor:
  """float32 [b, num] in [0, 1): the draws of augmentation `op_index` for the examples at stream `positions` [b],
  a hash of (client_round_seed, AUGMENT_STREAM, position, op_index, draw). Elementwise integer ops only, so
  clients mapped on a client axis (`tf.vectorized_map`) draw exactly what they draw one at a time."""
  xor = tf.bitwise.bitwise_xor
  h = _mix(xor(_word(client_round_seed), tf.constant(AUGMENT_STREAM, tf.uint32)))
  h = _mix(xor(h, _word(positions)))[:, tf.newaxis]
  h = _mix(xor(h, tf.constant(op_index * 0x9E3779B9 % 2**32, tf.uint32)))
  draws = tf.constant([(j * 0x7FEB352D) % 2**32 for j in range(num)], tf.uint32)
  h = _mix(xor(h, draws[tf.newaxis]))
  return tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) * (1.0 / (1 << 24))


def _windows(x: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """Per image of x [b, H', W', C], the height x width window at (rows[i], cols[i])."""
  r = rows[:, tf.newaxis] + tf.range(height)[tf.newaxis]
  c = cols[:, tf.newaxis] + tf.range(width)[tf.newaxis]
  return tf.gather(tf.gather(x, r, axis=1, batch_dims=1), c, axis=2, batch_dims=1)


def _offsets(u: tf.Tensor, count: int) -> tf.Tensor:
  """Uniform integers in [0, count) from uniforms u in [0, 1)."""
  return tf.minimum(tf.cast(u * count, tf.int32), count - 1)


def augment_batch(x: tf.Tensor, ops: Sequence[augment_spec.Op], client_round_seed, offset) -> tf.Tensor:
  """Augments images x [b, H, W, C] at stream positions offset .. offset + b - 1, each with its own draws
  (`example_uniforms`), in the order of `ops`: flip (p = 0.5), brightness (+ U(-d, d)), contrast (deviation from
  the per-channel image mean x U(lower, upper)), crop (a window of the zero-padded image at a uniform offset),
  resize (bilinear, then a window at a uniform offset)."""
  if not ops:
    return x
  height, width, channels = x.shape[1:]
  positions = tf.cast(offset, tf.int64) + tf.range(tf.shape(x, out_type=tf.int64)[0])
  per_image = lambda v: v[:, tf.newaxis, tf.newaxis, tf.newaxis]
  for i, op in enumerate(ops):
    u = example_uniforms(client_round_seed, positions, i, 2)
    if op.name == 'flip':
      x = tf.where(per_image(u[:, 0] < 0.5), tf.reverse(x, axis=[2]), x)
    elif op.name == 'brightness':
      x = x + per_image((2.0 * u[:, 0] - 1.0) * op.args[0])
    elif op.name == 'contrast':
      lower, upper = augment_spec.contrast_range(op)
      mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
      x = (x - mean) * per_image(lower + (upper - lower) * u[:, 0]) + mean
    elif op.name in ('crop', 'resize'):
      if op.name == 'crop':
        pad = int(op.args[0])
        source = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
      else:
        source = tf.image.resize(x, [int(op.args[0])] * 2, method='bilinear')
      rows = _offsets(u[:, 0], source.shape[1] - height + 1)
      x = _windows(source, rows, _offsets(u[:, 1], source.shape[2] - width + 1), height, width)
    else:
      raise ValueError(f'unknown augmentation {op.name!r}; allowed: {", ".join(augment_spec.AUGMENTATIONS)}.')
    x = tf.ensure_shape(x, [None, height, width, channels])
  return x


def client_statistics(x: np.ndarray) -> tuple[float, float]:
  """(mean, population std floored at 1e-6) over every feature value of a client's raw training examples."""
  values = np.asarray(x, np.float64).ravel()
  if values.size == 0:
    return 0.0, 1.0
  return float(values.mean()), float(max(values.std(), _MIN_STD))


def normalization(spec: PreprocessSpec, x_train: np.ndarray) -> Optional[tuple[float, float]]:
  """(mean, std) a client normalises with: its own training statistics, global constants, or None."""
  if spec.normalize is None:
    return None
  if spec.normalize == ('client',):
    return client_statistics(x_train)
  return float(spec.normalize[0]), float(spec.normalize[1])


def normalized_eval_arrays(spec: PreprocessSpec, train: Mapping[str, tuple],
                           test: Mapping[str, tuple]) -> Optional[dict]:
  """client id -> (x, y) evaluation arrays with the client's training normalisation (never augmented); None
  without normalisation (evaluation then uses the task's arrays as they are)."""
  if spec.normalize is None:
    return None
  out = {}
  for cid, (x, y) in test.items():
    mean, std = normalization(spec, train[cid][0])
    out[cid] = (((np.asarray(x, np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32), y)
  return out


def buffered_shuffle(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
  """The order `tf.data.Dataset.range(n).shuffle(buffer)` produces in distribution: fill a buffer with the first
  `buffer` indices; repeatedly emit a uniformly chosen buffered index and refill its slot with the next one."""
  if buffer < 1:
    raise ValueError(f'shuffle buffer must be >= 1; got {buffer}.')
  pool = list(range(min(buffer, n)))
  nxt, out = len(pool), []
  while pool:
    i = int(rng.integers(len(pool)))
    out.append(pool[i])
    if nxt < n:
      pool[i] = nxt
      nxt += 1
    else:
      pool[i] = pool[-1]
      pool.pop()
  return np.array(out, np.int64)


def char_tokenize(snippets: tf.data.Dataset, vocab: Sequence[str], sequence_length: int,
                  pad_id: int = 0) -> tf.data.Dataset:
  """Character tokenisation for char tasks: tf.string snippets -> OrderedDict(x, y) int64 rows.

  As TFF's `char_prediction_preprocessing`: UTF-8 bytes -> ids 1..len(vocab) (oov = len(vocab) + 1, BOS = +2,
  EOS = +3), each snippet wrapped in BOS/EOS, padded with `pad_id` to a multiple of sequence_length + 1, cut into rows;
  x = row[:-1], y = row[1:].
  """
  vocab = list(vocab)
  oov, bos, eos = len(vocab) + 1, len(vocab) + 2, len(vocab) + 3
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(vocab), tf.range(1, len(vocab) + 1, dtype=tf.int64)),
      default_value=oov)
  row = sequence_length + 1

  def to_rows(snippet):
    ids = table.lookup(tf.strings.bytes_split(snippet))
    ids = tf.concat([[bos], ids, [eos]], axis=0)
    padded = tf.pad(ids, [[0, (-tf.size(ids)) % row]], constant_values=pad_id)
    return tf.data.Dataset.from_tensor_slices(tf.reshape(padded, [-1, row]))

  return snippets.flat_map(to_rows).map(lambda r: collections.OrderedDict(x=r[:-1], y=r[1:]))
