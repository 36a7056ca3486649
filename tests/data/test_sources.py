"""Tests for tff_fl.data.sources against scikit-learn's own digits arrays."""

import numpy as np
import pytest
from sklearn import datasets

from tff_fl.data import sources


def test_load_digits_matches_sklearn_flat_data():
  data = sources.load_digits()
  reference = datasets.load_digits()  # Independent view: the flat [1797, 64] `data` field, not `images`.
  assert data.x.shape == (1797, 8, 8, 1)
  assert data.x.dtype == np.float32 and data.y.dtype == np.int32
  np.testing.assert_allclose(data.x.reshape(1797, 64), reference.data / 16.0, rtol=0, atol=1e-7)
  np.testing.assert_array_equal(data.y, reference.target)
  assert data.x.min() == 0.0 and data.x.max() == 1.0
  assert data.num_classes == 10
  assert len(data) == 1797
  assert data.groups is None


def test_array_data_casts_and_counts_classes():
  data = sources.ArrayData(x=np.zeros((4, 3), np.float64), y=np.array([0, 4, 2, 2], np.int64), groups=['a'] * 4)
  assert data.x.dtype == np.float32 and data.y.dtype == np.int32
  assert data.num_classes == 5
  assert data.groups.shape == (4,)


@pytest.mark.parametrize(
    'x, y, groups, match',
    [
        (np.zeros((3, 2)), np.zeros(4, np.int32), None, 'same N'),
        (np.zeros((3, 2)), np.array([0, -1, 2]), None, 'non-negative integers'),
        (np.zeros((3, 2)), np.array([0.5, 1.0, 2.0]), None, 'non-negative integers'),
        (np.zeros((3, 2)), np.zeros(3, np.int32), np.zeros(2), 'groups'),
    ],
)
def test_array_data_rejects_bad_input(x, y, groups, match):
  with pytest.raises(ValueError, match=match):
    sources.ArrayData(x=x, y=y, groups=groups)
