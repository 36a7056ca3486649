"""Where optional real datasets live, and the one-line error a task raises when one is missing.

The data cache is `$TFF_FL_DATA_DIR` if set, else `<repo>/data_cache` (`make data` fills it). Nothing here downloads:
a missing file raises `MissingDataError` whose single-line message says how to get it.
"""

import os
import pathlib
from typing import Union

ENV_VAR = 'TFF_FL_DATA_DIR'
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / 'data_cache'
MAKE_DATA_HINT = 'run `make data`'

PathLike = Union[str, os.PathLike]


class MissingDataError(FileNotFoundError):
  """A dataset file is absent; the message is one line naming the file and how to get it."""


def data_dir() -> pathlib.Path:
  """The data cache directory: `$TFF_FL_DATA_DIR` when set and non-empty, else `<repo>/data_cache`."""
  value = os.environ.get(ENV_VAR, '').strip()
  return pathlib.Path(value).expanduser() if value else DEFAULT_DATA_DIR


def _one_line(text: str) -> str:
  return ' '.join(str(text).split())


def require_file(path: PathLike, how_to_get: str) -> pathlib.Path:
  """Returns `path` as a Path if it is an existing file, else raises `MissingDataError` (one line).

  Args:
    path: the file the caller needs.
    how_to_get: a short instruction (e.g. 'run `make data`'); it is joined onto one line with the path.
  """
  return require_any_file([path], how_to_get)


def require_any_file(paths: list[PathLike], how_to_get: str) -> pathlib.Path:
  """The first existing file among `paths` (e.g. raw and `.gz` variants); else one-line `MissingDataError`."""
  if not paths:
    raise ValueError('require_any_file: paths must name at least one candidate file')
  if not how_to_get or not str(how_to_get).strip():
    raise ValueError('require_file: how_to_get must be a non-empty instruction string')
  for path in paths:
    if pathlib.Path(path).is_file():
      return pathlib.Path(path)
  names = ' or '.join(str(p) for p in paths)
  raise MissingDataError(_one_line(f'missing data file {names}; to get it: {how_to_get}'))
