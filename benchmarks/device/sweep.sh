#!/usr/bin/env bash
# Run (part of) a sweep on a lent GPU machine and bring its results back.
#
# The machine has PyTorch, Lightning, timm and transformers but no network: vlp and
# the rest come from the carried kit (`python benchmarks/device/kit.py pack` here first).
# Through the device tool, from the repository root:
#   run(command="bash benchmarks/device/sweep.sh configs/sweeps/objectives.yaml 'itc_s*' 'albef_s*'",
#       carry=[".device_kit"], timeout_s=600)
# Results come back as $OUT/sweep.tgz (run folders without checkpoints, and the report);
# unpack it here and `vlp report` the folder. Runs not finished within BUDGET seconds are
# cut (a later call reruns them). Environment: BUDGET (default 420 s), PARALLEL (runs at
# once on the one GPU, default 4), PRECISION (default bf16-mixed), WORKERS (default 3).
set -euo pipefail
sweep=$1
shift
python3 -m venv --system-site-packages /tmp/vlp-venv
source /tmp/vlp-venv/bin/activate
pip install --quiet --no-index --no-deps --no-build-isolation .device_kit/wheels/*
pip install --quiet --no-index --no-deps --no-build-isolation .
python benchmarks/device/kit.py unpack /tmp/vlp-kit
export PYTHONPATH=/tmp/vlp-kit
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, lightning, timm, transformers as t; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, 'transformers', t.__version__)"
vlp data --out data/scenes --format jsonl
only=()
for pattern in "$@"; do only+=(--only "$pattern"); done
start=$(date +%s)
timeout "${BUDGET:-420}" vlp sweep "$sweep" "${only[@]}" --out runs/device_sweep \
  --parallel "${PARALLEL:-4}" --set trainer.accelerator=gpu \
  --set "trainer.precision=${PRECISION:-bf16-mixed}" --set "data.num_workers=${WORKERS:-3}" ||
  echo "sweep stopped with status $? after $(($(date +%s) - start)) s"
vlp report runs/device_sweep || echo "no finished run to report"
tar czf "$OUT/sweep.tgz" --exclude=checkpoints runs/device_sweep
ls -la "$OUT"
