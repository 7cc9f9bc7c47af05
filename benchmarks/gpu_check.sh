#!/usr/bin/env bash
# The project's one command for the day a GPU is lent (benchmarks/README.md): what the CPU cannot check, then
# the GPU workloads with every peer in the same run. Under 9 minutes on one H100/H200; nothing is fetched.
#
#   OUT=/path/for/results [WHEELS=.whl] [SPORT_BENCH_COMMIT=abc1234] bash benchmarks/gpu_check.sh
#   SMOKE=1 bash benchmarks/gpu_check.sh        # the CPU, tiny shapes, Triton interpreter: every step's code path
#
# Sections, each its own process under a time cap and an overall deadline (BUDGET_S, default 530 s):
#   env (versions, nvidia-smi, matmul rate) -> native trie build if missing -> kernel tests on CUDA (pytest)
#   -> opcheck + torch.compile(fullgraph) -> FlexAttention tree step vs dense on the Qwen2-1.5B configuration
#   -> CUDA-graph / static decode vs dynamic -> W1 -> W2 (reduced) -> W3 (reduced) -> summary table.
# Rows: $OUT/checks.jsonl, w1.jsonl, w2.jsonl, w3.jsonl; logs: run.log, pytest.xml; the table: summary.txt.
# WHEELS (default ./.whl) holds the peers' wheels beyond a CUDA PyTorch image (liger-kernel, cut-cross-entropy),
# installed with pip --no-index --no-deps --target into a temporary folder. W1_ARGS, W2_ARGS, W3_ARGS override
# the workloads' arguments; PY the interpreter (default python3).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
OUT=${OUT:-$WORK/out}
PY=${PY:-python3}
SMOKE=${SMOKE:-0}
WHEELS=${WHEELS:-$REPO/.whl}
mkdir -p "$OUT"
LOG=$OUT/run.log
START=$SECONDS
DEADLINE=$((START + ${BUDGET_S:-530}))

export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} SPORT_BENCH_OUT=$OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false TRITON_CACHE_DIR=$WORK/triton TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
if [ "$SMOKE" = 1 ]; then
  export TRITON_INTERPRET=1
  FLAG=--smoke
  W1_ARGS=${W1_ARGS:---smoke} W2_ARGS=${W2_ARGS:---smoke} W3_ARGS=${W3_ARGS:---smoke}
  TESTS=(tests/kernels/test_linear_logprobs_cuda.py)   # collected and skipped on the CPU: the call is what runs
else
  FLAG=
  W1_ARGS=${W1_ARGS:---h 3584 1536 --n 4096 65536}   # most telling first: rows are kept per shape
  W2_ARGS=${W2_ARGS:---models qwen2-1.5b-lora64 --variants independent --groups 2 --context 1024 2048 --steps 2}
  W3_ARGS=${W3_ARGS:---model qwen2-1.5b --trajectories 4 --steps 2 --new-tokens 32 --context 1000 --peers a b c d e}
  TESTS=(tests/kernels/test_linear_logprobs_cuda.py tests/kernels/test_linear_logprobs.py
         tests/kernels/test_linear_logprobs_variants.py tests/dpo/test_training_equivalence.py)
fi
if [ -z "${SPORT_BENCH_COMMIT:-}" ] && command -v git >/dev/null; then
  SPORT_BENCH_COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) && export SPORT_BENCH_COMMIT
fi

say() { echo "$*" | tee -a "$LOG"; }

record() {  # record SECTION RC SECONDS NOTE: the section's exit status as a row of checks.jsonl
  local ok=false; [ "$2" = 0 ] && ok=true
  printf '{"section": "%s", "check": "section exit status", "ok": %s, "rc": %s, "seconds": %s, "note": "%s"}\n' \
    "$1" "$ok" "$2" "$3" "$4" >>"$OUT/checks.jsonl"
}

section() {  # section NAME CAP_SECONDS COMMAND...: run it under min(cap, time left), log it, record its status
  local name=$1 cap=$2; shift 2
  local left=$((DEADLINE - SECONDS)); [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 15 ]; then say "== $name skipped: no time left"; record "$name" 125 0 "skipped: no time left"; return; fi
  say "== $name (cap ${cap}s, t=$((SECONDS - START))s): $*"
  local t0=$SECONDS
  (cd "$REPO" && timeout -k 10 "$cap" "$@") >>"$LOG" 2>&1
  local rc=$? note=""
  [ $rc = 124 ] || [ $rc = 137 ] && note="cut at its ${cap}s cap"
  say "== $name rc=$rc in $((SECONDS - t0))s ${note}"
  record "$name" "$rc" "$((SECONDS - t0))" "$note"
}

install_wheels() {
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    say "== wheels from $WHEELS: $(cd "$WHEELS" && ls ./*.whl | tr '\n' ' ')"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl >>"$LOG" 2>&1 \
      && export PYTHONPATH=$PYTHONPATH:$WORK/site || say "   wheel install failed (see run.log): those peers will say unavailable"
  else
    say "== no wheels in $WHEELS: peers not in the image will be rows saying unavailable"
  fi
}

build_trie() {  # the run's packing uses the C++ trie when it is built; a copied checkout has none
  if [ "$SMOKE" = 1 ] || (cd "$REPO" && $PY -c "import sport_fast._C" 2>/dev/null); then return; fi
  section trie-build 45 $PY setup.py -q build_ext --inplace
}

say "== gpu_check: repo $REPO, out $OUT, smoke=$SMOKE, commit ${SPORT_BENCH_COMMIT:-unknown}, $(date -u +%FT%TZ)"
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1
install_wheels
build_trie
section env 40 $PY benchmarks/gpu_check.py env $FLAG
PARALLEL=()  # the kernels' Triton compiles are CPU work: spread them over processes when pytest-xdist is there
[ "$SMOKE" != 1 ] && $PY -c "import xdist" 2>/dev/null && PARALLEL=(-n 4)
section kernel-tests 120 $PY -m pytest -q -rfEs -p no:cacheprovider "${PARALLEL[@]}" --junitxml="$OUT/pytest.xml" "${TESTS[@]}"
section compile 75 $PY benchmarks/gpu_check.py compile $FLAG
section flex 90 $PY benchmarks/gpu_check.py flex $FLAG
section decode 60 $PY benchmarks/gpu_check.py decode $FLAG
# shellcheck disable=SC2086 # the workloads' arguments are word lists
section w1 160 $PY benchmarks/w1_linear_logprobs.py $W1_ARGS
# shellcheck disable=SC2086
section w2 120 $PY benchmarks/w2_step_dpo.py $W2_ARGS
# shellcheck disable=SC2086
section w3 75 $PY benchmarks/w3_exploration.py $W3_ARGS
say "== summary (t=$((SECONDS - START))s)"
(cd "$REPO" && $PY benchmarks/gpu_check.py summary) 2>>"$LOG" | tee "$OUT/summary.txt"
status=${PIPESTATUS[0]}
say "== done in $((SECONDS - START))s, exit $status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK/triton" "$WORK/inductor" "$WORK/site"
exit "$status"
