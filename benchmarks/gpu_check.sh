#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2086  # tiers are called by name; $PY, $CAMPAIGN, $R split into words on purpose
# The GPU campaign in one command under one wall-clock budget:
#   bash benchmarks/gpu_check.sh OUT [--budget S] [--rehearse]
#
# Tiers, in priority order (each starts only if its estimated time fits what is left of the budget,
# runs under a limit of at most what is left, and is packed into OUT as soon as it finishes):
#   env           nvidia-smi, versions, mat-info --json --no-check
#   prove-triton  the Triton kernels (and every backend listed in gpu_campaign.CAMPAIGN_BACKENDS)
#                 against the reference at the five tran layers' shapes of G at 512, key masks as MAT
#                 makes them, fwd/bwd/new mask in fp32/bf16/fp16, both mask updates, bias_act; one
#                 process, specializations precompiled in parallel; count and compile seconds recorded
#   bench-core    tran.0 B=8 bf16 then fp32, fwd and fwd+bwd: fused backends, eager reference, SDPA,
#                 torch.compile, FlexAttention; CUDA events, L2 flushed, peak memory, DRAM bandwidth
#   bench-model   G inference at 512 (B=1, 8; fp32, bf16 autocast; reference vs auto), G+D step B=4 bf16
#   prove-cuda    build _C for sm_90 only (MAX_JOBS = cores), prove it, its bench-core rows
#   sanitize      compute-sanitizer memcheck, then racecheck, on benchmarks/sanitize_cases.py (if it works)
#   wide          pytest -m gpu tests and tests/test_ops.py, per-test timeout, JUnit XML
# then tune (proposes auto preferences; never writes them) and the summary.
#
# What comes back in OUT (5 files): summary.md (one screen), results.json (every figure, device,
# versions, commit), status.tsv, bench.png, logs.tar.gz (every raw log, JSON, JUnit XML, sanitizer
# output). The pack step runs after every tier and when a signal or the budget stops the run.
# Default budget 480 s: run it under a limit of about 540 s (the lent machines allow 600 s a command).
# --rehearse: every tier on CPU (Triton interpreter, the CUDA kernels' host emulation, tiny shapes),
# default budget 120 s, same files. PYTHON (default python) picks the interpreter; GPU_CHECK_WORK
# the folder of the raw logs (default a new one under $TMPDIR).
set -uo pipefail  # no -e: a tier's failure is recorded, not fatal

TIERS=(env prove-triton bench-core bench-model prove-cuda sanitize wide)
# Estimated and maximal seconds per tier on the device (tiers 1-4: limits of 290 s together, 300 s
# with their packs) and in the rehearsal (measured on 2 CPU cores: 72 s for all seven).
declare -A EST=([env]=10 [prove-triton]=60 [bench-core]=100 [bench-model]=75 [prove-cuda]=150 [sanitize]=60 [wide]=90)
declare -A CAP=([env]=15 [prove-triton]=75 [bench-core]=115 [bench-model]=85 [prove-cuda]=180 [sanitize]=150 [wide]=150)
declare -A REH_EST=([env]=3 [prove-triton]=14 [bench-core]=13 [bench-model]=4 [prove-cuda]=18 [sanitize]=6 [wide]=8)
declare -A REH_CAP=([env]=15 [prove-triton]=40 [bench-core]=35 [bench-model]=15 [prove-cuda]=45 [sanitize]=25 [wide]=25)
RESERVE=20       # seconds kept for tune, the summary and the pack
REH_RESERVE=8

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python}"
REHEARSE=0
BUDGET=""
OUT=""

usage() { sed -n '3,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --budget) shift; BUDGET="${1:-}" ;;
    --budget=*) BUDGET="${1#--budget=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [ -n "$OUT" ]; then echo "gpu_check.sh: one OUT folder only (got '$OUT' and '$1')" >&2; exit 2; fi
       OUT="$1" ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  echo "gpu_check.sh: OUT is required: bash benchmarks/gpu_check.sh OUT [--budget S] [--rehearse]" >&2
  exit 2
fi
if [ "$REHEARSE" = 1 ]; then
  for t in "${TIERS[@]}"; do EST[$t]=${REH_EST[$t]}; CAP[$t]=${REH_CAP[$t]}; done
  RESERVE=$REH_RESERVE
  BUDGET="${BUDGET:-120}"
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
else
  BUDGET="${BUDGET:-480}"
fi
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac

mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK="${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
LOGS="$WORK/logs"          # everything raw; packed into OUT/logs.tar.gz
mkdir -p "$LOGS"
STATUS="$LOGS/status.tsv"
printf 'tier\tstatus\trc\tseconds\tnote\n' > "$STATUS"
NPROC="$(nproc 2>/dev/null || echo 2)"
START=$SECONDS
CAMPAIGN="$PY benchmarks/gpu_campaign.py"
R=""; [ "$REHEARSE" = 1 ] && R="--rehearse"
{ echo "budget=$BUDGET rehearse=$REHEARSE reserve=$RESERVE nproc=$NPROC start=$(date -u +%FT%TZ)";
  for t in "${TIERS[@]}"; do echo "tier $t estimate ${EST[$t]} s limit ${CAP[$t]} s"; done; } > "$LOGS/plan.txt"

left() { echo $(( BUDGET - (SECONDS - START) - RESERVE )); }

# pack: the summary, results.json and bench.png from LOGS, status.tsv, and logs.tar.gz, into OUT
# (each written beside and renamed, so OUT always holds a complete set).
pack() {
  timeout -k 5 60 "$PY" "$HERE/gpu_summary.py" "$LOGS" --out "$OUT" --budget "$BUDGET" \
    > "$LOGS/summary.log" 2>&1 || echo "gpu_summary.py failed (see summary.log)" >> "$LOGS/pack.log"
  cp "$STATUS" "$OUT/.status.tsv.part" && mv -f "$OUT/.status.tsv.part" "$OUT/status.tsv"
  tar -czf "$OUT/.logs.tar.gz.part" -C "$WORK" logs 2>> "$LOGS/pack.log" && mv -f "$OUT/.logs.tar.gz.part" "$OUT/logs.tar.gz"
}

record() {  # tier status rc seconds note
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STATUS"
  echo "== $1: $2 (rc $3, $4 s)${5:+ $5}"
}

CURRENT=""; CURRENT_T0=0; CHILD=""
on_signal() {
  trap - INT TERM
  if [ -n "$CHILD" ]; then  # the tier writes what it has on SIGTERM; give it 5 s
    kill -TERM "$CHILD" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$CHILD" 2>/dev/null
  fi
  [ -n "$CURRENT" ] && record "$CURRENT" killed 143 "$((SECONDS - CURRENT_T0))" "stopped by a signal; partial results kept"
  for t in "${TIERS[@]}"; do grep -q -P "^\Q$t\E\t" "$STATUS" || record "$t" skipped - 0 "not reached: the run was stopped"; done
  pack
  exit 143
}
trap on_signal INT TERM

# run LOG LIMIT CMD...: CMD under a wall-clock limit (SIGTERM, SIGKILL 10 s later), output to LOGS/LOG;
# in the background so that a signal to this script is handled at once.
run() {
  local log="$LOGS/$1" limit="$2"; shift 2
  mkdir -p "$(dirname "$log")"
  if [ "$limit" -le 0 ]; then echo "no time left" >> "$log"; return 124; fi
  echo "\$ $* [limit ${limit} s]" >> "$log"
  timeout -k 10 "$limit" "$@" >> "$log" 2>&1 &
  CHILD=$!
  wait "$CHILD"; local rc=$?
  CHILD=""
  return $rc
}
# The limit for the next step of the current tier: what is left of its cap and of the budget.
tier_left() { local a=$(( CAP[$CURRENT] - (SECONDS - CURRENT_T0) )) b; b="$(left)"; echo $(( a < b ? a : b )); }

NOTE=""
tier_env() {
  local rc=0
  { echo "date: $(date -u +%FT%TZ)"; echo "host: $(uname -a)"; echo "cores: $NPROC";
    command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found";
    command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not found";
    git -C "$ROOT" rev-parse HEAD 2>/dev/null; git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -20
  } > "$LOGS/env/system.txt" 2>&1
  run env/info.log "$(tier_left)" $PY -m mat_kernels.cli.info --json "$LOGS/env/info.json" --no-check || rc=$?
  command -v nvidia-smi >/dev/null || NOTE="no nvidia-smi (no GPU here)"
  return $rc
}
tier_prove_triton() {
  local pre=""
  if [ "$REHEARSE" = 1 ]; then
    # The device-time estimate: the specializations this tier and bench-core JIT on the device.
    run prove-triton/specs.log "$(tier_left)" $CAMPAIGN specs --out "$LOGS/prove-triton/specs.json"
  else
    pre="--precompile $(( NPROC > 2 ? NPROC - 2 : 1 ))"
  fi
  run prove-triton/prove.log "$(tier_left)" $CAMPAIGN prove $R $pre --out "$LOGS/prove-triton/prove-triton.json" \
    --junit "$LOGS/prove-triton/junit-prove-triton.xml"
}
tier_bench_core() {
  run bench-core/bench-core.log "$(tier_left)" $CAMPAIGN bench-core $R --out "$LOGS/bench-core/bench-core.json"
}
tier_bench_model() {
  run bench-model/bench-model.log "$(tier_left)" $CAMPAIGN bench-model $R --out "$LOGS/bench-model/bench-model.json"
}
tier_prove_cuda() {
  local rc=0 emu=""
  if [ "$REHEARSE" = 1 ]; then
    emu="--emulate-cuda"
    export GPU_CHECK_EMU_DIR="$WORK/emu"
    NOTE="rehearsal: no nvcc build; the kernels run as host C++"
  else
    run prove-cuda/build.log "$(tier_left)" env MAT_KERNELS_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$NPROC" \
      $PY setup.py build_ext --inplace || { NOTE="the extension did not build (see prove-cuda/build.log)"; return 1; }
  fi
  run prove-cuda/prove.log "$(tier_left)" $CAMPAIGN prove $R $emu --backends cuda \
    --out "$LOGS/prove-cuda/prove-cuda.json" --junit "$LOGS/prove-cuda/junit-prove-cuda.xml" || rc=$?
  run prove-cuda/bench.log "$(tier_left)" $CAMPAIGN bench-core $R $emu --backends cuda --peers reference \
    --out "$LOGS/prove-cuda/bench-cuda.json" || rc=$?
  return $rc
}
find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
tier_sanitize() {
  local cs rc=0
  if [ "$REHEARSE" = 1 ]; then
    NOTE="rehearsal: the cases without compute-sanitizer (Triton interpreter on CPU)"
    run sanitize/cases.log "$(tier_left)" $PY benchmarks/sanitize_cases.py --device cpu --backend triton --quick
    return $?
  fi
  if ! cs="$(find_sanitizer)"; then NOTE="skipped: compute-sanitizer not found"; return 0; fi
  # The probe: on gVisor the tool cannot attach and fails at once.
  if ! run sanitize/probe.log "$(( $(tier_left) < 60 ? $(tier_left) : 60 ))" "$cs" --tool memcheck --error-exitcode 1 $PY -c \
      "import torch; torch.ones(4, device='cuda').sum().item()"; then
    NOTE="skipped: compute-sanitizer does not work here (gVisor?): $(grep -m1 -i -E 'error|fail' "$LOGS/sanitize/probe.log" | cut -c1-120)"
    return 0
  fi
  # No caching allocator: memcheck sees each tensor's own bounds.
  run sanitize/memcheck.log "$(tier_left)" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool memcheck \
    --error-exitcode 1 --print-limit 50 $PY benchmarks/sanitize_cases.py || rc=$?
  if [ "$(tier_left)" -lt 30 ]; then NOTE="racecheck skipped: no time left"; return $rc; fi
  run sanitize/racecheck.log "$(tier_left)" "$cs" --tool racecheck --error-exitcode 1 --print-limit 50 \
    $PY benchmarks/sanitize_cases.py || rc=$?
  return $rc
}
tier_wide() {
  local rc=0 to sel_gpu sel_ops
  if $PY -c "import pytest_timeout" 2>/dev/null; then to="--timeout 120"; else
    to="-p pytest_deadline --deadline 120"; export PYTHONPATH="$HERE:$PYTHONPATH"; NOTE="pytest-timeout missing: per-test deadline plugin"; fi
  sel_gpu=(tests); sel_ops=(tests/test_ops.py)
  [ "$REHEARSE" = 1 ] && { sel_gpu=(tests/cuda/test_gpu.py tests/triton/test_window_attention_gpu.py); sel_ops=(tests/test_ops.py -k "mask_update and reference"); }
  run wide/pytest-gpu.log "$(tier_left)" $PY -m pytest -q -rfE -p no:cacheprovider $to -m gpu "${sel_gpu[@]}" \
    --junitxml "$LOGS/wide/junit-gpu.xml" || rc=$?
  [ "$rc" = 5 ] && rc=0  # nothing collected is not a failure
  run wide/pytest-ops.log "$(tier_left)" $PY -m pytest -q -rfE -p no:cacheprovider $to "${sel_ops[@]}" \
    --junitxml "$LOGS/wide/junit-ops.xml" || rc=$?
  return $rc
}

echo "gpu_check: budget $BUDGET s$([ "$REHEARSE" = 1 ] && echo ' (rehearsal on CPU)'), raw logs in $WORK, results in $OUT"
failed=0
for t in "${TIERS[@]}"; do
  mkdir -p "$LOGS/$t"
  if [ "${EST[$t]}" -gt "$(left)" ]; then
    record "$t" skipped - 0 "does not fit: estimated ${EST[$t]} s, $(left) s left of the budget"
    continue
  fi
  CURRENT="$t"; CURRENT_T0=$SECONDS; NOTE=""
  rc=0
  "tier_${t//-/_}" || rc=$?
  secs=$((SECONDS - CURRENT_T0))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status=killed; NOTE="time limit ($( [ "$(left)" -le 0 ] && echo budget || echo "tier limit ${CAP[$t]} s")); partial results kept${NOTE:+; $NOTE}"
  elif [ "$rc" = 0 ]; then status=ok; else status=failed; fi
  [ "$status" = ok ] || failed=1
  record "$t" "$status" "$rc" "$secs" "$NOTE"
  CURRENT=""
  pack
done

# tune: proposes PREFERENCES from what was measured and proven (writes nothing).
inputs=()
for f in "$LOGS"/bench-core/bench-core.json "$LOGS"/prove-cuda/bench-cuda.json "$LOGS"/*/junit-*.xml; do
  [ -s "$f" ] && inputs+=("$f")
done
if [ "${#inputs[@]}" -gt 0 ]; then
  timeout -k 5 30 "$PY" -m mat_kernels.bench.tune "${inputs[@]}" > "$LOGS/tune.txt" 2>&1 || echo "tune failed" >> "$LOGS/tune.txt"
fi
pack
echo "gpu_check: done in $((SECONDS - START)) s; $(find "$OUT" -type f | wc -l) files in $OUT"
exit "$failed"
