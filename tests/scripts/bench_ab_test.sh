#!/usr/bin/env bash
# scripts/bench_ab.py on fake bench_attention binaries (no GPU): a decode table and --backward lines are parsed,
# the environment settings of a variant reach its runs, --rows reaches every variant as LATTE_BENCH_ROWS, the
# medians and the A/B column are right, and a variant without a binary is refused with its name.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/bench" <<'FAKE'
#!/usr/bin/env bash
# A fake bench_attention: its decode ratio is $RATIO (default 0.400), its backward TFLOP/s $TF (default 300.0).
r=${RATIO:-0.400}; tf=${TF:-300.0}
# With LATTE_BENCH_ROWS set (bench_ab.py --rows), the ratio is 0.250 instead: proof that it arrived.
[ -n "${LATTE_BENCH_ROWS:-}" ] && [ "$LATTE_BENCH_ROWS" = "H16|H128" ] && r=0.250
if [ "$1" = --backward ]; then
  echo "flash bwd   B4 T4096 H16 (64,64) causal: 1.000 ms $tf TFLOP/s, back to back 0.990 ms 303.0 TFLOP/s"
  exit 0
fi
printf '%-34s %-36s %10s %12s %-8s %8s %s\n' kernel shape ms rate unit ratio of
printf '%-34s %-36s %10.4f %12.1f %-8s %8.3f %s\n' "copy (d2d, read+write)" "1 GiB" 0.7191 2986.5 GB/s 1.000 copy
printf '%-34s %-36s %10.4f %12.1f %-8s %8.3f %s\n' "latte decode latent (8 back to back)" "B1 S32k H16 Dc96 Dr32" 0.0124 678.2 GB/s "$r" "copy bw"
FAKE
chmod +x "$tmp/bench"
out=$(python3 "$here/scripts/bench_ab.py" --rounds 2 --mode decode-models "a=$tmp/bench,RATIO=0.500" "b=$tmp/bench" 2>/dev/null)
echo "$out"
echo "$out" | grep -Eq '^latte decode latent \(8 back to back\) B1 S32k H16 Dc96 Dr32 +0\.500 \[0\.500-0\.500\] +0\.400 \[0\.400-0\.400\] +1\.250$'
echo "$out" | grep -Eq '^copy \(d2d, read\+write\) 1 GiB .* 1\.000$'
out=$(python3 "$here/scripts/bench_ab.py" --rounds 1 --mode decode-models --rows "H16|H128" "a=$tmp/bench" "b=$tmp/bench" 2>/dev/null)
echo "$out"
echo "$out" | grep -Eq '^latte decode latent \(8 back to back\) B1 S32k H16 Dc96 Dr32 +0\.250 \[0\.250-0\.250\] +0\.250 \[0\.250-0\.250\] +1\.000$'
out=$(python3 "$here/scripts/bench_ab.py" --mode backward "x=$tmp/bench,TF=330.0" "y=$tmp/bench" 2>/dev/null)
echo "$out"
echo "$out" | grep -Eq '^flash bwd B4 T4096 H16 \(64,64\) causal +330\.0 \[330\.0-330\.0\] +300\.0 \[300\.0-300\.0\] +1\.100$'
if msg=$(python3 "$here/scripts/bench_ab.py" "z=$tmp/missing" 2>&1); then
  echo "bench_ab.py accepted a missing binary"; exit 1
fi
echo "$msg" | grep -q "bench_ab: z: no executable"
echo "bench_ab_test: ok"
