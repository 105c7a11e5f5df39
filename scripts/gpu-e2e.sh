#!/usr/bin/env bash
# GPU machine check: runs a driver-API program (PTX module, several kernels)
# natively and through gpupool over loopback, compares the output, and puts
# the timings side by side.
#
# Needs the release binaries already built (this script does not run cargo):
#   cargo build --release --workspace
# and, on the GPU machine, the NVIDIA driver (libcuda.so.1) and nvcc or cc.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${GPUPOOL_BIN:-$ROOT/target/release}
WORK=$(mktemp -d)
trap 'kill ${SERVER:-0} 2>/dev/null || true; rm -rf "$WORK"' EXIT

for f in gpupool-server libcuda.so; do
    [ -e "$BIN/$f" ] || { echo "missing $BIN/$f: run cargo build --release --workspace first" >&2; exit 1; }
done
REAL=$(ldconfig -p | awk '/libcuda\.so\.1 / {print $NF; exit}')
[ -n "$REAL" ] || { echo "no libcuda.so.1 on this machine: this script needs a GPU machine" >&2; exit 1; }

CC_BIN=$(command -v nvcc || command -v cc)
echo "== compiling tests/c/driver_check.c with $CC_BIN"
if [[ "$CC_BIN" == *nvcc ]]; then
    nvcc -O2 -x c -o "$WORK/driver_check" tests/c/driver_check.c -ldl
else
    cc -O2 -o "$WORK/driver_check" tests/c/driver_check.c -ldl
fi
mkdir -p "$WORK/shim"
ln -sf "$BIN/libcuda.so" "$WORK/shim/libcuda.so.1"

GPUPOOL_STATE_DIR="$WORK/state" GPUPOOL_LOG=warn "$BIN/gpupool-server" --listen-tcp 127.0.0.1:0 --driver "$REAL" > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER=$!
for _ in $(seq 1 200); do grep -q ready "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
URL=$(grep -o 'tcp://[^ ]*' "$WORK/server.out")
echo "== server $URL on $REAL"

remote() { GPUPOOL_SERVER="$URL" LD_LIBRARY_PATH="$WORK/shim" "$WORK/driver_check" "$@"; }
native() { "$WORK/driver_check" "$@"; }

status=0
printf "%-12s %-8s %-8s %s\n" mode native remote same-output
for mode in vadd fault oob "big 256" streams; do
    n=$(native $mode 2>&1) && nr=ok || nr=fail
    r=$(remote $mode 2>&1) && rr=ok || rr=fail
    same=no; [ "$(grep -v '^device' <<<"$n" | grep OK)" = "$(grep -v '^device' <<<"$r" | grep OK)" ] && same=yes
    printf "%-12s %-8s %-8s %s\n" "$mode" "$nr" "$rr" "$same"
    [ "$nr$rr$same" = "okokyes" ] || { status=1; echo "--- native:"; echo "$n"; echo "--- remote:"; echo "$r"; }
done

echo "== timings (native | through gpupool, loopback TCP)"
paste <(native bench 5000 | grep BENCH) <(remote bench 5000 | grep BENCH | sed 's/^BENCH /| /')
paste <(native bw 1024 | grep BENCH) <(remote bw 1024 | grep BENCH | sed 's/^BENCH bw /| /')
if [ -x "$BIN/gpupool-e2e-bench" ]; then
    echo "== harness (gpupool beside bare transports)"
    "$BIN/gpupool-e2e-bench" --driver "$REAL" --max-mib 1024 || status=1
fi
exit $status
