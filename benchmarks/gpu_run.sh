#!/usr/bin/env bash
# The GPU scenario of issue 12, as one call of the device tool on one NVIDIA H200 (about 5 minutes of run
# time, plus the machine's start): `benchmarks/gpu_step.py --size gpt2-small`, every setting, rows appended to
# $OUT/gpu_step.jsonl as they are measured and the tables written to $OUT/gpu_step.md; then the memory figures
# of every measured setting, read back from that file (so they come even if the run was cut short).
#
# The device image has jax 0.11.2 with CUDA, optax and jaxtyping, but not beartype or annotated-types, which
# jaxmake imports (gpu_step.py needs nothing else; tyro is only for the CLI). Prepare them here, once:
#
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#         beartype==0.23.1 annotated-types==0.8.0
#
# then call the device tool's `run` with command `bash benchmarks/gpu_run.sh`, carry [".whl"], timeout_s 540.
# Arguments are passed on to gpu_step.py after its own (`bash benchmarks/gpu_run.sh --steps 10`).
# XLA_PYTHON_CLIENT_PREALLOCATE=false makes JAX take device memory as it needs it rather than 75% up front, so
# the device's peak in use is what the steps took.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the folder that comes back}"

python3 -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=".:/tmp/site" XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# 420 s leaves the memory figures and the transfers inside the call's 540 s.
timeout 420 python3 benchmarks/gpu_step.py --size gpt2-small --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_step.log"
status=$?

echo "memory figures (GiB): setting, compiled temp, compiled peak, device peak in use so far"
python3 - "$OUT/gpu_step.jsonl" <<'EOF'
import json, sys

gib = lambda n: "-" if n is None else f"{n / 2**30:.2f}"
for row in map(json.loads, open(sys.argv[1])):
    figures = [row.get(k) for k in ("temp_bytes", "peak_bytes", "device_peak_bytes")]
    print(row["setting"], *map(gib, figures), row.get("error", ""), sep="\t")
EOF
exit "$status"
