"""Weight decay on the client optimizer against PyTorch's SGD update (momentum, dampening 0) written in numpy."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fl.algorithms import optimizers


def _torch_sgd(w, grads, lr, momentum, wd):
  """torch.optim.SGD(lr, momentum, weight_decay): d = g + wd w; buf = d (step 1) else momentum buf + d; w -= lr buf."""
  buf = None
  for g in grads:
    d = g + wd * w
    buf = d if buf is None else momentum * buf + d
    w = w - lr * buf
  return w


@pytest.mark.parametrize('name,momentum', [('sgd', 0.0), ('momentum', 0.9)])
def test_weight_decay_matches_torch_sgd(name, momentum):
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(4, 3))
  grads = [rng.normal(size=(4, 3)) for _ in range(6)]
  opt = optimizers.build_optimizer(name, 0.05, momentum=momentum, weight_decay=0.3, name_prefix='client')
  assert isinstance(opt, optimizers.WeightDecay)
  w = (tf.constant(w0, tf.float32),)
  state = opt.initialize((tf.TensorSpec([4, 3], tf.float32),))
  for g in grads:
    state, w = opt.next(state, w, (tf.constant(g, tf.float32),))
  np.testing.assert_allclose(w[0].numpy(), _torch_sgd(w0, grads, 0.05, momentum, 0.3), atol=1e-5)
  assert opt.get_hparams(state)['learning_rate'] == pytest.approx(0.05)


def test_zero_weight_decay_is_the_plain_optimizer_and_bad_values_name_the_argument():
  assert not isinstance(optimizers.build_optimizer('sgd', 0.1, name_prefix='client'), optimizers.WeightDecay)
  with pytest.raises(ValueError, match='^client_weight_decay must be a finite number >= 0'):
    optimizers.build_optimizer('sgd', 0.1, weight_decay=-1e-5, name_prefix='client')
  assert isinstance(optimizers.with_weight_decay(tff.learning.optimizers.build_adam(0.1), 1e-4),
                    optimizers.WeightDecay)
