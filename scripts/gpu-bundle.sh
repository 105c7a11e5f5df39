#!/usr/bin/env bash
# Builds the release binaries the GPU script needs and puts stripped copies
# in target/gpu-bundle/ (about 16 MB), small enough to take to a GPU machine
# that has no Rust toolchain. There:
#   GPUPOOL_BIN=target/gpu-bundle ./scripts/gpu-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p gpupool-gpu-server -p gpupool-client-shim -p gpupool-nvml -p gpupool-benches
OUT=target/gpu-bundle
rm -rf "$OUT" && mkdir -p "$OUT"
for f in gpupool-server libcuda.so libnvidia_ml.so gpupool-e2e-bench; do
    strip -o "$OUT/$f" "target/release/$f"
done
# The CUDA 12 runtime, for the GPU script's cudart 12 check, when the test
# command has installed it (scripts/cuda-toolchain.sh).
rt12=target/cuda/12.8/nvidia/cuda_runtime/lib/libcudart.so.12
[ -e "$rt12" ] && cp "$rt12" "$OUT/"
du -sh "$OUT"
