#!/usr/bin/env bash
# The attack benchmark's device report (issue 12) on a GPU host without internet
# access, as one prepared command (configs/bench_attack.py says what it measures).
#
# Once, on a machine with internet access and the MNIST folder:
#   ADVJAX_DATA_DIR=/path/to/mnist bash experiments/gpu_report.sh prepare
# puts foolbox's wheels (the yardstick; the GPU host is assumed to have jax with
# CUDA, flax, optax, scipy, matplotlib) in .whl/, the four MNIST files in
# .data/mnist/, and checks that the two checkpoints the benchmark reads exist
# under runs/ (`python -m experiments.train_models` and one CPU run of
# `python -m experiments.bench_attack` make them).
# Copy the tree with those git-ignored folders to the GPU host, then there:
#   bash experiments/gpu_report.sh run OUTDIR [bench_attack flags, e.g. --quick]
# writes OUTDIR/results.{json,md} (after each workload) and OUTDIR/log.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPTS="runs/models/seed0/conv runs/bench/mlp-3ep"
case "${1:-}" in
  prepare)
    : "${ADVJAX_DATA_DIR:?set ADVJAX_DATA_DIR to the MNIST IDX folder}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 -d .whl \
      foolbox==3.3.4 eagerpy==0.30.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3
    mkdir -p .data/mnist
    cp "$ADVJAX_DATA_DIR"/*-ubyte* .data/mnist/
    for c in $CKPTS; do
      [ -d "$c" ] || { echo "missing $c: run python -m experiments.train_models and" \
                            "a CPU python -m experiments.bench_attack first" >&2; exit 1; }
    done
    du -sh .whl .data $CKPTS
    ;;
  run)
    out="${2:?usage: gpu_report.sh run OUTDIR [flags]}"; shift 2
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/advjax-site .whl/*.whl
    # the repository root (here, the working folder) is on the path of python -m
    export PYTHONPATH="/tmp/advjax-site" ADVJAX_DATA_DIR="$PWD/.data/mnist" \
      PYTHONUNBUFFERED=1
    python3 -c "import jax, foolbox; print('jax', jax.__version__, jax.devices())"
    python3 -m experiments.bench_attack --workdir "$out" "$@" 2>&1 | tee "$out/log.txt"
    ;;
  *) echo "usage: gpu_report.sh prepare | run OUTDIR [bench_attack flags]" >&2; exit 2;;
esac
