#!/usr/bin/env bash
# Runs every gpupool test. Installs what the tests need first (a C compiler
# for the test programs; Rust through rustup when cargo is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
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
echo "== format"
cargo fmt --all -- --check
echo "== build (the whole-system tests run the built shim, server and software driver)"
cargo build --workspace --all-targets
echo "== lint"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace
