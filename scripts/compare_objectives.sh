#!/usr/bin/env bash
# Train and test objective sets over several seeds on the embedded data, then
# print the comparison table (the README's). Usage:
#   scripts/compare_objectives.sh "itc albef tcl" "0 1 2" [extra vlp overrides...]
# Results land in runs/compare/<set>_s<seed>/; re-running skips finished runs.
set -euo pipefail
sets=${1:-"itc albef tcl tcl_no_imc tcl_no_lmi tcl_no_md"}
seeds=${2:-"0 1 2"}
shift $(( $# > 2 ? 2 : $# ))
VLP=${VLP:-.venv/bin/vlp}
BASE=configs/experiments/pretrain_tiny.yaml
for seed in $seeds; do
  for set in $sets; do
    name=${set}_s${seed}
    dir=runs/compare/$name
    if [ -f "$dir/test_done" ]; then continue; fi
    common=(--config "$BASE" --model.objectives "configs/objectives/$set.yaml" --seed_everything "$seed"
            --data.seed "$seed" --trainer.logger.init_args.save_dir runs/compare
            --trainer.logger.init_args.name "$name" --trainer.logger.init_args.version fit "$@")
    "$VLP" fit "${common[@]}" --trainer.callbacks.init_args.dirpath "$dir/checkpoints"
    "$VLP" test "${common[@]}" --trainer.logger.init_args.version test --ckpt_path "$dir/checkpoints/last.ckpt"
    touch "$dir/test_done"
  done
done
.venv/bin/python scripts/compare_table.py runs/compare
