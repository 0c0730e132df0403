#!/usr/bin/env bash
# The GPU rows of benchmarks/README.md: benchmarks/throughput.py on the quickstart in
# fp32 and bf16, and on ALBEF (the comparison base) and Flamingo (its mixture) in bf16,
# one after another (alone on the GPU); then Flamingo sharded (FSDP over the one GPU:
# nothing split, but the sharded code runs on CUDA in bf16), and Flamingo recomputing its
# activations (the memory it saves on a card); the quickstart and ALBEF with compiled
# layers (model.compile_layers) against eager, in fp32; and ITC at a batch of 1,024 with
# and without gradient caching (model.tower_chunk_size), in bf16. After `source benchmarks/device/setup.sh`;
# prints each table.
# Environment: ACCELERATOR (default gpu), BF16 (default bf16-mixed; 32-true to rehearse
# on CPU), STEPS (default 50), WARMUP (default 5).
set -uo pipefail
accelerator=${ACCELERATOR:-gpu}
bf16=${BF16:-bf16-mixed}
bench() {  # precision, config, extra CLI overrides
  local precision=$1 config=$2
  shift 2
  echo "### $config $* ($precision)"
  python3 benchmarks/throughput.py --config "$config" --accelerator "$accelerator" \
    --precision "$precision" --steps "${STEPS:-50}" --warmup "${WARMUP:-5}" "$@" ||
    echo "failed with status $?"
}
quickstart=configs/experiments/quickstart.yaml
bench 32-true "$quickstart"
bench "$bf16" "$quickstart"
bench "$bf16" configs/experiments/pretrain_tiny.yaml --model.objectives configs/objectives/albef.yaml
# compiled layers against eager, in fp32 (the faster precision for these sizes)
bench 32-true "$quickstart" --model.compile_layers=true
bench 32-true configs/experiments/pretrain_tiny.yaml --model.objectives configs/objectives/albef.yaml
bench 32-true configs/experiments/pretrain_tiny.yaml --model.objectives configs/objectives/albef.yaml \
  --model.compile_layers=true
bench "$bf16" configs/experiments/flamingo_tiny.yaml --model.objectives configs/objectives/flamingo.yaml
bench "$bf16" configs/experiments/flamingo_tiny.yaml --model.objectives configs/objectives/flamingo.yaml \
  --strategy fsdp
bench "$bf16" configs/experiments/flamingo_tiny.yaml --model.objectives configs/objectives/flamingo.yaml \
  --model.activation_checkpointing=true
# gradient caching: the same 1,024 negatives per row, the towers 128 rows at a time
bench "$bf16" configs/experiments/pretrain_tiny.yaml --batch-size 1024 --data-batches 2
bench "$bf16" configs/experiments/pretrain_tiny.yaml --batch-size 1024 --data-batches 2 \
  --model.tower_chunk_size=128
