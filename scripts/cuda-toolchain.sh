#!/usr/bin/env bash
# Installs the CUDA compiler and runtime from PyPI (no GPU needed to compile)
# for the tests that run unmodified nvcc programs through gpupool, and cuBLAS
# and cuFFT for the 13.0 toolchain (target/cuda/13.0/libs), the CUDA 12
# runtime (target/cuda/12.8) and cuobjdump and NVML's header
# (target/cuda/tools). Each
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

# cuBLAS and cuFFT for the 13.0 toolchain, in their own folder beside it (the
# wheels share the nvidia/cu13 namespace, which pip --target will not merge
# into an existing folder): the shared libraries, and the CCCL headers that
# cublas_v2.h includes.
libs="$PWD/target/cuda/13.0/libs"
stamp="$libs/.installed-13.0.2.14-12.0.0.61"
if [ ! -f "$stamp" ]; then
    rm -rf "$libs" "$PWD/target/cuda/13.0/cublas"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --no-deps --target "$libs" "nvidia-cublas==13.0.2.14" "nvidia-cuda-cccl==13.0.85" \
        "nvidia-cufft==12.0.0.61" >&2
    for l in cublas cublasLt; do ln -sf "lib$l.so.13" "$libs/nvidia/cu13/lib/lib$l.so"; done
    ln -sf libcufft.so.12 "$libs/nvidia/cu13/lib/libcufft.so"
    touch "$stamp"
fi
# The CUDA 12 runtime alone (no CUDA 12 compiler is on PyPI), for the test
# that runs its start-up and a launch of a kernel it registers, built by
# the 13.0 compiler: beside the 13.0 toolchain, in target/cuda/12.8.
rt12="$PWD/target/cuda/12.8"
stamp="$rt12/.installed-12.8.90"
if [ ! -f "$stamp" ]; then
    rm -rf "$rt12"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --no-deps --target "$rt12" "nvidia-cuda-runtime-cu12==12.8.90" >&2
    touch "$stamp"
fi
# cuobjdump, NVIDIA's reader of fat binaries, for the tests that check the
# fat binaries the shim cuts down and the kernel layouts the parser reads
# against it, and NVML's header, for the test that the NVML shim exports
# every entry point it declares: in target/cuda/tools.
tools="$PWD/target/cuda/tools"
stamp="$tools/.installed-13.5.37-13.4.92"
if [ ! -f "$stamp" ]; then
    rm -rf "$tools"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --no-deps --target "$tools" "nvidia-cuda-cuobjdump==13.5.37" "nvidia-nvml-dev==13.4.92" >&2
    touch "$stamp"
fi
(IFS=:; echo "${homes[*]}")
