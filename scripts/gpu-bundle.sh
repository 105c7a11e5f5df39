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
du -sh "$OUT"
