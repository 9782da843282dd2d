#!/usr/bin/env bash
# The one-shot device check of issue 18 (benchmarks/gpu_check.py): correctness of cuda against cpu, eager vs
# compiled vs captured timings of the planner and the update, an online run, peak GPU memory; one markdown report.
#
#   scripts/gpu_check.sh --prepare              # here, with the package registry: wheels the GPU machine lacks, into .whl/
#   scripts/gpu_check.sh                        # on the GPU machine (installs .whl/ into /tmp/site first), within 10 minutes
#   scripts/gpu_check.sh --device cpu --quick   # dry run of every code path on the CPU, about a minute
#
# Everything after the first argument is passed to benchmarks/gpu_check.py (--budget, --mode, --skip, --out, ...).
# The GPU machine has torch (2.11 when last seen) but neither tensordict, torchrl, hydra nor gymnasium: --prepare
# fetches those for its Python (3.12, x86-64) once; the device call then carries .whl (ignored by git), e.g.
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."

# The project venv where there is one (the CPU dry run here), else the machine's python3 (the GPU machine).
if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
WHEELS=(tensordict==0.14.3 torchrl==0.14.1 pyvers==0.2.3 hoptorch orjson importlib_metadata hydra-core==1.3.2 omegaconf==2.3.0
        gymnasium==1.2.0 farama-notifications)
SDISTS=(antlr4-python3-runtime==4.9.3)  # hydra's parser: published as a source archive only, built into a wheel here

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p .whl
    grep -qx '/.whl/' .gitignore 2>/dev/null || echo '/.whl/' >> .gitignore
    for w in "${WHEELS[@]}"; do
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$w"
    done
    for s in "${SDISTS[@]}"; do $PY -m pip wheel -q --no-deps -w .whl "$s"; done
    du -sh .whl
    exit 0
fi

if [[ -d .whl ]] && ! $PY -c "import tensordict, torchrl, hydra, gymnasium" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
exec $PY benchmarks/gpu_check.py "$@"
