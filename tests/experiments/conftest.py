"""Fixtures shared by the binary's component tests."""

from absl import flags
import pytest

from experiments import train  # pylint: disable=unused-import  (defines every flag group)

FLAGS = flags.FLAGS


@pytest.fixture
def parse():
  """`parse(*argv)` parses the binary's flags afresh; they are reset after the test."""
  def parse_flags(*args):
    FLAGS.unparse_flags()
    FLAGS(['train', *args])
  yield parse_flags
  FLAGS.unparse_flags()
