#!/usr/bin/env bash
# Regenerates the compressed copies of poem.txt that tests/io/corpus_reader_test.cpp reads, with
# the standard command-line tools (independent of libarchive, which chainlm reads them with).
# poem.txt and poem.jsonl (the same four documents, one JSON record each) are written by hand.
# Needs gzip, xz, zstd and bzip2 (Debian: gzip xz-utils zstd bzip2). Not run by the tests.
set -euo pipefail
cd "$(dirname "$0")"
gzip -9 -n -c poem.txt > poem.txt.gz
xz -9 -c poem.txt > poem.txt.xz
zstd -19 -q -c poem.txt > poem.txt.zst
bzip2 -9 -c poem.txt > poem.txt.bz2
# JSON Lines, gzip-compressed: one record per document of poem.txt ("text" field).
gzip -9 -n -c poem.jsonl > poem.jsonl.gz
ls -l poem.*
