"""Reader for the IDX array format of the MNIST family (LeCun et al.), raw or gzip-compressed.

Layout: 2 zero bytes, a type code byte, a rank byte `d`, then `d` big-endian uint32 dimensions, then the
row-major big-endian data. Compression is detected from the gzip magic bytes, not from the file name.
"""

import gzip
import os
from typing import Union

import numpy as np

GZIP_MAGIC = b'\x1f\x8b'
# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


def _read_bytes(path: Union[str, os.PathLike]) -> bytes:
  with open(path, 'rb') as f:
    head = f.read(2)
    f.seek(0)
    if head == GZIP_MAGIC:
      with gzip.GzipFile(fileobj=f) as g:
        return g.read()
    return f.read()


def parse_idx(data: bytes, name: str = '<bytes>') -> np.ndarray:
  """Decodes IDX `data` into an array of the file's shape, in native byte order.

  Raises:
    ValueError: (naming `name`) on bad magic, unknown type code, or a payload whose size does not match the header.
  """
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f'{name}: not an IDX file (magic must start with two zero bytes; got {data[:4]!r})')
  code, ndim = data[2], data[3]
  if code not in IDX_DTYPES:
    allowed = ', '.join(f'0x{c:02X}' for c in IDX_DTYPES)
    raise ValueError(f'{name}: unknown IDX type code 0x{code:02X}; allowed {allowed}')
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise ValueError(f'{name}: truncated IDX header ({len(data)} bytes, need {header_len} for rank {ndim})')
  shape = tuple(int(d) for d in np.frombuffer(data, dtype='>u4', count=ndim, offset=4))
  dtype = IDX_DTYPES[code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) - header_len != expected:
    raise ValueError(
        f'{name}: IDX payload has {len(data) - header_len} bytes but header shape {shape} of {dtype} needs {expected}')
  array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
  return array.astype(dtype.newbyteorder('='))


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
  """Reads an IDX file (raw or gzip) into a native-endian numpy array with the header's shape and type."""
  return parse_idx(_read_bytes(path), name=os.fspath(path))
