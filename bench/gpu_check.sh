#!/usr/bin/env bash
# The GPU check of issue 14, in one go on a machine with CUDA (about 8 minutes on one H100/H200
# with 16 cores): install the three packages, run the suite with CUDA present, then the
# single-model path against a plain torch loop and N policies at once against N single runs.
#
# Prepare here (pip reaches PyPI), then run it there from the repository root with wheels/
# carried along (that machine reaches no registry):
#
#     bash scripts/fetch_device_wheels.sh              # wheels/ (ignored by git)
#     bash bench/gpu_check.sh                          # there; results in $OUT
#
# Results (each step goes on when one fails; the exit status is the first failure's):
#   $OUT/env.txt            GPU, driver, Python, torch, what was installed
#   $OUT/pytest.log         the suite: pytest -n 8 -p no:benchmark -m "not network"
#   $OUT/bench_plain.log    bench/stacked.py --parts single,plain (batch $PLAIN_BATCH) and .json
#   $OUT/bench_stacked.log  bench/stacked.py, N = $N at batch $BATCH, and .json
#   $OUT/summary.txt        the closing lines of each
#
# Knobs (environment): OUT (default ./gpu_check_out), PYTHON (python3), DEVICE (cuda),
# ROWS (200000), EPOCHS (3), N (32), SEQUENTIAL (2: single runs timed; a run's speed does not
# depend on N), BATCH (256), PLAIN_BATCH (4096), SKIP_INSTALL=1, SKIP_SUITE=1, SUITE_TIMEOUT (330 s).
# On the CPU, `DEVICE=cpu ROWS=5000 N=2 EPOCHS=1 SKIP_INSTALL=1 SKIP_SUITE=1` tries the benches.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
ROWS="${ROWS:-200000}"
EPOCHS="${EPOCHS:-3}"
N="${N:-32}"
SEQUENTIAL="${SEQUENTIAL:-2}"
BATCH="${BATCH:-256}"
PLAIN_BATCH="${PLAIN_BATCH:-4096}"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-330}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0
fail() { [ "$status" -ne 0 ] || status=$1; }
started=$(date +%s)
stamp() { echo "[gpu_check +$(($(date +%s) - started)) s] $*" | tee -a "$OUT/summary.txt"; }

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  nproc
  "$PYTHON" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} >"$OUT/env.txt" 2>&1

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  stamp "install: wheels/ and the three packages (--no-deps --no-build-isolation, editable)"
  {
    if compgen -G "wheels/*.whl" >/dev/null; then
      "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation wheels/*.whl
    else
      echo "no wheels/ folder: run scripts/fetch_device_wheels.sh where pip reaches PyPI"
    fi
    "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation \
      -e packages/schema -e packages/runtime -e packages/trainer
  } >>"$OUT/env.txt" 2>&1 || {
    fail 3
    stamp "install FAILED (see env.txt): going on with the sources on PYTHONPATH"
    export PYTHONPATH="$PWD/packages/schema/src:$PWD/packages/runtime/src:$PWD/packages/trainer/src"
  }
  "$PYTHON" -m pip list 2>/dev/null | grep -i -E "^(otonom|sqlalchemy|backtesting|torch|onnx|numpy) " >>"$OUT/env.txt"
fi

if [ "${SKIP_SUITE:-0}" != 1 ]; then
  stamp "suite: pytest -n 8 -p no:benchmark -m 'not network' (timeout ${SUITE_TIMEOUT} s)"
  extra=()
  "$PYTHON" -c "import backtesting" 2>/dev/null || extra+=(--ignore packages/runtime/tests/test_metrics.py)
  timeout "$SUITE_TIMEOUT" "$PYTHON" -m pytest -n 8 -p no:benchmark -p no:cacheprovider \
    -m "not network" -q "${extra[@]}" >"$OUT/pytest.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || fail 4
  stamp "suite exit $rc: $(tail -n 1 "$OUT/pytest.log")"
  grep -E "^(FAILED|ERROR) " "$OUT/pytest.log" | head -20 >>"$OUT/summary.txt"
fi

stamp "bench: single-model path vs a plain torch loop, batch $PLAIN_BATCH"
"$PYTHON" bench/stacked.py --device "$DEVICE" --parts single,plain --rows "$ROWS" \
  --epochs "$EPOCHS" --batch "$PLAIN_BATCH" --sequential 1 --out "$OUT/bench_plain.json" \
  >"$OUT/bench_plain.log" 2>&1 || fail 5
tail -n 6 "$OUT/bench_plain.log" >>"$OUT/summary.txt"

stamp "bench: N = $N policies at once vs one by one, batch $BATCH"
"$PYTHON" bench/stacked.py --device "$DEVICE" --rows "$ROWS" --epochs "$EPOCHS" --n "$N" \
  --sequential "$SEQUENTIAL" --batch "$BATCH" --out "$OUT/bench_stacked.json" \
  >"$OUT/bench_stacked.log" 2>&1 || fail 6
tail -n 8 "$OUT/bench_stacked.log" >>"$OUT/summary.txt"

stamp "done, exit $status"
exit "$status"
