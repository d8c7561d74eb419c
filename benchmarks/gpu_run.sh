#!/usr/bin/env bash
# The device machine's side of benchmarks/gpu_models.py: install the wheels carried in .whl/ (gpu_wheels.sh fetched
# them), put the fp16 word-embedding data in place, run the measurement, leave the JSON and the log in $OUT.
#
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl", "models/semantic-minilm/model.fp16.external.bin"],
#       timeout_s=540)
#
# Extra arguments go to benchmarks.gpu_models. Without onnxruntime-gpu in .whl/, the image's own onnxruntime runs,
# and the script stops with exit 2 if that has no CUDA provider (the JSON says which providers it has).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build}
mkdir -p "$OUT"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site
# Both fp16 models freeze the same word-embedding matrix: one derived file travels, and serves both.
for model in safety-minilm semantic-minilm; do
  [[ -f models/$model/model.fp16.external.bin ]] \
    || cp models/semantic-minilm/model.fp16.external.bin "models/$model/" || exit 1
done
# onnxruntime-gpu's CUDA provider loads CUDA 13 and cuDNN 9 by name (no RPATH); the image's nvidia-* packages,
# which its torch uses, hold them (as Dockerfile.gpu registers them with the dynamic linker).
LD_LIBRARY_PATH=$(python3 -c 'import nvidia, pathlib as p
print(":".join(sorted({str(q.parent) for d in nvidia.__path__ for q in p.Path(d).rglob("lib*.so*")})))'):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH

nvidia-smi -L
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.__file__, o.get_available_providers())'
PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_models --steps .whl/steps.jsonl --token-bounds 4096,32768 \
  --out "$OUT/gpu_models.json" "$@" 2>&1 | tee "$OUT/gpu_models.log"
