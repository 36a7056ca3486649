"""Client preprocessing and augmentation primitives (numpy and TF); `tff_fl.algorithms.preprocessing` runs them on
the engine's packed clients as an `Extension`.

What a client does to its raw training examples each round, in order:

  example order: the task's E seeded permutations, or per epoch a shuffle buffer of `shuffle_buffer` examples
                 (`buffered_shuffle`), cut to the first `max_batches` * B examples (`take`)
  each example:  augment (`augment_image`, seeded per client, round and example) ► normalise ((x - mean) / std)

Randomness is stateless. An example's augmentation seed is `stateless_fold_in([client_round_seed, AUGMENT_STREAM],
k)`, k its position in the client's round stream (epochs included), client_round_seed the engine's per-client seed
of the round (`tasks.derived_seed(seed, round, client)`), and each augmentation a split of that: the same (seed,
client, round) gives the same examples on any machine, after a resume and for any batch size; another round other
draws. Per-client normalisation statistics are the scalar mean and population std over all features of the
client's raw training examples (float64, std floored at 1e-6). Evaluation is never augmented; it is normalised with
the same statistics as the client's training data (`normalized_eval_arrays`).
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


def augment_image(image: tf.Tensor, ops: Sequence[augment_spec.Op], seed: tf.Tensor) -> tf.Tensor:
  """Applies `ops` in order to one image [H, W, C]; `seed` is an int64 [2] stateless seed."""
  if not ops:
    return image
  height, width, channels = image.shape
  seeds = tf.random.experimental.stateless_split(seed, num=len(ops))
  for i, op in enumerate(ops):
    s = seeds[i]
    if op.name == 'flip':
      image = tf.image.stateless_random_flip_left_right(image, s)
    elif op.name == 'brightness':
      image = tf.image.stateless_random_brightness(image, op.args[0], s)
    elif op.name == 'contrast':
      lower, upper = augment_spec.contrast_range(op)
      image = tf.image.stateless_random_contrast(image, lower, upper, s) if upper > lower else (
          (image - tf.reduce_mean(image, axis=[0, 1], keepdims=True)) * lower
          + tf.reduce_mean(image, axis=[0, 1], keepdims=True))
    elif op.name == 'crop':
      pad = int(op.args[0])
      padded = tf.image.pad_to_bounding_box(image, pad, pad, height + 2 * pad, width + 2 * pad)
      image = tf.image.stateless_random_crop(padded, [height, width, channels], s)
    elif op.name == 'resize':
      size = int(op.args[0])
      resized = tf.image.resize(image, [size, size], method='bilinear')
      image = tf.image.stateless_random_crop(resized, [height, width, channels], s)
    else:
      raise ValueError(f'unknown augmentation {op.name!r}; allowed: {", ".join(augment_spec.AUGMENTATIONS)}.')
    image = tf.ensure_shape(image, [height, width, channels])
  return image


def augment_batch(x: tf.Tensor, ops: Sequence[augment_spec.Op], client_round_seed, offset) -> tf.Tensor:
  """Augments images x [b, H, W, C] at stream positions offset .. offset + b - 1 (module docstring's seeds)."""
  if not ops:
    return x
  base = tf.stack([tf.cast(client_round_seed, tf.int64), tf.constant(AUGMENT_STREAM, tf.int64)])
  positions = tf.cast(offset, tf.int64) + tf.range(tf.shape(x, out_type=tf.int64)[0])
  seeds = tf.map_fn(lambda k: tf.random.experimental.stateless_fold_in(base, k), positions,
                    fn_output_signature=tf.TensorSpec([2], tf.int64))
  return tf.map_fn(lambda args: augment_image(args[0], ops, args[1]), (x, seeds),
                   fn_output_signature=tf.TensorSpec(x.shape[1:], x.dtype))


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
