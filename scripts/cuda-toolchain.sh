#!/usr/bin/env bash
# Installs the CUDA compiler and runtime from PyPI (no GPU needed to compile)
# for the tests that run unmodified nvcc programs through gpupool. Each
# toolchain goes to target/cuda/<version>; prints the list of homes, joined
# by ':', for GPUPOOL_TEST_CUDA_HOMES. Two cudart minor versions are tested
# because they ask different things of the driver at start-up.
set -euo pipefail
cd "$(dirname "$0")/.."

# version -> "nvcc runtime crt nvvm" (nvvm pinned to nvcc: a newer libnvvm
# emits PTX that the older ptxas rejects).
declare -A PINS=(
    [13.0]="13.0.88 13.0.96 13.0.88 13.0.88"
    [13.5]="13.5.37 13.5.37 13.5.37 13.5.37"
)
homes=()
for v in 13.0 13.5; do
    read -r nvcc runtime crt nvvm <<<"${PINS[$v]}"
    home="$PWD/target/cuda/$v"
    stamp="$home/.installed-$nvcc-$runtime"
    if [ ! -f "$stamp" ]; then
        rm -rf "$home"
        mkdir -p "$home"
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
            --target "$home" \
            "nvidia-cuda-nvcc==$nvcc" "nvidia-cuda-runtime==$runtime" \
            "nvidia-cuda-crt==$crt" "nvidia-nvvm==$nvvm" >&2
        # nvcc -cudart shared links against libcudart.so.
        ln -sf libcudart.so.13 "$home/nvidia/cu13/lib/libcudart.so"
        touch "$stamp"
    fi
    homes+=("$home/nvidia/cu13")
done
(IFS=:; echo "${homes[*]}")
