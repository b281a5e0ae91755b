#!/bin/bash
# Issue 36's equal tuning on a GPU machine (the `device` tool): the plan (tuning.toml of the pinned commit)
# split into one plan per part, each run by that commit's equal_tuning in its own copy of the code (its own
# run store), all at once; each part's finished runs land in $OUT/tuning-PART.jsonl, to be appended to
# docs/results/tuning.jsonl here. A part's rows have the keys the whole plan gives them (the key holds the
# run's settings and the code version, not the plan), so the plan then reads them as its own.
#
# Prepare .device/ as simulations/device_grid.sh says (wheels, the fp16 backbone, the GLUE folders), with
# .device/code the code of the tuning's commit: git archive b2b33ad fedrp clients server simulations
# pyproject.toml | tar -x -C .device/code. Copy docs/results/tuning.jsonl to .device/tuning.jsonl, so that
# what is cached is not run again. Run there (device tool, carry [".device"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl
#   SECS=540 PARTS="slash@0.1 lora@0.1 full slash" bash simulations/harness/device_tuning.sh
# A part is METHOD@ALPHA (the federated candidates at one alpha, then the winner's other decay) or a
# reference METHOD (its centralized candidates, then the winner's other schedule).
# Locally, DRY=1 lists each part's candidates and what is cached (run from the pinned commit's worktree).
. simulations/device_env.sh  # R, PYTHONPATH and the offline settings
CODE=${CODE:-$R/.device/code}
OUT=${OUT:-/tmp/tuning-out}
mkdir -p "$OUT"
for part in ${PARTS:-slash@0.1 lora@0.1 full slash}; do
  W=/tmp/t-${part/@/-}; rm -rf "$W"; mkdir -p "$W"
  (cd "$CODE" && cp -r fedrp clients server simulations pyproject.toml "$W"/)
  cp "${CACHE:-$R/.device/tuning.jsonl}" "$OUT/tuning-${part/@/-}.jsonl" 2>/dev/null || true
  # This part's plan: the pinned plan with only its method (and alpha), its cache in $OUT.
  "${PY:-python3}" - "$W/simulations/tuning.toml" "$part" "$OUT/tuning-${part/@/-}.jsonl" "${DATA:-$R/.device/glue}" <<'PY'
import re, sys
path, part, cache, data = sys.argv[1:]
text = open(path).read()
method, _, alpha = part.partition("@")
text = re.sub(r'^cache = .*$', f'cache = "{cache}"', text, flags=re.M)
if alpha:  # federated: this method at this alpha, no references
    text = re.sub(r'^alphas = .*$', f'alphas = [{float(alpha)}]', text, flags=re.M)
    text = re.sub(r'^(slash|lora|full|head|jrwarp) = \{.*$', lambda m: m.group(0) if m.group(1) == method else "", text, flags=re.M)
    text = re.sub(r'^(full|slash) = \[.*$', "", text, flags=re.M)
else:  # a reference method: no federated candidates
    text = re.sub(r'^(slash|lora) = \{.*$', "", text, flags=re.M)
    text = re.sub(r'^(full|slash) = \[.*$', lambda m: m.group(0) if m.group(1) == method else "", text, flags=re.M)
open(path, "w").write(text)
PY
  sed -i "s|^data-dir = .*|data-dir = \"${DATA:-$R/.device/glue}\"|" "$W/simulations/grid.toml"
  (cd "$W" && PYTHONPATH=$PYTHONPATH:$W timeout "${SECS:-540}" "${PY:-python3}" -m simulations.equal_tuning \
     ${DRY:+--dry-run} >> "$OUT/log-${part/@/-}.txt" 2>&1) &
done
wait
