#!/usr/bin/env bash
# Starts a latte command on N processes with mpirun (one process per GPU), on this node or on the
# nodes of an OpenMPI hostfile:
#
#   scripts/launch.sh -n 8 -- latte train configs/examples/gpt2-small.yaml --set parallel.dp=4 --set parallel.tp=2
#   scripts/launch.sh -n 16 --hostfile hosts.txt -- build/latte train cfg.yaml
#
# Ranks are placed by slot (consecutive ranks on one node, so tensor-parallel groups stay inside a
# node) and not bound to cores (the data loader and NCCL start threads of their own). Environment
# set for every rank (the caller's value wins where marked "default"):
#   NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1   always: NVLink multicast stays off
#   NCCL_DEBUG=WARN (default)                                  NCCL explains its failures
#   OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1 (defaults)       no thread oversubscription across ranks
# Options:
#   -n N            number of processes (required)
#   --hostfile F    OpenMPI hostfile ("node1 slots=8" per line); without it, all N run on this node
#   --dry-run       print the mpirun command instead of running it
#   --mpirun-arg A  pass A to mpirun (repeatable), e.g. --mpirun-arg "--mca btl_tcp_if_include eth0"
# Anything after "--" is the command each rank runs ("latte" is looked up in build/ when not on PATH).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }

nprocs=""
hostfile=""
dry_run=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--np) nprocs="${2:-}"; shift 2 ;;
    --hostfile) hostfile="${2:-}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --mpirun-arg) read -r -a more <<< "${2:-}"; extra+=("${more[@]}"); shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option '$1' (the command goes after --)" >&2; usage 2 ;;
  esac
done

[ -n "$nprocs" ] || { echo "launch.sh: -n N is required" >&2; usage 2; }
[[ "$nprocs" =~ ^[1-9][0-9]*$ ]] || { echo "launch.sh: -n needs a positive integer, got '$nprocs'" >&2; exit 2; }
[ $# -gt 0 ] || { echo "launch.sh: no command; put it after --, e.g. -- latte train cfg.yaml" >&2; exit 2; }
if [ -n "$hostfile" ] && [ ! -r "$hostfile" ]; then
  echo "launch.sh: hostfile '$hostfile' not found or not readable" >&2; exit 2
fi
command -v mpirun > /dev/null || { echo "launch.sh: mpirun not found; install OpenMPI (scripts/setup.sh)" >&2; exit 2; }

# "latte" resolves to the build tree's binary when it is not installed.
cmd=("$@")
if [ "${cmd[0]}" = "latte" ] && ! command -v latte > /dev/null; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  if [ -x "$root/${LATTE_BUILD_DIR:-build}/latte" ]; then
    cmd[0]="$root/${LATTE_BUILD_DIR:-build}/latte"
  else
    echo "launch.sh: 'latte' is not on PATH and $root/${LATTE_BUILD_DIR:-build}/latte does not exist; build first (scripts/setup.sh)" >&2
    exit 2
  fi
fi

args=(-np "$nprocs" --bind-to none --map-by slot)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
if [ -n "$hostfile" ]; then
  args+=(--hostfile "$hostfile")
else
  # One node: allow more processes than cores (CPU runs and tests); GPUs are checked by latte.
  args+=(--oversubscribe)
fi
export NCCL_NVLS_ENABLE=0
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export NVSHMEM_DISABLE_NVLS=1
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
# -x forwards the variables to ranks on other nodes.
for var in NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST NVSHMEM_DISABLE_NVLS NCCL_DEBUG OMP_NUM_THREADS OPENBLAS_NUM_THREADS; do
  args+=(-x "$var")
done
for var in $(compgen -e | grep -E '^(NCCL_|LATTE_|CUDA_VISIBLE_DEVICES$)' || true); do
  case " ${args[*]} " in *" $var "*) ;; *) args+=(-x "$var") ;; esac
done

full=(mpirun "${args[@]}" "${extra[@]}" "${cmd[@]}")
if [ "$dry_run" -eq 1 ]; then
  printf '%q ' "${full[@]}"; echo
  exit 0
fi
exec "${full[@]}"
