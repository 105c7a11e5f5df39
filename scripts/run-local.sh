#!/usr/bin/env bash
# Starts a local gpupool pool and runs a sample driver-API program through it.
#
# The GPU server uses this machine's GPUs through the real libcuda.so.1; on a
# machine with none it runs on the software driver, and says "simulated"
# wherever that shows. The sample program's calls go through the gpupool shim
# over loopback TCP; at exit the shim prints where each call went and what it
# cost.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v cc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq gcc libc6-dev; }
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

echo "== building gpupool (release)"
cargo build --release -p gpupool-gpu-server -p gpupool-client-shim -p gpupool-soft-driver
BIN="$ROOT/target/release"
WORK="$ROOT/target/gpupool-run"
mkdir -p "$WORK/shim"
ln -sf "$BIN/libcuda.so" "$WORK/shim/libcuda.so.1"
cc -O2 -o "$WORK/driver_check" tests/c/driver_check.c -ldl

REAL_DRIVER=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')
if [ -n "${GPUPOOL_DRIVER:-}" ]; then
    DRIVER_ARGS=(--driver "$GPUPOOL_DRIVER"); KIND="driver $GPUPOOL_DRIVER"
elif [ -n "$REAL_DRIVER" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    DRIVER_ARGS=(--driver "$REAL_DRIVER"); KIND="real GPUs ($REAL_DRIVER)"
else
    DRIVER_ARGS=(--driver "$BIN/libgpupool_softcuda.so" --simulated)
    KIND="SIMULATED GPU (software driver; this machine has no GPU)"
fi
PORT=${GPUPOOL_PORT:-7070}
echo "== starting gpupool-server on 127.0.0.1:$PORT: $KIND"
GPUPOOL_STATE_DIR="$WORK/state" "$BIN/gpupool-server" --listen-tcp "127.0.0.1:$PORT" "${DRIVER_ARGS[@]}" \
    > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q ready "$WORK/server.out" 2>/dev/null && break
    kill -0 $SERVER 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
cat "$WORK/server.out"

echo "== running a driver-API program (PTX module, copies, launches) through the shim"
GPUPOOL_SERVER="tcp://127.0.0.1:$PORT" GPUPOOL_CALL_REPORT=1 LD_LIBRARY_PATH="$WORK/shim" "$WORK/driver_check" vadd
echo "== server log: $WORK/server.log"
tail -n 3 "$WORK/server.log"
