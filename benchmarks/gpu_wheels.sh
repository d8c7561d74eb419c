#!/usr/bin/env bash
# Fetch, here, what `python -m benchmarks.gpu_models` needs on the device machine (Python 3.12, x86-64, no
# internet), into .whl/ (ignored: /.whl/ in .gitignore), and say whether one device call can carry it.
#
#   bash benchmarks/gpu_wheels.sh            # everything, onnxruntime-gpu included
#   ORT_GPU=0 bash benchmarks/gpu_wheels.sh  # without onnxruntime-gpu (the device's own onnxruntime is then used)
#
# Also writes .whl/steps.jsonl (the corpus test split: models/data/corpus.jsonl is ignored, so it does not travel)
# and checks the fp16 models' derived word-embedding file (`make fp16`), which does not travel either.
#
# The device image already holds numpy, pyyaml, tokenizers, prometheus-client, huggingface-hub, safetensors, joblib,
# tqdm, jinja2 and psutil (/work/.library/device/KINDS.md); safepath needs these besides, on the path the script
# takes (found with python -X importtime and a whole SafePathFilter run). Versions are the ones the venv runs.
#
# Exit status: 0 when one call can carry the tree, .whl/ and the derived data (the 64 MiB limit); 1 otherwise (the
# wheels are downloaded either way: the table says what does not fit).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
LIMIT_MIB=64
# onnxruntime-gpu has no 1.32.0 (our CPU onnxruntime); 1.31.1 is the newest on PyPI (CUDA 13, cuDNN 9).
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
WHEELS=(
  "pydantic==2.14.4" "pydantic-core==2.50.5" "pydantic-settings==2.16.3" "python-dotenv==1.2.4"
  "typing-inspection==0.4.5" "annotated-types==0.8.0" "typing-extensions==4.16.0"
  "google-re2==1.1.20251105" "confusable-homoglyphs==3.3.1" "model2vec==0.10.0"
)
if [[ "${ORT_GPU:-1}" != 0 ]]; then
  WHEELS+=("onnxruntime-gpu==${ORT_GPU_VERSION}")  # its needs (flatbuffers, protobuf, numpy) are there
fi

mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d .whl "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
done

"$PY" - <<'EOF'
import json
from pathlib import Path

rows = [line for line in Path("models/data/corpus.jsonl").read_text(encoding="utf-8").splitlines()
        if json.loads(line).get("split") == "test"] if Path("models/data/corpus.jsonl").is_file() else []
Path(".whl/steps.jsonl").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
print(f".whl/steps.jsonl: {len(rows)} test traces" if rows else "no corpus: the script will use make_trace steps")
EOF

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
tree=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
untracked=$(git ls-files -z -o --exclude-standard | xargs -0 -r stat -c %s | awk '{s += $1} END {print s + 0}')
ort=$(find .whl -name 'onnxruntime_gpu-*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
small=$(find .whl -type f ! -name 'onnxruntime_gpu-*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# Both fp16 models freeze the same word-embedding matrix: their derived files are byte-identical, so one travels.
derived=models/semantic-minilm/model.fp16.external.bin
if [[ -f $derived ]]; then data=$(stat -c %s "$derived"); else data=0; echo "missing $derived: run make fp16"; fi
total=$((tree + untracked + ort + small + data))

echo
echo "| what travels in one device call | MiB |"
echo "| --- | ---: |"
echo "| tracked files (git ls-files) | $(mib "$tree") |"
echo "| untracked, not ignored | $(mib "$untracked") |"
echo "| .whl/ onnxruntime-gpu | $(mib "$ort") |"
echo "| .whl/ the rest (wheels, steps.jsonl) | $(mib "$small") |"
echo "| $derived | $(mib "$data") |"
echo "| total (limit ${LIMIT_MIB}) | $(mib "$total") |"
if ((total > LIMIT_MIB * 1048576)); then
  echo "OVER the ${LIMIT_MIB} MiB a device call carries: see docs/BENCHMARKS.md, GPU" >&2
  exit 1
fi
