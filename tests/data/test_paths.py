"""Data-cache location and the one-line missing-file error."""

import pytest

from tff_fl.data import paths


def test_data_dir_env_and_default(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  assert paths.data_dir() == tmp_path
  monkeypatch.setenv(paths.ENV_VAR, '  ')
  assert paths.data_dir() == paths.REPO_ROOT / 'data_cache'
  monkeypatch.delenv(paths.ENV_VAR)
  assert paths.data_dir() == paths.REPO_ROOT / 'data_cache'
  assert (paths.REPO_ROOT / 'tff_fl' / 'data' / 'paths.py').is_file()


def test_require_file(tmp_path):
  present = tmp_path / 'a.bin'
  present.write_bytes(b'1')
  assert paths.require_file(str(present), 'x') == present
  with pytest.raises(paths.MissingDataError) as err:
    paths.require_file(tmp_path / 'b.bin', 'run `make data`\n(or copy it)')
  assert str(err.value) == f'missing data file {tmp_path / "b.bin"}; to get it: run `make data` (or copy it)'
  assert isinstance(err.value, FileNotFoundError)
  with pytest.raises(paths.MissingDataError, match='a directory'):
    paths.require_file(tmp_path, 'a directory is not a file')
  with pytest.raises(ValueError, match='how_to_get must be a non-empty'):
    paths.require_file(present, ' ')


def test_require_any_file_picks_first_existing(tmp_path):
  (tmp_path / 'f.gz').write_bytes(b'')
  assert paths.require_any_file([tmp_path / 'f', tmp_path / 'f.gz'], 'x') == tmp_path / 'f.gz'
  with pytest.raises(paths.MissingDataError, match=r'g or .*g\.gz; to get it: y'):
    paths.require_any_file([tmp_path / 'g', tmp_path / 'g.gz'], 'y')
  with pytest.raises(ValueError, match='paths must name at least one'):
    paths.require_any_file([], 'y')
