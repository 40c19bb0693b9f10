#!/usr/bin/env bash
# The checks that need a CUDA device, run by hand on a machine that has one (CI has none;
# the CPU suite skips the CUDA tests).
#
#   bash benchmarks/gpu_check.sh OUTDIR            # PY=.venv/bin/python by default
#   ITER=2 DEVICE=cpu SIZES=32 bash benchmarks/gpu_check.sh /tmp/g   # a dry run of the flow on a CPU
#
# Each step has its own time limit and writes OUTDIR/<step>.log; a failing step is
# reported and the next one runs; the exit status is the number of failed steps.
#   1 cuda-tests  the CUDA tests: every extractor and upsampler on CUDA against the CPU,
#                 fp32 and fp16 autocast (tests/test_extractors.py, tests/test_upsamplers.py)
#   2 routing     TADT with 4N/3N/2N/N active branches against the Baseline on CUDA
#                 (benchmarks/bench_tadt_routing.py, wall time, CUDA-synchronised); the
#                 FLOPs ratios do not depend on the device: count them on a CPU with the
#                 same script (its FLOPs columns)
#   3 train-*     paper widths and patch sizes (config/paper.yaml) on the embedded photographs,
#                 ITER steps each: every extractor but TADT with LIIF, the Baseline with LTE
#                 and MetaSR, in fp32; EDSR-baseline-LIIF and Baseline-LIIF with train.amp;
#                 TADT-LIIF fine-tuned from those Baselines (amp and fp32); EDSR-baseline-LIIF
#                 through torchrun (NCCL, one process); train-summary gives the steady
#                 iterations per second of each and the hours 1M steps (the paper's 1000
#                 epochs) would take at that rate
#   4 eval        the TADT-LIIF checkpoint evaluated on CPU and on CUDA: per-image PSNRs
#                 and routing must agree
set -u
OUTDIR=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
PY=${PY:-.venv/bin/python}
ITER=${ITER:-60}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-240 480}
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT  # checkpoints and data cache, also when interrupted
export PYTHONUNBUFFERED=1
failed=0

step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc, $((SECONDS - t0)) s"
  tail -n 12 "$OUTDIR/$name.log" | sed 's/^/   | /'
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

"$PY" - <<'EOF' 2>&1 | tee "$OUTDIR/device.log"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("cuda", torch.version.cuda, p.name, f"{p.total_memory / 2**30:.0f} GiB", "bf16", torch.cuda.is_bf16_supported())
else:
    print("no CUDA device")
EOF

step cuda-tests 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_extractors.py tests/test_upsamplers.py -k cuda

for size in $SIZES; do
  step "routing-$size" 240 "$PY" benchmarks/bench_tadt_routing.py --device "$DEVICE" --size "$size" \
    --repeats 20 --warmup 3 --no-flops
done

# paper widths and schedule shape, the embedded photographs as data, ITER steps
cat >"$WORK/overlay.yaml" <<EOF
results: $WORK/results
device: $DEVICE
data: {source: embedded, root: $WORK/data, cache: $WORK/cache}
train: {iterations: $ITER, milestones: [$((ITER * 10))], checkpoint_every: $((ITER * 10)), log_every: 10,
        num_workers: 4, threads: 8}
EOF
printf 'train: {amp: true}\n' >"$WORK/amp.yaml"
CFG=(--config config/paper.yaml --config "$WORK/overlay.yaml")
AMP=("${CFG[@]}" --config "$WORK/amp.yaml")
C=$WORK/results/checkpoints
for run in edsr-baseline-liif rdn-liif rcan-liif swinir-liif baseline-liif baseline-lte baseline-metasr; do
  step "train-$run-fp32" 240 "$PY" -m harness train "${CFG[@]}" --run "$run" --progress plain \
    --out "$C/$run-fp32.pth" --log "$OUTDIR/train-$run-fp32.csv"
done
for run in edsr-baseline-liif baseline-liif; do
  step "train-$run-amp" 240 "$PY" -m harness train "${AMP[@]}" --run "$run" --progress plain \
    --out "$C/$run.pth" --log "$OUTDIR/train-$run-amp.csv"
done
step train-tadt-liif-amp 240 "$PY" -m harness train "${AMP[@]}" --run tadt-liif --progress plain \
  --init "$C/baseline-liif.pth" --out "$C/tadt-liif.pth" --log "$OUTDIR/train-tadt-liif-amp.csv"
step train-tadt-liif-fp32 240 "$PY" -m harness train "${CFG[@]}" --run tadt-liif --progress plain \
  --init "$C/baseline-liif-fp32.pth" --out "$C/tadt-liif-fp32.pth" --log "$OUTDIR/train-tadt-liif-fp32.csv"
if [ "$DEVICE" = cuda ]; then
  step train-torchrun-nccl 240 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m harness -- \
    train "${CFG[@]}" --run edsr-baseline-liif --progress plain \
    --out "$C/ddp.pth" --log "$OUTDIR/train-torchrun-nccl.csv"
fi
# steady iterations per second: the median of the logged rates after the first log_every steps
step train-summary 60 "$PY" - "$OUTDIR" <<'EOF2'
import csv, statistics, sys
from pathlib import Path
print(f"{'run':<36} {'it/s':>7} {'h per 1M steps':>15}")
for p in sorted(Path(sys.argv[1]).glob("train-*.csv")):
    rates = [float(r["it_per_s"]) for r in csv.DictReader(open(p))][1:]
    if rates:
        r = statistics.median(rates)
        print(f"{p.stem[6:]:<36} {r:>7.2f} {1e6 / r / 3600:>15.1f}")
EOF2

for dev in cpu "$DEVICE"; do
  step "eval-$dev" 240 "$PY" -m harness evaluate "${CFG[@]}" --checkpoint "$C/tadt-liif.pth" \
    --dataset div2k-valid --scales 3,4,12 --max-images 2 --device "$dev" --progress none \
    --out "$OUTDIR/eval-$dev.csv"
done
step eval-compare 60 "$PY" - "$OUTDIR/eval-cpu.csv" "$OUTDIR/eval-$DEVICE.csv" <<'EOF'
import csv, sys
a, b = ([r for r in csv.DictReader(open(p))] for p in sys.argv[1:3])
assert len(a) == len(b) > 0, (len(a), len(b))
worst = 0.0
for x, y in zip(a, b):
    assert (x["scale"], x["image"], x["active_branches"]) == (y["scale"], y["image"], y["active_branches"]), (x, y)
    d = abs(float(x["psnr"]) - float(y["psnr"]))
    worst = max(worst, d)
    print(x["scale"], x["image"], x["active_branches"], x["psnr"], y["psnr"], f"{d:.2e}")
print(f"rows {len(a)}, max |PSNR difference| {worst:.2e} dB")
assert worst < 1e-3, worst
EOF

echo "failed steps: $failed"
exit "$failed"
