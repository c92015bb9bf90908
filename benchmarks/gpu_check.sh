#!/usr/bin/env bash
# The GPU check: the device tests on CUDA and the wide-set benchmark on the GPU, with a summary.
#
#   bash benchmarks/gpu_check.sh                 # exit 1 when no CUDA device is found
#   bash benchmarks/gpu_check.sh --allow-no-gpu  # print "no CUDA device" and exit 0 instead
#
# It creates a virtual environment (.cache/gpu-check-venv, ignored by git, or $GPU_CHECK_VENV) with torch==2.13.0 and the
# project's test extras. On a machine without package index access, point $GPU_CHECK_PYTHON at an
# interpreter that already has torch and the project's dependencies: no environment is created.
# About 5 minutes on one GPU; $GPU_CHECK_TIMEOUT bounds the benchmark (seconds, default 300).
set -uo pipefail
cd "$(dirname "$0")/.."

allow_no_gpu=0
for arg in "$@"; do
    case "$arg" in
        --allow-no-gpu) allow_no_gpu=1 ;;
        *) echo "gpu_check.sh: unknown argument $arg (known: --allow-no-gpu)" >&2; exit 2 ;;
    esac
done

no_gpu() {
    echo "no CUDA device${1:+ ($1)}"
    if [ "$allow_no_gpu" = 1 ]; then exit 0; else exit 1; fi
}

# before any download: a machine without an NVIDIA driver has no CUDA device
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    no_gpu "nvidia-smi finds none"
fi

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    py="$GPU_CHECK_PYTHON"
else
    venv="${GPU_CHECK_VENV:-.cache/gpu-check-venv}"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || { echo "gpu_check.sh: python3 -m venv failed" >&2; exit 1; }
    py="$venv/bin/python"
    "$py" -m pip install -q --upgrade pip >/dev/null
    "$py" -m pip install -q torch==2.13.0 || { echo "gpu_check.sh: pip install torch==2.13.0 failed" >&2; exit 1; }
    "$py" -m pip install -q -e ".[test]" || { echo "gpu_check.sh: pip install -e .[test] failed" >&2; exit 1; }
fi

if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    no_gpu "torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) sees none"
fi

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
log=$(mktemp -d)
"$py" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'device: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')" | tee "$log/device.txt"

MOE_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider tests/test_device.py >"$log/tests.txt" 2>&1
tests_rc=$?

timeout "${GPU_CHECK_TIMEOUT:-300}" "$py" benchmarks/bench_wide.py --device cuda --rounds 2 \
    --retrieval-epochs 2 --no-profile >"$log/wide.txt" 2>&1
wide_rc=$?

echo
echo "== tests on cuda (tests/test_device.py): exit $tests_rc"
tail -n 15 "$log/tests.txt"
echo
echo "== wide-set benchmark on cuda: exit $wide_rc"
grep -E '^\|' "$log/wide.txt" || tail -n 20 "$log/wide.txt"
"$py" - "$log/wide.txt" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
if lines:
    m = json.loads(lines[-1])
    retrieval = sorted(w for w, _ in m["retrieval"])
    print(f"retrieval epoch wall s (median of {len(retrieval)}): {retrieval[len(retrieval) // 2]:.3f}; "
          f"warm-up epoch wall s: {m['warmup'][0]:.3f}; validation wall s: {m['validation'][0]:.3f}; "
          f"aten ops per retrieval step: {m['ops_per_step']}")
PY
echo "logs: $log"
[ "$tests_rc" = 0 ] && [ "$wide_rc" = 0 ]
