"""Client-side preprocessing and augmentation, run ON THE CLIENTS inside the federated computation.

`build_dataset_computation(client_data, spec)` is a `tff.tensorflow.computation`
`OrderedDict(client_id=tf.string, round_num=tf.int64) -> <x, y>*` that builds one client's training dataset from its
id (the stock `ClientData.serializable_dataset_fn`) and preprocesses it:

  raw unbatched examples ► shuffle (seeded, reshuffled every epoch) ► repeat(epochs) ► augment each example
  ► normalise ► batch(batch_size) ► take(max_batches)

`compose(process, client_data, spec)` maps it over the cohort in front of `process.next`, exactly as
`tff.simulation.compose_dataset_computation_with_learning_process` does (that is what it calls), so the round's inputs
are client ids (`client_inputs_fn`), not datasets. Only training data goes through here; evaluation data is built
by the task and never augmented or normalised.

Randomness is stateless: the client's seed pair is (hash(seed/client_id), round_num); example i of the repeated
stream uses `stateless_fold_in(pair, i)`, and each augmentation a split of that. The same (seed, client, round) gives
the same batches on any machine and after a resume; another round gives other draws.
Per-client normalisation statistics (scalar mean and population std over all features of the client's raw training
examples) are computed on the client with a dataset reduce; std is floored at 1e-6.
"""

import collections
import dataclasses
from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.data import augment_spec

_MAX_INT31 = 2**31 - 1
_DEFAULT_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
  """What a client does to its raw training examples each round (see module docstring for the order)."""
  epochs: int = 1
  batch_size: int = 10
  seed: int = 0
  shuffle_buffer: Optional[int] = None  # None: the whole client dataset (10000 if its size is unknown).
  max_batches: Optional[int] = None  # None: every batch.
  normalize: Optional[tuple] = None  # None, ('client',) or (mean, std).
  augment: tuple = ()  # augment_spec.Op items, applied in order.

  @classmethod
  def from_flags(cls, client_preprocess: str, augment: str, *, epochs: int, batch_size: int,
                 seed: int) -> 'PreprocessSpec':
    """Spec from `--client_preprocess` and `--augment` strings (ValueError naming the flag on bad input)."""
    kwargs = {}
    for op in augment_spec.parse_preprocess(client_preprocess):
      if op.name == 'normalize':
        kwargs['normalize'] = op.args
      else:
        kwargs['shuffle_buffer' if op.name == 'shuffle' else 'max_batches'] = int(op.args[0])
    return cls(epochs=epochs, batch_size=batch_size, seed=seed, augment=augment_spec.parse_augment(augment),
               **kwargs)

  def validate(self, element_spec) -> None:
    for name in ('epochs', 'batch_size'):
      if getattr(self, name) < 1:
        raise ValueError(f'--client_{name if name == "batch_size" else "epochs_per_round"} must be >= 1; '
                         f'got {getattr(self, name)}.')
    shape = element_spec['x'].shape
    if self.augment and (shape.rank != 3 or not shape.is_fully_defined()):
      raise ValueError(f'--augment needs image examples [H, W, C]; this task has x of shape {tuple(shape)}.')
    for op in self.augment:
      if op.name == 'resize' and op.args[0] < max(shape[0], shape[1]):
        raise ValueError(f'--augment: resize(size) needs size >= the image side {max(shape[0], shape[1])} (it '
                         f'crops back to {shape[0]}x{shape[1]}); got resize({int(op.args[0])}).')


def client_seed(seed: int, client_id, round_num) -> tf.Tensor:
  """int64 [2] stateless seed of (seed, client, round), computed in the graph from the client id string."""
  key = tf.strings.to_hash_bucket_fast(tf.strings.join([str(seed), '/', client_id]), _MAX_INT31)
  return tf.stack([key, tf.cast(round_num, tf.int64)])


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


def client_statistics(raw: tf.data.Dataset) -> tuple[tf.Tensor, tf.Tensor]:
  """(mean, population std) over every feature value of the client's raw examples, computed by a reduce."""
  def reduce_fn(acc, example):
    x = tf.cast(example['x'], tf.float64)
    return acc[0] + tf.reduce_sum(x), acc[1] + tf.reduce_sum(tf.square(x)), acc[2] + tf.cast(tf.size(x), tf.float64)

  zero = tf.constant(0.0, tf.float64)
  total, total_sq, count = raw.reduce((zero, zero, zero), reduce_fn)
  count = tf.maximum(count, 1.0)
  mean = total / count
  std = tf.sqrt(tf.maximum(total_sq / count - tf.square(mean), 0.0))
  return tf.cast(mean, tf.float32), tf.cast(tf.maximum(std, 1e-6), tf.float32)


def normalization(raw_train: tf.data.Dataset, spec: PreprocessSpec):
  """(mean, std) the client normalises with: its own training statistics, global constants, or (None, None)."""
  if spec.normalize is None:
    return None, None
  if spec.normalize == ('client',):
    return client_statistics(raw_train)
  return tf.constant(spec.normalize[0], tf.float32), tf.constant(spec.normalize[1], tf.float32)


def normalized_eval_dataset(raw_train: tf.data.Dataset, raw_eval: tf.data.Dataset, spec: PreprocessSpec,
                            batch_size: int = 256) -> tf.data.Dataset:
  """A client's evaluation data with the same normalisation as its training data (never augmented)."""
  mean, std = normalization(raw_train, spec)
  if mean is not None:
    raw_eval = raw_eval.map(lambda e: collections.OrderedDict(x=(e['x'] - mean) / std, y=e['y']))
  return raw_eval.batch(batch_size)


def preprocess_train(raw: tf.data.Dataset, spec: PreprocessSpec, seed: tf.Tensor) -> tf.data.Dataset:
  """Raw unbatched OrderedDict(x, y) examples -> the client's batched training stream for one round."""
  mean, std = normalization(raw, spec)
  cardinality = raw.cardinality()  # Unknown (< 0) for some sources: fall back to a large buffer.
  buffer = spec.shuffle_buffer or tf.where(cardinality > 0, cardinality, _DEFAULT_BUFFER)
  shuffle_seed = tf.random.stateless_uniform([], seed, minval=0, maxval=_MAX_INT31, dtype=tf.int64)
  ds = raw.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True).repeat(spec.epochs)

  def transform(index, example):
    x = augment_image(example['x'], spec.augment, tf.random.experimental.stateless_fold_in(seed, index))
    if mean is not None:
      x = (x - mean) / std
    return collections.OrderedDict(x=x, y=example['y'])

  ds = ds.enumerate().map(transform).batch(spec.batch_size)
  return ds.take(spec.max_batches) if spec.max_batches else ds


def client_input_type() -> collections.OrderedDict:
  return collections.OrderedDict(client_id=tf.string, round_num=tf.int64)


def build_dataset_computation(client_data: tff.simulation.datasets.ClientData,
                              spec: PreprocessSpec) -> tff.Computation:
  """`OrderedDict(client_id, round_num) -> batched training dataset`, run on each client (see module docstring)."""
  spec.validate(client_data.element_type_structure)

  @tff.tensorflow.computation(client_input_type())
  def client_dataset(client_input):
    raw = client_data.serializable_dataset_fn(client_input['client_id'])
    return preprocess_train(raw, spec, client_seed(spec.seed, client_input['client_id'], client_input['round_num']))

  return client_dataset


def compose(process: tff.learning.templates.LearningProcess, client_data: tff.simulation.datasets.ClientData,
            spec: PreprocessSpec) -> tff.learning.templates.LearningProcess:
  """`process` whose `next` takes `OrderedDict(client_id, round_num)@CLIENTS` and builds the datasets there."""
  return tff.simulation.compose_dataset_computation_with_learning_process(
      build_dataset_computation(client_data, spec), process)


def client_inputs(round_num: int, client_ids: Sequence[str]) -> list[collections.OrderedDict]:
  """The composed process's per-client inputs for a round (a `client_inputs_fn` for the training loop)."""
  return [collections.OrderedDict(client_id=cid, round_num=int(round_num)) for cid in client_ids]


def char_tokenize(snippets: tf.data.Dataset, vocab: Sequence[str], sequence_length: int,
                  pad_id: int = 0) -> tf.data.Dataset:
  """Character tokenisation for char tasks, on the client: tf.string snippets -> OrderedDict(x, y) int64 rows.

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
