"""IDX reader round trips against an independent struct-based writer (the LeCun format spec), raw and gzip."""

import gzip
import struct

import numpy as np
import pytest

from tff_fl.data import idx

# Type codes from the IDX spec (yann.lecun.com/exdb/mnist), written out here independently of the reader.
SPEC_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
SPEC_FORMATS = {np.uint8: 'B', np.int8: 'b', np.int16: 'h', np.int32: 'i', np.float32: 'f', np.float64: 'd'}


def idx_bytes(array: np.ndarray) -> bytes:
  """Serializes element by element with struct (big-endian), never through numpy byte order."""
  kind = array.dtype.type
  header = struct.pack('>BBBB', 0, 0, SPEC_CODES[kind], array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
  return header + struct.pack(f'>{array.size}{SPEC_FORMATS[kind]}', *array.ravel().tolist())


def write(path, data: bytes, compress: bool):
  path.write_bytes(gzip.compress(data) if compress else data)
  return path


@pytest.mark.parametrize('compress', [False, True])
@pytest.mark.parametrize('dtype', [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path, dtype, compress):
  rng = np.random.default_rng(0)
  info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
  if info is not None:
    array = rng.integers(info.min, info.max, size=(3, 5, 4), endpoint=True).astype(dtype)
  else:
    array = (rng.normal(size=(3, 5, 4)) * 1e3).astype(dtype)
  path = write(tmp_path / 'a-idx3', idx_bytes(array), compress)  # no .gz suffix: detection is by content
  out = idx.read_idx(path)
  assert out.dtype == np.dtype(dtype) and out.dtype.isnative
  assert out.shape == (3, 5, 4)
  np.testing.assert_array_equal(out, array)


def test_mnist_like_labels_rank1_and_header_bytes(tmp_path):
  labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
  data = idx_bytes(labels)
  assert data[:8] == b'\x00\x00\x08\x01\x00\x00\x00\x05'  # the MNIST label-file magic 2049 and count
  np.testing.assert_array_equal(idx.read_idx(write(tmp_path / 'l.gz', data, True)), labels)


def test_empty_array(tmp_path):
  out = idx.read_idx(write(tmp_path / 'e', idx_bytes(np.zeros((0, 28, 28), np.uint8)), False))
  assert out.shape == (0, 28, 28)


def test_bad_magic_is_clear_error(tmp_path):
  path = write(tmp_path / 'bad', b'\x01\x02\x08\x01' + b'\x00' * 8, False)
  with pytest.raises(ValueError, match=r'not an IDX file') as err:
    idx.read_idx(path)
  assert str(path) in str(err.value) and '\n' not in str(err.value)


def test_unknown_type_code(tmp_path):
  with pytest.raises(ValueError, match=r'unknown IDX type code 0x07'):
    idx.read_idx(write(tmp_path / 'c', b'\x00\x00\x07\x01\x00\x00\x00\x01\x00', True))


def test_truncated_payload_and_header(tmp_path):
  data = idx_bytes(np.arange(6, dtype=np.int32).reshape(2, 3))
  with pytest.raises(ValueError, match=r'payload has 20 bytes .* needs 24'):
    idx.read_idx(write(tmp_path / 't', data[:-4], False))
  with pytest.raises(ValueError, match=r'truncated IDX header'):
    idx.read_idx(write(tmp_path / 'h', data[:9], False))
