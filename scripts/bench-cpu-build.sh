#!/usr/bin/env bash
# Decode speed of the default CPU build against the build it replaced and against llama.cpp's own
# llama-server built with the same flags, measured in one run on this machine (see README,
# Benchmark, "CPU build"). Builds what is missing under target/bench-cpu/ (the first run takes
# 20-30 min on 2 cores), then runs scripts/bench_cpu_build.py, which writes
# target/bench/cpu_build.json and prints the table.
#
#   default  the default build: target-cpu=native with ggml's AMX kernels left out
#            (.cargo/config.toml's CFLAGS/CXXFLAGS)
#   native   the build before it: target-cpu=native, CFLAGS/CXXFLAGS empty (AMX kernels in
#            wherever the CPU has AMX; on such a CPU it may segfault, which the table reports)
#   llama-server  llama.cpp's server from the llama.cpp tree of llama-cpp-python (PyPI, pinned
#            below): CMake Release, GGML_NATIVE=ON, OpenMP, static, and the default build's
#            C/C++ flags. That tree is a newer llama.cpp than the one llama-cpp-sys-2 vendors,
#            whose crate ships without the server's sources.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LCP_VERSION=0.3.36
LCP_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
out=target/bench-cpu
mkdir -p "$out"

scripts/setup.sh
# The flags the default build gives llama.cpp, read from .cargo/config.toml (one place).
flags=$(python3 -c 'import tomllib; print(tomllib.load(open(".cargo/config.toml", "rb"))["env"]["CXXFLAGS"])')

echo "bench-cpu: building the default gateway" >&2
cargo build --release --locked -p cada-gateway
echo "bench-cpu: building the previous native gateway (CFLAGS/CXXFLAGS empty)" >&2
CFLAGS="" CXXFLAGS="" cargo build --release --locked -p cada-gateway --target-dir "$out/native"

server="$out/llama-server/build/bin/llama-server"
if [ ! -x "$server" ]; then
  echo "bench-cpu: building llama-server from llama-cpp-python $LCP_VERSION" >&2
  rm -rf "$out/llama-server" && mkdir -p "$out/llama-server"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$out/llama-server" "llama-cpp-python==$LCP_VERSION"
  sdist="$out/llama-server/llama_cpp_python-$LCP_VERSION.tar.gz"
  echo "$LCP_SHA256  $sdist" | sha256sum -c - >&2
  tar xzf "$sdist" -C "$out/llama-server"
  src="$out/llama-server/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
  # cc-rs adds these to every C/C++ flag set of the cargo build; the same here.
  cflags="-ffunction-sections -fdata-sections -fPIC -m64 $flags"
  cmake -S "$src" -B "$out/llama-server/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DCMAKE_C_FLAGS="$cflags" -DCMAKE_CXX_FLAGS="$cflags" >/dev/null
  cmake --build "$out/llama-server/build" --target llama-server -j "$(nproc)"
fi

exec python3 scripts/bench_cpu_build.py \
  --server "default=target/release/cada-gateway" \
  --server "native=$out/native/release/cada-gateway" \
  --server "llama-server=$server" \
  "$@"
