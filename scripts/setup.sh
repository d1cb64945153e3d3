#!/usr/bin/env bash
# Installs every Debian package chainlm needs to build, test and run its quickstart.
# apt-get only; safe to re-run (skips the install when everything is present).
set -euo pipefail

packages=(
  build-essential cmake ccache pkg-config
  libopenblas-openmp-dev        # CBLAS sgemm; the OpenMP build shares our OpenMP thread pool
  libdnnl-dev                   # oneDNN matmul: the GEMM backend (OpenMP build, same pool)
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  zlib1g-dev                    # CRC-32 checksums of the tensors in the safetensors files we write
  libpcre2-dev                  # Hugging Face tokenizer.json split regexes (Unicode classes)
  libarchive-dev                # compressed corpora (gzip, xz, zstd, bzip2) for prepare / tokenizer train
  libgtest-dev libgmock-dev
  libopenmpi-dev openmpi-bin    # data-parallel training: mpirun -np N chainlm train
  chromium chromium-driver      # the serve playground's browser test (headless, over WebDriver)
  gnuplot-nox                   # chainlm plot / report: loss curves as PNG
  clang libclang-rt-14-dev libomp-14-dev  # make fuzz: libFuzzer targets (clang, its runtimes, OpenMP)
  fortunes                      # the quickstart's default corpus
  python3                       # bench scripts: JSON fields and the replication tables
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
