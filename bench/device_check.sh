#!/usr/bin/env bash
# The prepared GPU check (issue 23, item 5): what a lent CUDA machine is for, in one script
# of under 5 minutes, with the CPU figures of the same machine beside the GPU's.
#
#   bash bench/device_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else outputs/device_check
#
# 1. the `gpu`-marked tests (tests/nn/test_gpu.py: a run on CUDA follows the CPU run and its
#    checkpoint loads on a CPU; Hessian-free on CUDA; the small-net fast path on CUDA equals
#    the general path; sampling on CUDA);
# 2. bench/small_nets.py (Pascanu config, T=100) on CUDA and on the CPU;
# 3. char-LM training throughput: experiment=charlm_quick (LSTM 256, batch 32) and the
#    charlm_shakespeare net (2 x 512 LSTM, batch 64), a few hundred steps each, on CUDA and on
#    the CPU, read from each run's metrics.json (step_time_ms);
# 4. sampling throughput (bench/sample.py, 2 x 512 LSTM, batch 1) on CUDA and on the CPU.
#
# Without CUDA (any machine of ours) it runs the CPU half and says so. On the lent machine,
# whose image has torch but not hydra-core/omegaconf, wheels carried in .whl/ are installed
# into /tmp/site first, and the package runs from the tree (rnnexp/conf linked to conf/). The
# corpus is $RNNEXP_TEXT, else ../shared/data/tinyshakespeare/input.txt, else .devdata/input.txt.
# Everything is logged to OUT_DIR/device_check.log; the figures go to OUT_DIR/summary.md.
set -u
out=${1:-${OUT:-outputs/device_check}}
mkdir -p "$out"
log="$out/device_check.log"
summary="$out/summary.md"
: >"$log"
: >"$summary"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1

say() { echo "$*" | tee -a "$summary"; }
section() { echo -e "\n===== $* =====" | tee -a "$log"; }
# step NAME SECONDS CMD...: run CMD with a time limit, its output in the log; say how it ended
step() {
  local name=$1 limit=$2 start rc
  shift 2
  section "$name: $*"
  start=$(date +%s)
  timeout "$limit" "$@" >>"$log" 2>&1
  rc=$?
  say "- $name: exit $rc in $(($(date +%s) - start)) s"
  return $rc
}

if [ -d .whl ] && ! $py -c "import hydra, omegaconf" 2>/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# the package of this tree, not another install: rnnexp/conf is conf/ (as in the wheel)
[ -e rnnexp/conf ] || ln -s ../conf rnnexp/conf
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
text=${RNNEXP_TEXT:-../shared/data/tinyshakespeare/input.txt}
[ -f "$text" ] || text=.devdata/input.txt

cuda=$($py -c "import torch; print(int(torch.cuda.is_available()))" 2>>"$log")
devices=cpu
[ "$cuda" = 1 ] && devices="cuda cpu"
say "# device check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "$($py -c "import torch, os; print(f'torch {torch.__version__}, CUDA: ' + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none') + f', {os.cpu_count()} CPUs')" 2>&1)"
[ "$cuda" = 1 ] || say "no CUDA device: the CPU half only"
command -v nvidia-smi >/dev/null && nvidia-smi >>"$log" 2>&1

# 1. the gpu-marked tests (skipped, and said so, without CUDA)
step "gpu tests" 300 $py -m pytest -q -p no:cacheprovider -m gpu tests/nn/test_gpu.py
say "  $(grep -E '(passed|failed|skipped|error).* in [0-9.]+s' "$log" | tail -1)"

# 2. small nets: ms per training step, Pascanu config, T=100
for d in $devices; do
  step "small nets ($d)" 120 $py bench/small_nets.py --lengths 100 --rounds 5 --steps 20 --device "$d"
done

# 3. char-LM training throughput from metrics.json (step_time_ms), cuda and cpu side by side
train_rate() { # NAME DEVICE STEPS CHARS_PER_STEP OVERRIDES...
  local name=$1 device=$2 steps=$3 chars=$4 dir="$out/runs/$1-$2"
  shift 4
  step "train $name ($device)" 150 $py -m rnnexp train "$@" "task.data.path=$text" \
    "train.device=$device" "train.max_steps=$steps" "train.eval_every=$steps" \
    task.num_val=5000 task.num_test=5000 task.calibrate=false train.progress=false \
    "hydra.run.dir=$dir" || return
  $py - "$dir/metrics.json" "$name" "$device" "$chars" <<'EOF' | tee -a "$summary"
import json, sys
m = json.load(open(sys.argv[1]))
ms, chars = m["step_time_ms"], int(sys.argv[4])
print(f"  {sys.argv[2]} on {sys.argv[3]}: {ms:.1f} ms/step, {1000 * chars / ms:,.0f} chars/s "
      f"({chars} chars a step), {m['steps']} steps, test loss {m['final']['loss']:.3f}")
EOF
}
for d in $devices; do
  train_rate charlm_quick "$d" 300 1600 experiment=charlm_quick # batch 32 x 50
  train_rate charlm_shakespeare "$d" 100 3200 experiment=charlm_shakespeare # 64 x 50
done

# 4. sampling throughput, batch 1
for d in $devices; do
  step "sample ($d)" 90 $py bench/sample.py --device "$d" --chars 1000 --fused-chars 200 --rounds 3
  grep -E "LSTM, vocabulary|chars/s" "$log" | tail -4 | sed 's/^/  /' | tee -a "$summary"
done
rm -rf "$out/runs"
say "log: $log"
