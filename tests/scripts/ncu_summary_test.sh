#!/usr/bin/env bash
# scripts/ncu_summary.py on a small Nsight Compute CSV in ncu's own format (no GPU): the profiler's message lines
# are skipped, launches are grouped by kernel name with the parameter list and ncu's "unnamed>::" dropped, times
# (ns, us) and bytes (byte, Mbyte) are scaled, --last keeps the last launches only, and a file without metric rows
# is refused with its name.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
row() {  # id kernel metric unit value
  printf '"%s","1","bench","127.0.0.1","%s","1","7","(128, 1, 1)","(8, 1, 1)","0","9.0","Command line profiler metrics","%s","%s","%s"\n' "$@"
}
{
  echo '==PROF== Connected to process 1 (bench)'
  echo '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
  # launch 0: a kernel of 2 us moving 4 MB (2 TB/s); launches 1 and 2: another kernel, 10 us and 30 us, 1 MB each.
  row 0 "void unnamed>::cast_kernel<192>(Params)" gpu__time_duration.sum us 2
  row 0 "void unnamed>::cast_kernel<192>(Params)" dram__bytes_read.sum Mbyte 3
  row 0 "void unnamed>::cast_kernel<192>(Params)" dram__bytes_write.sum byte "1,000,000"
  row 1 "void unnamed>::main_kernel<192, 128>(Params, unnamed>::Maps, int)" gpu__time_duration.sum ns "10,000"
  row 1 "void unnamed>::main_kernel<192, 128>(Params, unnamed>::Maps, int)" dram__bytes_read.sum byte "1,000,000"
  row 2 "void unnamed>::main_kernel<192, 128>(Params, unnamed>::Maps, int)" gpu__time_duration.sum ns "30,000"
  row 2 "void unnamed>::main_kernel<192, 128>(Params, unnamed>::Maps, int)" dram__bytes_read.sum byte "1,000,000"
  echo '==PROF== Disconnected from process 1'
} > "$tmp/run.csv"
out=$(python3 "$here/scripts/ncu_summary.py" "$tmp/run.csv")
echo "$out"
echo "$out" | grep -Eq '^3 launches, 0\.042 ms of kernel time$'
# largest total first: main_kernel 40 us in 2 calls (20 us each, 1 MB each, 50 GB/s), then cast_kernel.
echo "$out" | sed -n 3p | grep -Eq '^ +0\.040 +95\.2% +2 +20\.0 +1\.00 +50  main_kernel<192, 128>$'
echo "$out" | sed -n 4p | grep -Eq '^ +0\.002 +4\.8% +1 +2\.0 +4\.00 +2000  cast_kernel<192>$'
out=$(python3 "$here/scripts/ncu_summary.py" "$tmp/run.csv" --last 0.34)
echo "$out" | grep -Eq '^1 launches, 0\.030 ms of kernel time$'
head -2 "$tmp/run.csv" > "$tmp/empty.csv"
if msg=$(python3 "$here/scripts/ncu_summary.py" "$tmp/empty.csv" 2>&1); then
  echo "ncu_summary.py accepted a file without metric rows"; exit 1
fi
echo "$msg" | grep -q "no metric rows in $tmp/empty.csv"
echo "ncu_summary_test: ok"
