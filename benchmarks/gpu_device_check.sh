#!/usr/bin/env bash
# The GPU path's checks and throughput in one go, on a machine with an NVIDIA GPU and JAX with CUDA.
#
#   bash benchmarks/gpu_device_check.sh OUT_DIR [SIZES...]
#
# from the repository root, with carcell importable (pip install -e ".[gpu]", or PYTHONPATH).
# Each step has its own time limit so that a slow one cannot starve the rest; results land in
# OUT_DIR as they are made:
#   env.txt          GPU, driver, JAX and its device
#   gpu.json         benchmarks/gpu_backend.py: integration-only patients/s on the GPU for SIZES
#                    (default 1e3 1e4 1e5 1e6 1e7), the NumPy baseline on 1,000 patients on the
#                    CPU, agreement on those 1,000 patients at day 365
#   pytest.txt       tests/test_backend_jax.py run on the GPU (agreement with the NumPy backend)
#   agreement.json   a whole `carcell run` (closed-loop toxicity management, axi-cel in LBCL,
#                    1,000 patients) with --backend numpy on the CPU and --backend jax on the GPU,
#                    patients.parquet compared by benchmarks/compare_runs.py
#   run_*.txt        the runs' output, timed; run_big.txt: a whole run of BIG_RUN (default 20,000)
#                    patients with --backend jax in one chunk, for the full pipeline's rate
set -u
out=${1:?usage: gpu_device_check.sh OUT_DIR [SIZES...]}
shift
sizes=${*:-1000 10000 100000 1000000 10000000}
mkdir -p "$out"
TIMEFORMAT="%R s wall, %U s user, %S s system"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $py -c "import jax, numpy, pandas; from carcell.solve import jax_kernel; \
print('jax', jax.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'device', jax_kernel.device())"
} 2>&1 | tee "$out/env.txt"
[ -n "${ALLOW_CPU:-}" ] || grep -q -E "device (gpu|cuda)" "$out/env.txt" || { echo "JAX sees no CUDA device (ALLOW_CPU=1 to run anyway): stopping"; exit 2; }

echo "== throughput (integration only)"
timeout 280 $py benchmarks/gpu_backend.py --n $sizes --numpy-patients ${NUMPY_PATIENTS:-1000} --json "$out/gpu.json" 2>&1 \
    | grep -v "^WARNING"

echo "== tests/test_backend_jax.py on the GPU"
timeout 70 $py -m pytest -q -n 0 -p no:cacheprovider tests/test_backend_jax.py 2>&1 | tail -15 | tee "$out/pytest.txt"

echo "== whole run, numpy (CPU) vs jax (GPU), 1,000 patients"
for b in numpy jax; do
    { time timeout 60 $py -m carcell run examples/axicel_lbcl.yaml \
        -n 1000 --chunk-size 1000 --backend $b --out "/tmp/gpu_check_$b" --no-plots; } > "$out/run_$b.txt" 2>&1
    tail -2 "$out/run_$b.txt"
done
$py benchmarks/compare_runs.py /tmp/gpu_check_numpy /tmp/gpu_check_jax --json "$out/agreement.json" 2>&1

echo "== whole run on the GPU, ${BIG_RUN:-20000} patients in one chunk (throughput of the full pipeline)"
{ time timeout 80 $py -m carcell run examples/axicel_lbcl.yaml -n ${BIG_RUN:-20000} --chunk-size ${BIG_RUN:-20000} \
    --backend jax --out /tmp/gpu_check_big --no-plots; } > "$out/run_big.txt" 2>&1
tail -2 "$out/run_big.txt"
