#!/usr/bin/env bash
# Run (part of) a sweep on a lent GPU machine and bring its results back.
# After `source benchmarks/device/setup.sh`:
#   bash benchmarks/device/sweep.sh configs/sweeps/objectives.yaml 'itc_s*' 'albef_s*'
# Results come back as $OUT/<sweep>.tgz (run folders without checkpoints, and the
# report), rewritten every minute so that a call cut short still returns the runs done;
# unpack it here and `vlp report` the folder. Runs not finished within BUDGET seconds are
# cut; a later call on the same warm machine resumes them, and a call on a
# fresh one reruns them. Several sweeps may run at once, each in its own folder
# runs/device/<sweep>. Environment: BUDGET (default 420 s), PARALLEL (runs at once on
# the one GPU, default 4), ACCELERATOR (default gpu), PRECISION (default 32-true: the CPU
# runs' precision, and faster than bf16-mixed for these host-bound tiny models on an H200),
# WORKERS (data-loader workers per run, default 2).
set -uo pipefail
sweep=$1
shift
name=$(basename "$sweep" .yaml)
out=runs/device/$name
mkdir -p "$out"
only=()
for pattern in "$@"; do only+=(--only "$pattern"); done
snapshot() {  # what has finished so far, so a call cut before the end still brings it back
  tar czf "$OUT/$name.tgz.part" --exclude=checkpoints "$out" "$out.log" 2>/dev/null
  mv "$OUT/$name.tgz.part" "$OUT/$name.tgz"
}
(while sleep 60; do snapshot; done) &
snapshots=$!
start=$(date +%s)
timeout -k 10 "${BUDGET:-420}" vlp sweep "$sweep" "${only[@]}" --out "$out" \
  --parallel "${PARALLEL:-4}" --set "trainer.accelerator=${ACCELERATOR:-gpu}" \
  --set "trainer.precision=${PRECISION:-32-true}" --set "data.num_workers=${WORKERS:-2}" \
  >"$out.log" 2>&1
echo "$name: sweep ended with status $? after $(($(date +%s) - start)) s"
pkill -f "runs/device/$name/" && sleep 5  # runs the budget cut
grep -E "finished|failed|exited" "$out.log" | tail -n 40
vlp report "$out" >/dev/null 2>&1 && cat "$out/report.md" || echo "$name: no finished run to report"
kill "$snapshots"
snapshot
