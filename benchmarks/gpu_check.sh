#!/usr/bin/env bash
# The whole GPU campaign in one command: bash benchmarks/gpu_check.sh [--dry-run] OUTDIR [stage...]
#
# Stages (default: all, in this order; naming stages runs only those):
#   install         pip install --no-deps --no-build-isolation -e . with MAT_KERNELS_BUILD_CUDA=1
#                   (the lent machines have no package index; their image holds the dependencies)
#   info            python -m mat_kernels.info --json: versions, backends, quick check at MAT's shapes
#   test            pytest -m gpu tests, then tests/test_ops.py (every backend x dtype), per-test
#                   deadline, JUnit XML
#   sanitize        compute-sanitizer memcheck and racecheck on benchmarks/sanitize_cases.py
#   bench-ops       mat-bench op suite at 512 (fp32/bf16/fp16, batch 1 and 8, fwd and fwd+bwd; eager
#                   peers) and the mask-update pytest-benchmarks
#   bench-compiled  the compiled peers (torch.compile, FlexAttention) on the reduced suite
#   bench-model     G inference and the G+D training step at 512: reference and fused, fp32 and bf16 autocast
#   bench-model-compiled  the same for torch.compile of the model (fp32, batch 8)
#   tune            python -m mat_kernels.bench.tune over the results (proposes, does not write)
# Each stage writes its raw output under OUTDIR and runs under a wall-clock limit below the lent
# machines' 10 minutes per command. A failing stage does not stop the later ones; the script ends
# with the summary (OUTDIR/summary.md) and exits 1 if any stage failed.
# PYTHON (default python) picks the interpreter; DEADLINE_S (120) the per-test limit.
set -uo pipefail  # no -e: a stage's failure is recorded, not fatal

ALL_STAGES=(install info test sanitize bench-ops bench-compiled bench-model bench-model-compiled tune)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python}"
DEADLINE_S="${DEADLINE_S:-120}"
DRY=0

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

args=()
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $a (see --help)" >&2; exit 2 ;;
    *) args+=("$a") ;;
  esac
done
if [ "${#args[@]}" -lt 1 ]; then
  echo "gpu_check.sh: OUTDIR is required: bash benchmarks/gpu_check.sh [--dry-run] OUTDIR [stage...]" >&2
  exit 2
fi
OUT="${args[0]}"
STAGES=("${args[@]:1}")
[ "${#STAGES[@]}" -eq 0 ] && STAGES=("${ALL_STAGES[@]}")
for s in "${STAGES[@]}"; do
  case " ${ALL_STAGES[*]} " in *" $s "*) ;; *)
    echo "gpu_check.sh: unknown stage '$s'; stages: ${ALL_STAGES[*]}" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
Q() { printf '%q' "$1"; }
O="$(Q "$OUT")"

# run LOG LIMIT_S COMMAND: the command (a string, so --dry-run can print it exactly) under a
# wall-clock limit; SIGINT first so that mat-bench writes what it measured, SIGKILL 30 s later.
run() {
  local log="$1" limit="$2" cmd="$3"
  if [ "$DRY" = 1 ]; then
    echo "  [limit ${limit} s, log $log] $cmd"
    return 0
  fi
  echo "\$ $cmd" >> "$OUT/$log"
  timeout -s INT -k 30 "$limit" bash -c "$cmd" >> "$OUT/$log" 2>&1
}

find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

NOTE=""
stage_install() {
  run install.log 540 "MAT_KERNELS_BUILD_CUDA=1 $PY -m pip install --no-deps --no-build-isolation -v -e ."
}
stage_info() {
  run info.txt 120 "$PY -m mat_kernels.info --json $O/info.json"
}
stage_test() {
  # Two runs: the gpu-marked tests, and the op matrix of tests/test_ops.py, which is not marked
  # (it runs every backend that can run here) but on a GPU is the main proof of the kernels.
  local common="PYTHONPATH=$(Q "$HERE")\${PYTHONPATH:+:\$PYTHONPATH} $PY -m pytest -p pytest_deadline --deadline $DEADLINE_S -o faulthandler_timeout=$DEADLINE_S -q -rfE"
  local rc=0
  run test.log 300 "$common -m gpu tests --junitxml=$O/junit-gpu.xml" || rc=$?
  run test.log 240 "$common tests/test_ops.py --junitxml=$O/junit-ops.xml" || rc=$?
  return $rc
}
stage_sanitize() {
  local cs rc=0
  if ! cs="$(find_sanitizer)"; then
    if [ "$DRY" = 1 ]; then cs=compute-sanitizer; else
      NOTE="skipped: compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
      echo "$NOTE" > "$OUT/sanitize.log"
      return 0
    fi
  fi
  # No caching allocator: memcheck then sees each tensor's own bounds, not a pooled block's.
  run sanitize-memcheck.log 280 "PYTORCH_NO_CUDA_MEMORY_CACHING=1 $(Q "$cs") --tool memcheck --error-exitcode 1 --print-limit 50 $PY benchmarks/sanitize_cases.py" || rc=$?
  run sanitize-racecheck.log 280 "$(Q "$cs") --tool racecheck --error-exitcode 1 --print-limit 50 $PY benchmarks/sanitize_cases.py" || rc=$?
  return $rc
}
BENCH="$PY -m mat_kernels.bench --no-progress"
stage_bench_ops() {
  local rc=0
  run bench-ops.log 420 "$BENCH --ops --suite full --resolution 512 --dtype fp32,bf16,fp16 --batch 1,8 --mode fwd,fwdbwd --peers reference,sdpa,triton,cuda --json $O/bench-ops.json --plot $O/bench-ops.png" || rc=$?
  run bench-masks.log 150 "$PY -m pytest benchmarks/bench_mask_update.py -m gpu --benchmark-only -q --benchmark-json=$O/bench-masks.json" || rc=$?
  return $rc
}
stage_bench_compiled() {
  run bench-compiled.log 540 "$BENCH --ops --suite reduced --resolution 512 --dtype fp32,bf16 --batch 8 --mode fwd,fwdbwd --peers reference,compile,flex,triton --json $O/bench-compiled.json --plot $O/bench-compiled.png"
}
stage_bench_model() {
  run bench-model.log 540 "$BENCH --model --resolution 512 --batch 1,8 --dtype fp32,bf16 --model-paths reference,auto --json $O/bench-model.json"
}
stage_bench_model_compiled() {
  run bench-model-compiled.log 540 "$BENCH --model --resolution 512 --batch 8 --dtype fp32 --model-paths reference,compile --json $O/bench-model-compiled.json"
}
stage_tune() {
  # Whatever exists of the op results and the test verdicts; tune says what it used.
  local inputs=""
  for f in bench-ops.json bench-compiled.json bench-masks.json junit-gpu.xml junit-ops.xml; do
    if [ "$DRY" = 1 ] || [ -f "$OUT/$f" ]; then inputs="$inputs $O/$f"; fi
  done
  if [ -z "$inputs" ]; then NOTE="skipped: no result files yet (run bench-ops and test first)"; return 0; fi
  run tune.txt 60 "$PY -m mat_kernels.bench.tune$inputs"
}

STATUS="$OUT/status.tsv"
[ "$DRY" = 1 ] || [ -f "$STATUS" ] || printf 'stage\trc\tseconds\tnote\n' > "$STATUS"
failed=0
for s in "${STAGES[@]}"; do
  echo "== stage $s$([ "$DRY" = 1 ] && echo ' (dry run)')"
  NOTE=""
  t0=$SECONDS
  rc=0
  "stage_${s//-/_}" || rc=$?
  [ "$DRY" = 1 ] && continue
  # A stage rerun replaces its earlier line: the summary shows the latest status of each stage.
  grep -v -P "^\Q$s\E\t" "$STATUS" > "$STATUS.tmp" || true
  printf '%s\t%s\t%s\t%s\n' "$s" "$rc" "$((SECONDS - t0))" "$NOTE" >> "$STATUS.tmp"
  mv "$STATUS.tmp" "$STATUS"
  [ "$rc" -ne 0 ] && failed=1
  echo "   rc=$rc ($((SECONDS - t0)) s)${NOTE:+ $NOTE}"
done

if [ "$DRY" = 1 ]; then
  echo "== summary (dry run)"
  echo "  $PY $(Q "$HERE/gpu_summary.py") $O"
  exit 0
fi
"$PY" "$HERE/gpu_summary.py" "$OUT" || failed=1
exit "$failed"
