#!/usr/bin/env bash
# GPU machine check: runs a driver-API program (PTX module, several kernels),
# nvcc-built runtime programs (static and shared cudart, cuBLAS SGEMM) and
# PyTorch training steps natively and through gpupool over loopback, compares
# the outputs, and puts the timings side by side.
#
# Sections run in the order GPUPOOL_GPU_SECTIONS names (default
# "torch driver nvcc timings harness": PyTorch's step times, the figure
# that matters most, first). Each program run is stopped after
# GPUPOOL_GPU_RUN_TIMEOUT seconds (default 300) and counts as failed, so
# one hung run cannot take the rest of the script with it. PyTorch runs
# GPUPOOL_GPU_STEPS training steps of each model (default 300).
#
# Needs the release binaries already built (this script does not run cargo):
#   cargo build --release --workspace
# or, for a GPU machine without Rust, stripped copies made elsewhere by
# scripts/gpu-bundle.sh and named with GPUPOOL_BIN=target/gpu-bundle;
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
# GPUPOOL_GPU_DRIVER names another driver library: the software driver, for
# a dry run of this script on a machine without a GPU. Its runs through
# gpupool are checked; the "native" ones fail (the software driver serves a
# GPU server, not programs), so a dry run ends with status 1.
REAL=${GPUPOOL_GPU_DRIVER:-$(ldconfig -p | awk '/libcuda\.so\.1 / {print $NF; exit}')}
[ -n "$REAL" ] || { echo "no libcuda.so.1 on this machine: this script needs a GPU machine" >&2; exit 1; }
mkdir -p "$WORK/native"
ln -sf "$REAL" "$WORK/native/libcuda.so.1"
# Native runs find the driver first, as a GPU machine's programs do.
export LD_LIBRARY_PATH="$WORK/native${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

CC_BIN=$(command -v nvcc || command -v cc)
echo "== compiling tests/c/driver_check.c with $CC_BIN"
if [[ "$CC_BIN" == *nvcc ]]; then
    nvcc -O2 -x c -o "$WORK/driver_check" tests/c/driver_check.c -ldl
else
    cc -O2 -o "$WORK/driver_check" tests/c/driver_check.c -ldl
fi
mkdir -p "$WORK/shim"
ln -sf "$BIN/libcuda.so" "$WORK/shim/libcuda.so.1"
ln -sf "$BIN/libcuda.so" "$WORK/shim/libcuda.so"
[ -e "$BIN/libnvidia_ml.so" ] && ln -sf "$BIN/libnvidia_ml.so" "$WORK/shim/libnvidia-ml.so.1"

GPUPOOL_STATE_DIR="$WORK/state" GPUPOOL_LOG=warn "$BIN/gpupool-server" --listen-tcp 127.0.0.1:0 --driver "$REAL" > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER=$!
for _ in $(seq 1 200); do grep -q ready "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
URL=$(grep -o 'tcp://[^ ]*' "$WORK/server.out")
echo "== server $URL on $REAL"

RUN_TIMEOUT=${GPUPOOL_GPU_RUN_TIMEOUT:-300}
STEPS=${GPUPOOL_GPU_STEPS:-300}
# A program run, stopped (and failed) after RUN_TIMEOUT seconds.
limited() { timeout --kill-after=10 "$RUN_TIMEOUT" "$@"; }
# A program run through gpupool: the shim first on the library path.
through() { GPUPOOL_SERVER="$URL" LD_LIBRARY_PATH="$WORK/shim:${LD_LIBRARY_PATH:-}" limited "$@"; }
remote() { GPUPOOL_SERVER="$URL" LD_LIBRARY_PATH="$WORK/shim" limited "$WORK/driver_check" "$@"; }
native() { limited "$WORK/driver_check" "$@"; }

status=0

section_driver() {
    printf "%-12s %-8s %-8s %s\n" mode native remote same-output
    for mode in vadd library fault oob "big 256" streams copies2d queries callbacks pools pool-ipc vmm arrays managed graph ipc hostnodes vmm-ipc green reuse uva sync-threads; do
        n=$(native $mode 2>&1) && nr=ok || nr=fail
        r=$(remote $mode 2>&1) && rr=ok || rr=fail
        same=no; [ "$(grep -v '^device' <<<"$n" | grep OK)" = "$(grep -v '^device' <<<"$r" | grep OK)" ] && same=yes
        printf "%-12s %-8s %-8s %s\n" "$mode" "$nr" "$rr" "$same"
        [ "$nr$rr$same" = "okokyes" ] || { status=1; echo "--- native:"; echo "$n"; echo "--- remote:"; echo "$r"; }
    done
}

# Runtime-API programs as nvcc builds them: (a) static cudart, (b) shared
# cudart, (c) cuBLAS SGEMM checked against the CPU.
cuda_case() { # name, nvcc flags...
    local name=$1; shift
    nvcc -O2 -arch=sm_90 "$@" -o "$WORK/$name" "tests/cuda/${name%%-*}.cu" || { echo "$name: nvcc failed"; status=1; return; }
    cuda_run "$name"
}
cuda_run() { # name, program arguments...
    local name=$1; shift
    local n r nr=ok rr=ok
    n=$(limited "$WORK/$name" "$@" 2>&1) || nr=fail
    r=$(through "$WORK/$name" "$@" 2>&1) || rr=fail
    local same=no
    [ "$(grep OK <<<"$n")" = "$(grep OK <<<"$r")" ] && same=yes
    printf "%-24s %-8s %-8s %s\n" "$name $*" "$nr" "$rr" "$same"
    [ "$nr$rr$same" = "okokyes" ] || { status=1; echo "--- native:"; echo "$n"; echo "--- remote:"; echo "$r"; }
    paste <(grep BENCH <<<"$n") <(grep BENCH <<<"$r" | sed 's/^BENCH /| /') || true
}
section_nvcc() {
    if command -v nvcc >/dev/null 2>&1; then
        echo "== nvcc programs (native | through gpupool)"
        cuda_case cudart_check-static -cudart static
        cuda_case cudart_check-shared -cudart shared
        # Conditional nodes (if/else, while, switch, one put into a capture) and
        # programmatic edges on the real driver; memory shared between processes.
        cuda_run cudart_check-static conditional
        cuda_run cudart_check-shared conditional
        cuda_run cudart_check-static ipc
        # A kernel's printf, on the program's standard output among its lines.
        n=$(limited "$WORK/cudart_check-static" printf 2>&1 | grep -v '^device') || true
        r=$(through "$WORK/cudart_check-static" printf 2>&1 | grep -v '^device') || true
        if [ -n "$n" ] && [ "$n" = "$r" ]; then echo "cudart_check printf: same output"; else
            echo "cudart_check printf differs"; echo "--- native:"; echo "$n"; echo "--- remote:"; echo "$r"; status=1; fi
        # A failed device assert: its message on the program's standard error,
        # between its own lines there (the driver's wording names the source
        # line), and error 710.
        cuda_run cudart_check-static assert
        n=$(limited "$WORK/cudart_check-static" assert 2>&1 >/dev/null) || true
        r=$(through "$WORK/cudart_check-static" assert 2>&1 >/dev/null) || true
        if [ -n "$n" ] && [ "$n" = "$r" ]; then echo "cudart_check assert: same standard error"; else
            echo "cudart_check assert: standard error differs"; echo "--- native:"; echo "$n"; echo "--- remote:"; echo "$r"; status=1; fi
        # Green contexts through cudart's execution contexts (CUDA 13.1 and later).
        cuda_run cudart_check-shared green
        # Relocatable device code: linked at build (SASS) or by the driver at
        # load (PTX only).
        for variant in "sass arch=compute_90,code=sm_90" "ptx arch=compute_90,code=compute_90"; do
            set -- $variant
            if nvcc -O2 -rdc=true -gencode "$2" -o "$WORK/rdc_check-$1" tests/cuda/rdc_check.cu tests/cuda/rdc_part.cu; then
                cuda_run "rdc_check-$1"
            else
                echo "rdc_check-$1: nvcc failed"; status=1
            fi
        done
        cuda_case sgemm_check-static -lcublas
        cuda_case fft_check-static -lcufft
        # The CUDA 12 runtime (carried in the bundle) with a kernel it
        # registers from a fat binary this nvcc builds.
        if [ -e "$BIN/libcudart.so.12" ]; then
            ln -sf "$BIN/libcudart.so.12" "$WORK/native/libcudart.so.12"
            if nvcc -fatbin -arch=sm_90 -o "$WORK/scale_kernel.fatbin" tests/cuda/scale_kernel.cu &&
                cc -O2 -o "$WORK/cudart12_check" tests/c/cudart12_check.c -ldl; then
                cuda_run cudart12_check "$WORK/scale_kernel.fatbin"
            else
                echo "cudart12_check: build failed"; status=1
            fi
        else
            echo "no libcudart.so.12 in $BIN: the CUDA 12 runtime check skipped"
        fi
    else
        echo "== no nvcc: runtime-API programs skipped"
    fi
}

section_torch() {
    # (d) PyTorch training steps, loss compared step for step.
    if python3 -c "import torch" 2>/dev/null; then
        echo "== PyTorch (native | through gpupool)"
        # torch.cond and while_loop in a CUDA graph (conditional nodes).
        n=$(limited python3 tests/python/torch_cond_graph.py 2>&1 | grep RESULT) || status=1
        r=$(through python3 tests/python/torch_cond_graph.py 2>&1 | grep RESULT) || status=1
        echo "torch_cond_graph native: $n"
        echo "torch_cond_graph remote: $r"
        [ -n "$n" ] && [ "$n" = "$r" ] || { echo "torch_cond_graph: remote differs from native"; status=1; }
        n=$(limited python3 benches/torch_step.py "$STEPS" 2>&1) || status=1
        r=$(PYTHONUNBUFFERED=1 through python3 benches/torch_step.py "$STEPS" 2>&1) || status=1
        paste <(grep -E 'LOSS|BENCH' <<<"$n") <(grep -E 'LOSS|BENCH' <<<"$r" | sed 's/^/| /')
        grep -E 'does not (support|serve)|not supported|Error|error' <<<"$r" | sort | uniq -c | head -20 || true
        # Streamed requests written at once (GPUPOOL_HOLD_US=0; held back 20 us
        # by default): the step times, beside those above.
        h=$(GPUPOOL_HOLD_US=0 through python3 benches/torch_step.py "$STEPS" 2>&1 | grep BENCH | sed 's/^BENCH /BENCH written at once /') || true
        echo "$h"
        # The step ratio, remote over native, of each model: held back
        # (the default), then written at once.
        steps_of() { grep -o '[a-z0-9_]*_step_ms [0-9.]*' | sort; }
        for how in held at-once; do
            local remote_run=$r
            [ $how = at-once ] && remote_run=$h
            join <(steps_of <<<"$n") <(steps_of <<<"$remote_run") |
                awk -v how=$how '$2 > 0 { printf "RATIO %s %.3f (native %.3f ms, remote %.3f ms, %s)\n", $1, $3 / $2, $2, $3, how }'
        done
        # Where a remote run's time goes: the call report (which times each
        # call, so it runs apart from the timed runs) of a shorter run, the
        # calls with the most time and round trips first (totals over all
        # models and steps, start-up included).
        c=$(GPUPOOL_CALL_REPORT=1 through python3 benches/torch_step.py 60 2>&1) || true
        echo "-- gpupool call report of 60 steps of each model (top 25 by total time)"
        awk '/^gpupool call report/ {on=1} on' <<<"$c" | head -27 || true
        # Kernels may pick non-deterministic algorithms: compare within 1e-3;
        # the GPT's within 5e-2 (flash attention's backward adds in no fixed
        # order, and 300 bf16 AdamW steps carry the difference on).
        paste <(grep LOSS <<<"$n") <(grep LOSS <<<"$r") | awk '
            { d = $4 - $8; if (d < 0) d = -d; m = ($4 < 0 ? -$4 : $4); if (m < 1) m = 1;
              tol = ($2 == "gpt") ? 5e-2 : 1e-3; rows++
              if (d / m > worst[$2]) worst[$2] = d / m
              if (d / m > tol) bad++ }
            END { for (k in worst) printf "losses of %s: largest relative difference %.2e\n", k, worst[k];
                  printf "losses compared: %d, %d beyond tolerance\n", rows, bad;
                  exit (rows == 0 || bad > 0) }' || { echo "losses differ"; status=1; }
    else
        echo "== no PyTorch: training steps skipped"
    fi
}

section_timings() {
    echo "== timings (native | through gpupool, loopback TCP)"
    paste <(native bench 5000 | grep BENCH) <(remote bench 5000 | grep BENCH | sed 's/^BENCH /| /')
    echo "-- launch rate with each streamed request written at once (GPUPOOL_HOLD_US=0)"
    GPUPOOL_HOLD_US=0 remote bench 5000 | grep launches_per_s || true
    paste <(native bw 1024 | grep BENCH) <(remote bw 1024 | grep BENCH | sed 's/^BENCH bw /| /')
}

section_harness() {
    if [ -x "$BIN/gpupool-e2e-bench" ]; then
        echo "== harness (gpupool beside bare transports)"
        limited "$BIN/gpupool-e2e-bench" --driver "$REAL" --max-mib 1024 || status=1
    fi
}

for section in ${GPUPOOL_GPU_SECTIONS:-torch driver nvcc timings harness}; do
    case $section in
        torch | driver | nvcc | timings | harness) "section_$section" ;;
        *) echo "unknown section $section (torch, driver, nvcc, timings, harness)" >&2; status=1 ;;
    esac
done
exit $status
