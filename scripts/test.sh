#!/usr/bin/env bash
# Runs every gpupool test. Installs what the tests need first: a C compiler
# for the test programs, protoc and etcd for the broker's etcd backend (built
# with its `etcd` feature; its failover tests run a real etcd), and the CUDA
# compiler and runtime from PyPI (no GPU needed) for the tests that run
# unmodified nvcc programs through gpupool.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
if [ ${#need_apt[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
    else
        echo "please install: ${need_apt[*]}" >&2; exit 1
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
    exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true

export CARGO_TERM_COLOR=never
# The broker's etcd backend is built, linted and tested with the rest: the
# same features on every step, so that no step rebuilds differently.
features=(--features gpupool-broker/etcd)
echo "== format"
cargo fmt --all -- --check
echo "== build (the whole-system tests run the built shim, server and software driver)"
cargo build --workspace --all-targets "${features[@]}"
echo "== lint"
cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
echo "== CUDA toolchains from PyPI (for the nvcc program tests)"
GPUPOOL_TEST_CUDA_HOMES="$(./scripts/cuda-toolchain.sh)"
export GPUPOOL_TEST_CUDA_HOMES GPUPOOL_REQUIRE_CUDA=1
echo "== NVIDIA's drivers as Debian packages them (loaded without a GPU by the driver tests)"
GPUPOOL_TEST_NVIDIA_DRIVERS="$(./scripts/nvidia-driver.sh)"
export GPUPOOL_TEST_NVIDIA_DRIVERS
if [ "${GPUPOOL_TEST_TORCH:-0}" = "1" ]; then
    # Opt-in: PyTorch through gpupool (a cu13 wheel and its CUDA libraries,
    # about 5 GB), in a virtual environment of its own.
    echo "== PyTorch from PyPI (GPUPOOL_TEST_TORCH=1)"
    venv=target/torch-venv
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # cuda-bindings: what torch.cuda.green_contexts drives the driver with.
    "$venv/bin/python" -c "import torch, cuda.bindings" 2>/dev/null ||
        "$venv/bin/pip" install -q "torch==2.15.0" "cuda-bindings==13.5.0"
    export GPUPOOL_TEST_TORCH_PYTHON="$PWD/$venv/bin/python" GPUPOOL_REQUIRE_TORCH=1
    # A CUDA 12 build of PyTorch (2.8, CUDA 12.8: cudart 12, cuBLAS 12,
    # cuDNN 9 for CUDA 12, NCCL 2.27, Triton 3.4), in an environment of its own.
    t12venv=target/torch12-venv
    [ -x "$t12venv/bin/python" ] || python3 -m venv "$t12venv"
    "$t12venv/bin/python" -c "import torch" 2>/dev/null || "$t12venv/bin/pip" install -q "torch==2.8.0"
    export GPUPOOL_TEST_TORCH12_PYTHON="$PWD/$t12venv/bin/python"
    # TensorFlow's CUDA 12 build (about 3 GB), in an environment of its own.
    tfvenv=target/tf-venv
    [ -x "$tfvenv/bin/python" ] || python3 -m venv "$tfvenv"
    "$tfvenv/bin/python" -c "import tensorflow" 2>/dev/null || "$tfvenv/bin/pip" install -q "tensorflow[and-cuda]==2.21.0"
    export GPUPOOL_TEST_TF_PYTHON="$PWD/$tfvenv/bin/python"
    # numba's CUDA target and CuPy, in an environment of their own (beside
    # PyTorch they would load numpy into its tests).
    nvenv=target/numba-venv
    [ -x "$nvenv/bin/python" ] || python3 -m venv "$nvenv"
    "$nvenv/bin/python" -c "import numba_cuda, cupy" 2>/dev/null ||
        "$nvenv/bin/pip" install -q "numba-cuda[cu13]==0.30.4" "cupy-cuda13x==14.2.0"
    export GPUPOOL_TEST_NUMBA_PYTHON="$PWD/$nvenv/bin/python"
    # JAX's CUDA 13 build (about 4 GB), in an environment of its own.
    jvenv=target/jax-venv
    [ -x "$jvenv/bin/python" ] || python3 -m venv "$jvenv"
    "$jvenv/bin/python" -c "import jax_plugins.xla_cuda13" 2>/dev/null ||
        "$jvenv/bin/pip" install -q "jax[cuda13]==0.10.2"
    export GPUPOOL_TEST_JAX_PYTHON="$PWD/$jvenv/bin/python"
fi
# The etcd tests fail, rather than skip, without an etcd to run.
export GPUPOOL_REQUIRE_ETCD=1
echo "== tests"
cargo test --workspace "${features[@]}"
