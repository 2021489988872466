#!/usr/bin/env bash
# The GPU bench of issue 15 in one call on the device machine (see benchmarks/README.md for the exact call).
#
# 1. installs the carried wheels (.whl/, made here by benchmarks/gpu_wheels.sh) into benchmarks/_work/site, a
#    git-ignored folder that stays while the machine stays warm (a second call skips the install);
# 2. runs benchmarks/gpu_bench.py with a hard limit (GPU_BENCH_LIMIT, default 500 s; the bench itself plans for
#    465 s and stops each section at its own limit, so the limit only catches a hang);
# 3. leaves under $OUT: gpu_bench.md (the tables), gpu_bench.json (every figure), gpu_bench.log (the run) and
#    gpu_bench_logs.tar.gz (each worker's log and result).
# Arguments are passed to gpu_bench.py (e.g. --sections predict_nnunet --budget 200, or --dry-run --device cuda).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-$PWD/benchmarks/_work/gpu_bench_out}
SITE=$PWD/benchmarks/_work/site
LIMIT=${GPU_BENCH_LIMIT:-500}
mkdir -p "$OUT_DIR" "$SITE"
if compgen -G ".whl/*.whl" >/dev/null; then
  stamp=$(ls -l .whl/*.whl | md5sum | cut -d' ' -f1)
  if [ "$(cat "$SITE/.stamp" 2>/dev/null)" != "$stamp" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || { echo "gpu_bench.sh: installing the carried wheels failed"; exit 3; }
    echo "$stamp" > "$SITE/.stamp"
  fi
else
  echo "gpu_bench.sh: no .whl/ carried: nnU-Net's sections will say why they are skipped"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
timeout -k 20 "$LIMIT" python3 benchmarks/gpu_bench.py --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_bench.log"
rc=${PIPESTATUS[0]}
work=benchmarks/_work/gpu_bench
case " $* " in *" --dry-run "*) work=benchmarks/_work/gpu_bench_dry ;; esac
if [ -d "$work/logs" ]; then
  tar czf "$OUT_DIR/gpu_bench_logs.tar.gz" -C "$work" logs results 2>/dev/null || true
fi
exit "$rc"
