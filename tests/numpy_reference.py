"""Independent numpy references shared by the tests: multinomial logistic regression in float64."""

import numpy as np


def logreg_loss_and_grads(w, b, x, y):
  """Mean softmax cross-entropy of logits = x w + b and its gradients: (loss, dW [d, C], db [C])."""
  x = x.reshape(len(x), -1).astype(np.float64)
  logits = x @ w + b
  logits = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  loss = -np.mean(np.log(p[np.arange(len(y)), y]))
  p[np.arange(len(y)), y] -= 1.0
  return loss, x.T @ p / len(y), p.mean(axis=0)
