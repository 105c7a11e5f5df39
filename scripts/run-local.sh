#!/usr/bin/env bash
# Starts a local gpupool pool and runs a sample driver-API program through it.
#
# The pool: a broker (state in target/gpupool-run), and a GPU server that
# registers its GPUs with it. The server uses this machine's GPUs through the
# real libcuda.so.1; on a machine with none it runs on the software driver,
# and says "simulated" wherever that shows. The sample program names only the
# broker: its shim takes a lease, connects to the server over loopback TCP
# with the lease's token, and at exit releases the lease and prints where each
# call went and what it cost.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export NO_COLOR=1
command -v cc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq gcc libc6-dev; }
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

echo "== building gpupool (release)"
cargo build --release -p gpupool-gpu-server -p gpupool-client-shim -p gpupool-soft-driver -p gpupool-broker
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
BROKER_PORT=${GPUPOOL_BROKER_PORT:-7080}
BROKER="http://127.0.0.1:$BROKER_PORT"
# Local secrets, made once and kept with the pool's state.
mkdir -p "$WORK/broker"
[ -s "$WORK/broker/secrets" ] || printf 'ADMIN=%s\nSECRET=%s\n' \
    "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" \
    > "$WORK/broker/secrets"
# shellcheck disable=SC1091
. "$WORK/broker/secrets"
export GPUPOOL_BROKER_ADMIN_TOKEN="$ADMIN"

wait_ready() { # file pid what
    for _ in $(seq 1 100); do
        grep -q ready "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "$3 did not start:" >&2; cat "$4" >&2; exit 1; }
        sleep 0.1
    done
    echo "$3 did not get ready" >&2; exit 1
}

echo "== starting gpupool-broker on $BROKER (state: $WORK/broker)"
GPUPOOL_BROKER_SERVER_SECRET="$SECRET" GPUPOOL_BROKER_SIGNING_KEY_FILE="$WORK/broker/signing.key" \
    "$BIN/gpupool-broker" --listen "127.0.0.1:$BROKER_PORT" --db "$WORK/broker/broker.redb" \
    > "$WORK/broker.out" 2> "$WORK/broker.log" &
BROKER_PID=$!
trap 'kill $BROKER_PID 2>/dev/null || true' EXIT
wait_ready "$WORK/broker.out" $BROKER_PID gpupool-broker "$WORK/broker.log"

echo "== starting gpupool-server on 127.0.0.1:$PORT: $KIND"
GPUPOOL_STATE_DIR="$WORK/state" GPUPOOL_SERVER_ID=local GPUPOOL_BROKER="$BROKER" \
    GPUPOOL_BROKER_SERVER_SECRET="$SECRET" GPUPOOL_ADVERTISE="tcp://127.0.0.1:$PORT" \
    "$BIN/gpupool-server" --listen-tcp "127.0.0.1:$PORT" "${DRIVER_ARGS[@]}" \
    > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER=$!
trap 'kill $SERVER $BROKER_PID 2>/dev/null || true' EXIT
wait_ready "$WORK/server.out" $SERVER gpupool-server "$WORK/server.log"
cat "$WORK/server.out"
for _ in $(seq 1 100); do
    "$BIN/gpupool" --broker "$BROKER" servers 2>/dev/null | grep -q '^local ' && break
    sleep 0.1
done
echo "== the pool (gpupool servers; gpupool gpus)"
"$BIN/gpupool" --broker "$BROKER" servers
"$BIN/gpupool" --broker "$BROKER" gpus

echo "== running a driver-API program (PTX module, copies, launches) on a lease: half a GPU"
GPUPOOL_BROKER="$BROKER" GPUPOOL_BROKER_TOKEN="$ADMIN" GPUPOOL_REQUEST="memory_mib=4096,compute=0.5" \
    GPUPOOL_CALL_REPORT=1 LD_LIBRARY_PATH="$WORK/shim" "$WORK/driver_check" vadd
echo "== leases (gpupool leases)"
"$BIN/gpupool" --broker "$BROKER" leases
echo "== logs: $WORK/server.log, $WORK/broker.log"
tail -n 3 "$WORK/server.log"
