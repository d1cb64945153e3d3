#!/usr/bin/env python3
"""Regenerates utf8_replace_vectors.json: damaged UTF-8 strings and what Python's decoder makes of
them with errors="replace" (one U+FFFD per maximal subpart, Unicode's recommended practice).
tests/io/text_encoding_test.cpp checks chainlm's validator and replacer against them.
Python's standard library only; run: python3 tests/io/data/make_utf8_vectors.py"""
import json
import os
import random

PIECES = [b"a", b" ", b"\xc3\xa9", b"\xe6\xb0\xb4", b"\xf0\x9f\x90\xb8",  # valid
          b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xff",
          b"\xf0\x9f\x90", b"\xc0\xaf", b"\xef\xbb\xbf"]

rng = random.Random(2026)
cases = []
for _ in range(300):
    s = b""
    for _ in range(rng.randrange(10)):
        s += bytes([rng.randrange(256)]) if rng.random() < 0.15 else rng.choice(PIECES)
    decoded = s.decode("utf-8", errors="replace")
    cases.append({"bytes": s.hex(), "invalid": decoded.count("\ufffd") - s.decode(
        "utf-8", errors="ignore").count("\ufffd"), "replaced": decoded.encode("utf-8").hex()})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "utf8_replace_vectors.json")
with open(out, "w") as f:
    # One case per line: small diffs when regenerated.
    f.write('{"generator": "make_utf8_vectors.py (Python str.decode errors=\'replace\')",\n')
    f.write('"cases": [\n' + ",\n".join(json.dumps(c) for c in cases) + "\n]}\n")
print(f"wrote {len(cases)} cases to {out}")
