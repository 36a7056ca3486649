"""The --augment / --client_preprocess parser: accepted specs and one-line errors naming the flag."""

import pytest

from tff_fl.data import augment_spec
from tff_fl.data.augment_spec import Op


def test_parses_items_with_and_without_arguments():
  ops = augment_spec.parse_augment('flip, brightness(0.2),crop(2), contrast(0.7,1.3),resize(10)')
  assert ops == (Op('flip'), Op('brightness', (0.2,)), Op('crop', (2.0,)), Op('contrast', (0.7, 1.3)),
                 Op('resize', (10.0,)))
  assert augment_spec.parse_augment('') == () and augment_spec.parse_augment('none') == ()
  assert augment_spec.contrast_range(Op('contrast', (0.25,))) == (0.75, 1.25)


def test_parses_client_preprocess():
  assert augment_spec.parse_preprocess('normalize(client),take(5)') == (Op('normalize', ('client',)),
                                                                        Op('take', (5.0,)))
  assert augment_spec.parse_preprocess('normalize(0.5, 0.25),shuffle(100)') == (Op('normalize', (0.5, 0.25)),
                                                                                Op('shuffle', (100.0,)))


@pytest.mark.parametrize('text, fragment', [
    ('rotate(3)', 'allowed items: flip, brightness(max_delta)'),
    ('brightness', 'brightness takes 1 number'),
    ('brightness(-1)', 'max_delta >= 0'),
    ('crop(1.5)', 'an integer >= 1'),
    ('crop(0)', 'an integer >= 1'),
    ('contrast(0.9,0.1)', 'lower <= upper'),
    ('contrast(2)', 'lower <= upper'),
    ('flip(1)', 'flip takes 0 number'),
    ('flip,flip', 'flip given more than once'),
    ('crop(2', 'unbalanced'),
    ('crop((2))', 'nested'),
])
def test_bad_augment_is_one_line_error_naming_the_flag(text, fragment):
  with pytest.raises(ValueError) as err:
    augment_spec.parse_augment(text)
  message = str(err.value)
  assert message.startswith('--augment:') and fragment in message and '\n' not in message


@pytest.mark.parametrize('text, fragment', [
    ('normalize(global)', "'client' or two numbers"),
    ('normalize(0.5,0)', 'std > 0'),
    ('take(0)', 'an integer >= 1'),
    ('batch(3)', 'allowed items: normalize(client) or normalize(mean, std), shuffle(buffer), take(max_batches)'),
])
def test_bad_client_preprocess_is_one_line_error(text, fragment):
  with pytest.raises(ValueError) as err:
    augment_spec.parse_preprocess(text)
  assert str(err.value).startswith('--client_preprocess:') and fragment in str(err.value)
