#!/usr/bin/env bash
# Fetches NVIDIA's own user-space CUDA driver (libcuda.so.1) as Debian
# packages it (non-free `libcuda1`): the release of Debian 12 (driver 535,
# CUDA 12.2) and of Debian 13 (driver 550, CUDA 12.4), into
# target/nvidia-driver/<version>/. No GPU is needed: the tests check that
# the GPU server resolves every entry point it needs from these drivers and
# that, without a GPU, it stops with the driver's own reason.
#
# Prints the libraries' paths, colon-separated (nothing where apt-get is
# missing or the archive cannot be reached). Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

out="$PWD/target/nvidia-driver"
command -v apt-get >/dev/null 2>&1 || { echo "apt-get not found: NVIDIA's driver packages not fetched" >&2; exit 0; }
mkdir -p "$out"

found=()
for suite in bookworm trixie; do
    have=$(ls -d "$out/$suite"-*/ 2>/dev/null | head -1 || true)
    if [ -n "$have" ] && [ -e "$have/libcuda.so.1" ]; then
        found+=("${have%/}/libcuda.so.1")
        continue
    fi
    # apt with a state of its own: the machine's sources and lists are left
    # alone, and no root is needed.
    state="$out/apt-$suite"
    mkdir -p "$state/sources" "$state/lists/partial" "$state/cache/archives/partial"
    cat >"$state/sources/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$state/sources"
        -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=$(id -un)")
    if ! apt-get "${apt_opts[@]}" -qq update >&2; then
        echo "cannot reach Debian's archive for $suite: its driver not fetched" >&2
        continue
    fi
    (cd "$state" && apt-get "${apt_opts[@]}" -qq download libcuda1 >&2) || {
        echo "no libcuda1 in $suite: its driver not fetched" >&2
        continue
    }
    deb=$(ls "$state"/libcuda1_*.deb | head -1)
    version=$(basename "$deb" | cut -d_ -f2)
    dir="$out/$suite-$version"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp/root"
    lib=$(find "$dir.tmp/root" -name 'libcuda.so.[0-9]*.*' -type f | head -1)
    [ -n "$lib" ] || { echo "no libcuda.so in $deb" >&2; continue; }
    cp "$lib" "$dir.tmp/libcuda.so.1"
    rm -rf "$dir.tmp/root" "$dir" && mv "$dir.tmp" "$dir"
    rm -f "$deb"
    echo "NVIDIA driver $version (Debian $suite): $dir/libcuda.so.1" >&2
    found+=("$dir/libcuda.so.1")
done
(IFS=:; echo "${found[*]}")
