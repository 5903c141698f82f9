#!/usr/bin/env bash
# Where a training step's GPU time goes, on the GPU machine: builds latte (sm_90a) unless $LATTE is given,
# trains one config for a few steps with LATTE_PROFILE_OPS=1 and prints latte's per-op table (device time per
# step by op, and the share of the step the device waits on the host). Where Nsight Systems is installed it
# then profiles the same run and ranks the individual kernels too (the lent H100 image has no nsys).
#   CONFIG=configs/models/egmla-125m.yaml BATCH=16 SEQ=1024 STEPS=30 DATA=linuxdoc bash scripts/gpu_profile_step.sh
# PROFILE=callers splits each op by its caller (the autograd node or gradient accumulation that ran it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/latte-out}
mkdir -p "$OUT"
CONFIG=${CONFIG:-configs/models/egmla-125m.yaml}
BATCH=${BATCH:-16}
SEQ=${SEQ:-1024}
STEPS=${STEPS:-30}
DATA=${DATA:-linuxdoc}
LATTE=${LATTE:-}
if [ -z "$LATTE" ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 \
    > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build build-gpu -j "$(nproc)" --target latte_cli > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
  LATTE=build-gpu/latte
fi
name=$(basename "$CONFIG" .yaml)
cat > "/tmp/profile-$name.yaml" <<YAML
base: $PWD/$CONFIG
model: {max_seq_len: $SEQ}
train: {steps: $STEPS, micro_batch: $BATCH, seq_len: $SEQ, warmup_steps: 2, out_dir: /tmp/runs/profile-$name}
data: {train: $PWD/data/$DATA/${DATA}_train_*.bin, val: $PWD/data/$DATA/${DATA}_val_*.bin}
checkpoint: {every: 0, keep_last: 1, at_end: false}
eval: {every: 0, batches: 2}
log: {every: 10}
YAML
rm -rf "/tmp/runs/profile-$name"
LATTE_PROFILE_OPS=${PROFILE:-1} "$LATTE" train "/tmp/profile-$name.yaml" > "$OUT/ops-$name.log" 2>&1 || tail -20 "$OUT/ops-$name.log"
sed -n '/op profile/,/^  host:/p' "$OUT/ops-$name.log"
rm -rf "/tmp/runs/profile-$name"
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
if [ -z "$NSYS" ]; then echo "(no nsys on this machine: kernel-level ranking skipped)"; exit 0; fi
# Every step is profiled (the first also builds plans and autotunes); the busy share is taken over the last half.
"$NSYS" profile -o "$OUT/profile-$name" --force-overwrite true --trace cuda --sample none --cpuctxsw none \
  "$LATTE" train "/tmp/profile-$name.yaml" > "$OUT/profile-train-$name.log" 2>&1 || tail -20 "$OUT/profile-train-$name.log"
grep -E "step +$STEPS|tok/s" "$OUT/profile-train-$name.log" | tail -2
"$NSYS" stats --report cuda_gpu_kern_sum --format csv --output "$OUT/kern-$name" "$OUT/profile-$name.nsys-rep" > /dev/null 2>&1
"$NSYS" stats --report cuda_gpu_trace --format csv --output "$OUT/trace-$name" "$OUT/profile-$name.nsys-rep" > /dev/null 2>&1
python3 - "$OUT/kern-${name}_cuda_gpu_kern_sum.csv" "$OUT/trace-${name}_cuda_gpu_trace.csv" "$STEPS" <<'PY'
import csv, sys
kern, trace, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.DictReader(open(kern)))
total = sum(float(r["Total Time (ns)"]) for r in rows)
print(f"kernel time {total / 1e6:.1f} ms over the run ({steps} steps)")
print(f"{'share':>6} {'total ms':>9} {'calls':>7} {'mean us':>8}  kernel")
for r in rows[:30]:
    t = float(r["Total Time (ns)"])
    print(f"{100 * t / total:5.1f}% {t / 1e6:9.1f} {int(r['Instances']):7d} {float(r['Avg (ns)']) / 1e3:8.1f}  {r['Name'][:110]}")
# GPU busy vs wall over the last half of the run (kernels and copies; steady state).
ev = []
for r in csv.DictReader(open(trace)):
    try:
        s = float(r["Start (ns)"]); d = float(r["Duration (ns)"])
    except (KeyError, ValueError):
        continue
    ev.append((s, s + d))
ev.sort()
if ev:
    t0, t1 = ev[len(ev) // 2][0], ev[-1][1]
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in ev:
        if s < t0: continue
        if cur_e is None or s > cur_e:
            if cur_e is not None: busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None: busy += cur_e - cur_s
    print(f"GPU busy {100 * busy / (t1 - t0):.1f}% of the last half of the run ({(t1 - t0) / 1e6:.0f} ms)")
PY
