// Reading corpora as users have them: compressed copies made by the standard tools read the same
// as the plain file, JSONL records, directories, and every refusal names the file and the fix.
#include "io/corpus_reader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/decompressed_file.h"
#include "io/test_temp_dir.h"
#include "io/write_gzip.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;
using testing::write_gzip;
using Docs = std::vector<std::string>;

const std::string kFixtures = std::string(CHAINLM_SOURCE_DIR) + "/tests/io/data/compressed/";

// poem.txt's documents, written out here rather than taken from the splitter under test.
const Docs kPoem = {
    "The river runs beneath the stone,\nand every morning finds it gone.",
    "\xC3\x9C"
    "ber den Wipfeln ist Ruh,\nin allen Gipfeln sp\xC3\xBCrest du\nkaum einen Hauch.",
    "\xE9\x9D\x99\xE3\x81\x8B\xE3\x81\xAA\xE6\xB1\xA0\xE3\x81\xAB\n\xE8\x9B\x99\xE9\xA3\x9B\xE3"
    "\x81\xB3\xE8\xBE\xBC\xE3\x82\x80 \xE2\x80\x94 \xE6\xB0\xB4\xE3\x81\xAE\xE9\x9F\xB3 "
    "\xF0\x9F\x90\xB8",
    "Numbers: 3.14159, 2718, -42; tabs\tand  spaces."};

std::string message_of(const CorpusOptions& o) {
  try {
    read_corpus(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

CorpusOptions inputs(std::vector<std::string> paths) {
  CorpusOptions o;
  o.inputs = std::move(paths);
  return o;
}

// A hard link is the same file (the paths differ): named twice it was read twice, and with
// --val-input its documents both trained and validated. prepare's --out inside an input
// directory is not input (its temporary shards were read as corpus).
TEST(ListCorpusFiles, HardLinksAreOneFileAndTheExcludedDirectoryIsSkipped) {
  namespace fs = std::filesystem;
  TempDir dir;
  fs::create_directories(dir.file("in/out"));
  write_bytes(dir.file("in/a.txt"), "alpha\n");
  write_bytes(dir.file("in/out/train.bin.tmp.1.0"), "shard");
  fs::create_hard_link(dir.file("in/a.txt"), dir.file("link.txt"));
  EXPECT_EQ(same_file_key(dir.file("in/a.txt")), same_file_key(dir.file("link.txt")));
  EXPECT_NE(same_file_key(dir.file("in/a.txt")),
            same_file_key(dir.file("in/out/train.bin.tmp.1.0")));
  try {
    list_corpus_files({dir.file("in/a.txt"), dir.file("link.txt")});
    ADD_FAILURE() << "a file named twice through a hard link was listed twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is given twice"), std::string::npos) << e.what();
  }
  // An interrupted prepare's temporary shard is skipped wherever it lies (it stopped the
  // prepare of a directory holding it as "binary data").
  std::vector<std::string> notes;
  EXPECT_EQ(list_corpus_files({dir.file("in")}, "", &notes),
            std::vector<std::string>{dir.file("in/a.txt")});
  EXPECT_EQ(notes, std::vector<std::string>{"skipped " + dir.file("in/out/train.bin.tmp.1.0") +
                                            ": a chainlm temporary file"});
  // The output directory inside an input directory is skipped, and said (docs/training.md).
  notes.clear();
  EXPECT_EQ(list_corpus_files({dir.file("in")}, dir.file("in/out"), &notes),
            std::vector<std::string>{dir.file("in/a.txt")});
  EXPECT_EQ(notes, std::vector<std::string>{"skipped " + dir.file("in/out") +
                                            ": the output directory (--out)"});
  // The input directory itself as the output: its temporary shards were listed as input.
  try {
    list_corpus_files({dir.file("in")}, dir.file("in"));
    ADD_FAILURE() << "the output directory was read as input";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is where the output goes (--out)"), std::string::npos)
        << e.what();
  }
}

// An earlier prepare's output (or a run, a checkpoint) inside an input directory: its shards
// stopped the next prepare as "binary data". chainlm's own directories are skipped, each said.
TEST(ListCorpusFiles, ChainlmsOwnDirectoriesInsideAnInputAreSkippedAndSaid) {
  namespace fs = std::filesystem;
  TempDir dir;
  fs::create_directories(dir.file("in/data"));
  fs::create_directories(dir.file("in/run/step-00000002"));
  fs::create_directories(dir.file("in/notes"));
  write_bytes(dir.file("in/a.txt"), "alpha\n");
  write_bytes(dir.file("in/notes/b.txt"), "beta\n");
  write_bytes(dir.file("in/data/train.bin"), "shard");
  write_bytes(dir.file("in/data/val.bin"), "shard");
  write_bytes(dir.file("in/run/metrics.jsonl"), "{}\n");
  std::vector<std::string> notes;
  EXPECT_EQ(list_corpus_files({dir.file("in")}, "", &notes),
            (std::vector<std::string>{dir.file("in/a.txt"), dir.file("in/notes/b.txt")}));
  ASSERT_EQ(notes.size(), 2u);
  std::sort(notes.begin(), notes.end());
  EXPECT_EQ(notes[0], "skipped " + dir.file("in/data") + ": a chainlm data directory, not text");
  EXPECT_EQ(notes[1], "skipped " + dir.file("in/run") + ": a chainlm training run, not text");
}

// Debian's fortunes directory links X.u8 -> X: one directory given, and the prepare stopped with
// "is given twice". A file found twice in a directory is read once, said; named twice, refused.
TEST(ListCorpusFiles, ALinkBesideItsTargetInADirectoryIsReadOnce) {
  namespace fs = std::filesystem;
  TempDir dir;
  fs::create_directories(dir.file("in"));
  write_bytes(dir.file("in/art"), "alpha\n");
  fs::create_symlink("art", dir.file("in/art.u8"));
  std::vector<std::string> notes;
  EXPECT_EQ(list_corpus_files({dir.file("in")}, "", &notes),
            std::vector<std::string>{dir.file("in/art")});
  EXPECT_EQ(notes,
            std::vector<std::string>{"skipped " + dir.file("in/art.u8") + ": the same file as " +
                                     dir.file("in/art") + ", read once"});
  try {
    list_corpus_files({dir.file("in/art"), dir.file("in/art.u8")});
    ADD_FAILURE() << "a file named twice was read once, unsaid";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is given twice"), std::string::npos) << e.what();
  }
}

TEST(ReadDecompressed, StandardToolsOutputsReadAsThePlainFile) {
  const std::string plain = read_bytes(kFixtures + "poem.txt");
  ASSERT_FALSE(plain.empty());
  const DecompressedFile none = read_decompressed(kFixtures + "poem.txt");
  EXPECT_EQ(none.compression, "none");
  EXPECT_EQ(none.bytes, plain);
  for (const auto& [suffix, name] : std::vector<std::pair<std::string, std::string>>{
           {".gz", "gzip"}, {".xz", "xz"}, {".zst", "zstd"}, {".bz2", "bzip2"}}) {
    const DecompressedFile f = read_decompressed(kFixtures + "poem.txt" + suffix);
    EXPECT_EQ(f.compression, name) << suffix;
    EXPECT_EQ(f.bytes, plain) << suffix;
  }
}

TEST(ReadDecompressed, TruncatedAndMissingFilesFailNamingThem) {
  TempDir dir;
  const std::string gz = read_bytes(kFixtures + "poem.txt.gz");
  // Cut in its data, or 4 bytes short (in the trailer: libarchive then failed to open it,
  // "unknown libarchive error").
  for (const size_t keep : {gz.size() / 2, gz.size() - 4}) {
    write_bytes(dir.file("cut.gz"), gz.substr(0, keep));
    try {
      read_decompressed(dir.file("cut.gz"));
      FAIL() << "a truncated gzip file was read, " << keep << " bytes";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("cannot read " + dir.file("cut.gz")), std::string::npos) << what;
      EXPECT_NE(what.find("truncated gzip"), std::string::npos) << what;
    }
  }
  // A flipped byte in the deflate stream, or in the trailer's CRC: libarchive ended the data
  // early or not at all, without an error (a corrupt corpus trained on as a shorter one).
  for (const size_t at : {gz.size() / 2, gz.size() - 8}) {
    std::string bad = gz;
    bad[at] = static_cast<char>(bad[at] ^ 0xff);
    write_bytes(dir.file("bad.gz"), bad);
    try {
      read_decompressed(dir.file("bad.gz"));
      FAIL() << "a gzip file damaged at byte " << at << " was read";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("cannot read " + dir.file("bad.gz") + " (gzip-compressed)"),
                std::string::npos)
          << what;
      EXPECT_NE(what.find("damaged"), std::string::npos) << what;
    }
  }
  // Two members one after the other (cat a.gz b.gz) are both read.
  write_bytes(dir.file("two.gz"), gz + gz);
  EXPECT_EQ(read_decompressed(dir.file("two.gz")).bytes,
            read_bytes(kFixtures + "poem.txt") + read_bytes(kFixtures + "poem.txt"));
  // A damaged second member, or bytes appended: zlib's gzread ended the data there without a
  // word (half the corpus gone). Zero padding after the last member passes, as in gzip.
  std::string second = gz;
  second[0] = 'X';
  for (const std::string& tail : {second, std::string("junk\n")}) {
    write_bytes(dir.file("tail.gz"), gz + tail);
    try {
      read_decompressed(dir.file("tail.gz"));
      FAIL() << "a gzip file with " << tail.size() << " bytes of other data after it was read";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(std::to_string(tail.size()) + " bytes after byte " +
                          std::to_string(gz.size()) + " are not gzip data"),
                std::string::npos)
          << what;
    }
  }
  write_bytes(dir.file("padded.gz"), gz + std::string(512, '\0'));
  EXPECT_EQ(read_decompressed(dir.file("padded.gz")).bytes, read_bytes(kFixtures + "poem.txt"));
  // xz, zstd and bzip2 cut short: the libraries' words, and what they mean ("Lzma library
  // error: No progress is possible" was all an .xz said).
  for (const std::string& suffix : {std::string(".xz"), std::string(".zst"), std::string(".bz2")}) {
    const std::string whole = read_bytes(kFixtures + "poem.txt" + suffix);
    write_bytes(dir.file("cut" + suffix), whole.substr(0, whole.size() / 2));
    try {
      read_decompressed(dir.file("cut" + suffix));
      FAIL() << "a truncated " << suffix << " file was read";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the file is damaged or cut short"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(read_decompressed(dir.file("missing.txt")), Error);
  EXPECT_THROW(read_decompressed(dir.path().string()), Error);
  write_bytes(dir.file("empty.txt"), "");
  EXPECT_EQ(read_decompressed(dir.file("empty.txt")).bytes, "");
}

TEST(ReadCorpus, TextJsonlAndCompressedGiveTheSameDocuments) {
  for (const char* name : {"poem.txt", "poem.txt.gz", "poem.txt.xz", "poem.txt.zst", "poem.txt.bz2",
                           "poem.jsonl", "poem.jsonl.gz"}) {
    const Corpus c = read_corpus(inputs({kFixtures + name}));
    EXPECT_EQ(c.documents, kPoem) << name;
    ASSERT_EQ(c.files.size(), 1u);
    EXPECT_EQ(c.files[0].jsonl, std::string(name).find(".jsonl") != std::string::npos) << name;
    EXPECT_TRUE(c.warnings.empty()) << name;
  }
  // The names in any case, and .gzip: read as text before (the JSON syntax trained on).
  TempDir dir;
  const std::string jsonl = read_bytes(kFixtures + "poem.jsonl"),
                    gz = read_bytes(kFixtures + "poem.jsonl.gz");
  for (const auto& [name, bytes] :
       std::vector<std::pair<std::string, std::string>>{{"POEM.JSONL", jsonl},
                                                        {"poem.NDJSON", jsonl},
                                                        {"poem.ndjson.gzip", gz},
                                                        {"poem.Jsonl.GZ", gz}}) {
    write_bytes(dir.file(name), bytes);
    const Corpus c = read_corpus(inputs({dir.file(name)}));
    EXPECT_TRUE(c.files[0].jsonl) << name;
    EXPECT_EQ(c.documents, kPoem) << name;
  }
}

TEST(ReadCorpus, SplitLinesAndFormatOverride) {
  TempDir dir;
  write_bytes(dir.file("a.txt"), "one\r\ntwo words\n\n  \nthree\n%\n");
  CorpusOptions o = inputs({dir.file("a.txt")});
  EXPECT_EQ(read_corpus(o).documents, (Docs{"one\ntwo words", "three"}));
  o.split = DocumentSplit::kLines;
  EXPECT_EQ(read_corpus(o).documents, (Docs{"one", "two words", "three", "%"}));

  // A JSONL file with a .txt name, read as JSONL when told; JSONL with another field name.
  write_bytes(dir.file("records.txt"),
              "{\"body\": \"first\"}\n\n{\"body\": \" \", \"n\": 1}\n"
              "{\"body\": \"second\\nline\"}\n");
  CorpusOptions j = inputs({dir.file("records.txt")});
  j.format = CorpusFormat::kJsonl;
  j.text_field = "body";
  const Corpus c = read_corpus(j);
  EXPECT_EQ(c.documents, (Docs{"first", "second\nline"}));
  EXPECT_EQ(c.files[0].empty_records, 1u);
}

TEST(ReadCorpus, DirectoriesAndSeveralInputs) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "corpus" / "sub");
  std::filesystem::create_directories(dir.path() / "corpus" / ".git");
  write_bytes(dir.file("corpus/b.txt"), "b1\n\nb2\n");
  write_bytes(dir.file("corpus/sub/a.jsonl"), "{\"text\": \"a1\"}\n");
  write_bytes(dir.file("corpus/.hidden.txt"), "hidden\n");
  write_bytes(dir.file("corpus/.git/HEAD"), "ref: refs/heads/main\n");
  write_bytes(dir.file("extra.txt"), "x\n");
  const Corpus c = read_corpus(inputs({dir.file("corpus"), dir.file("extra.txt")}));
  // Sorted by path within the directory (b.txt < sub/a.jsonl), then the next input.
  EXPECT_EQ(c.documents, (Docs{"b1", "b2", "a1", "x"}));
  ASSERT_EQ(c.files.size(), 3u);

  std::filesystem::create_directories(dir.path() / "empty");
  EXPECT_NE(message_of(inputs({dir.file("empty")})).find("holds no files"), std::string::npos);
  EXPECT_NE(message_of(inputs({dir.file("nope.txt")})).find("nope.txt does not exist"),
            std::string::npos);
  // Named and found in a directory given: the directory is named (the message named the file
  // twice), in either order.
  EXPECT_NE(message_of(inputs({dir.file("corpus"), dir.file("corpus/b.txt")}))
                .find("input " + dir.file("corpus/b.txt") +
                      " is named and also found in directory " + dir.file("corpus") + ";"),
            std::string::npos);
  EXPECT_NE(message_of(inputs({dir.file("corpus/b.txt"), dir.file("corpus")}))
                .find("is named and also found in directory " + dir.file("corpus") + ";"),
            std::string::npos);
}

TEST(ReadCorpus, RefusesWhatIsNotUtf8Text) {
  TempDir dir;
  std::string utf16 = "\xFF\xFE";
  for (char ch : std::string("hello world\n")) utf16 += std::string{ch, '\0'};
  write_bytes(dir.file("u16.txt"), utf16);
  EXPECT_NE(message_of(inputs({dir.file("u16.txt")})).find("is UTF-16 (little-endian) text"),
            std::string::npos);
  EXPECT_NE(message_of(inputs({dir.file("u16.txt")})).find("iconv -f UTF-16LE -t UTF-8"),
            std::string::npos)
      << message_of(inputs({dir.file("u16.txt")}));

  // Compressed, iconv gets the decompressed text (the advice ran it on the .gz itself).
  write_gzip(dir.file("u16.txt.gz"), utf16);
  const std::string gz_message = message_of(inputs({dir.file("u16.txt.gz")}));
  EXPECT_NE(gz_message.find("is UTF-16 (little-endian) text (gzip-compressed)"), std::string::npos)
      << gz_message;
  EXPECT_NE(gz_message.find("gzip -dc " + dir.file("u16.txt.gz") +
                            " | iconv -f UTF-16LE -t UTF-8 > " + dir.file("u16.utf8.txt")),
            std::string::npos)
      << gz_message;

  // The command runs as printed (a trial): a path with spaces or parentheses quoted; the output
  // beside the input, never the input itself (a file named converted.txt was truncated by
  // "iconv ... converted.txt > converted.txt"), never a file that exists, and JSONL kept JSONL.
  write_bytes(dir.file("my file (1).txt"), utf16);
  EXPECT_NE(message_of(inputs({dir.file("my file (1).txt")}))
                .find("iconv -f UTF-16LE -t UTF-8 '" + dir.file("my file (1).txt") + "' > '" +
                      dir.file("my file (1).utf8.txt") + "'"),
            std::string::npos)
      << message_of(inputs({dir.file("my file (1).txt")}));
  write_bytes(dir.file("converted.txt"), utf16);
  write_bytes(dir.file("converted.utf8.txt"), "an earlier conversion\n");
  EXPECT_NE(message_of(inputs({dir.file("converted.txt")}))
                .find(dir.file("converted.txt") + " > " + dir.file("converted.utf8-2.txt")),
            std::string::npos)
      << message_of(inputs({dir.file("converted.txt")}));
  // Compressed content under a name without a compression suffix keeps its extension; a
  // dangling link is no free name (iconv's ">" would write through it); legacy .lzma gets a
  // command too (trials).
  write_gzip(dir.file("data.jsonl"), utf16);
  EXPECT_NE(message_of(inputs({dir.file("data.jsonl")})).find("> " + dir.file("data.utf8.jsonl")),
            std::string::npos)
      << message_of(inputs({dir.file("data.jsonl")}));
  write_bytes(dir.file("linked.txt"), utf16);
  std::filesystem::create_symlink(dir.file("nowhere"), dir.file("linked.utf8.txt"));
  EXPECT_NE(message_of(inputs({dir.file("linked.txt")})).find("> " + dir.file("linked.utf8-2.txt")),
            std::string::npos)
      << message_of(inputs({dir.file("linked.txt")}));
  // UTF-16 with its mark and no NUL in the first 64 KiB (Chinese without newlines): its
  // encoding, not binary data.
  std::string long16 = "\xFF\xFE";
  for (int i = 0; i < 40000; ++i) long16 += "\x2D\x4E";  // U+4E2D
  long16 += std::string("\x0A\x00", 2);
  write_bytes(dir.file("long16.txt"), long16);
  EXPECT_NE(message_of(inputs({dir.file("long16.txt")})).find("is UTF-16 (little-endian) text"),
            std::string::npos)
      << message_of(inputs({dir.file("long16.txt")}));
  write_bytes(dir.file("it's.jsonl"), utf16);
  EXPECT_NE(
      message_of(inputs({dir.file("it's.jsonl")}))
          .find("'" + dir.file("it'\\''s.jsonl") + "' > '" + dir.file("it'\\''s.utf8.jsonl") + "'"),
      std::string::npos)
      << message_of(inputs({dir.file("it's.jsonl")}));

  write_bytes(dir.file("prog"), std::string("\x7F"
                                            "ELF\x02\x01\x01\0\0\0\0\0 code",
                                            17));
  EXPECT_NE(message_of(inputs({dir.file("prog")})).find("prog holds binary data"),
            std::string::npos);

  std::string tar(1024, '\0');
  tar.replace(0, 8, "poem.txt");
  tar.replace(257, 6, std::string("ustar\0", 6));
  write_bytes(dir.file("corpus.tar"), tar);
  EXPECT_NE(message_of(inputs({dir.file("corpus.tar")})).find("is a tar archive"),
            std::string::npos);
  // Binary after the first 64 KiB, which the encoding is told from: a NUL byte there went into
  // the shards unsaid.
  std::string late_nul;
  for (int i = 0; i < 5000; ++i) late_nul += "lorem ipsum dolor sit amet\n\n";
  late_nul += std::string("one nul here\0\n\n", 15) + "more text\n";
  write_bytes(dir.file("late.txt"), late_nul);
  EXPECT_NE(message_of(inputs({dir.file("late.txt")}))
                .find("late.txt holds binary data: a NUL byte at byte 140012 (line 10001)"),
            std::string::npos)
      << message_of(inputs({dir.file("late.txt")}));
  // A binary file whose first bytes libarchive guesses as legacy LZMA (which has no magic number;
  // a fortune index, .dat) was called a damaged archive.
  write_bytes(
      dir.file("index.dat"),
      std::string("\0\0\0\x02\0\0\x01\xd1\0\0\x06\x11\0\0\0\x10", 16) + std::string(48, '\0'));
  EXPECT_NE(message_of(inputs({dir.file("index.dat")})).find("index.dat holds binary data"),
            std::string::npos)
      << message_of(inputs({dir.file("index.dat")}));
  write_bytes(dir.file("corpus.zip"), std::string("PK\x03\x04\x14\0\0\0", 8) + "poem.txt");
  EXPECT_NE(message_of(inputs({dir.file("corpus.zip")})).find("is a zip archive"),
            std::string::npos);
}

// Old Mac text (lines ending in CR alone) is one line: said, with the conversion, since "holds a
// single document" did not explain it (a user trial).
TEST(ReadCorpus, LinesEndingInCrAloneAreWarnedOf) {
  TempDir dir;
  write_bytes(dir.file("mac.txt"), "line one\rline two\r\rthird\r");
  const Corpus c = read_corpus(inputs({dir.file("mac.txt")}));
  EXPECT_EQ(c.documents.size(), 1u);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("its lines end in CR alone (old Mac text)"), std::string::npos)
      << c.warnings[0];
  write_bytes(dir.file("dos.txt"), "line one\r\n\r\nline two\r\n");
  EXPECT_TRUE(read_corpus(inputs({dir.file("dos.txt")})).warnings.empty());
}

// Files joined with cat keep each one's byte-order mark: at the start of a line inside the file
// it is dropped as the first one is, and said (it put U+FEFF before a document, and broke a JSONL
// record's JSON). One inside a line is text (U+FEFF, zero-width no-break space) and stays.
TEST(ReadCorpus, ByteOrderMarksOfJoinedFilesAreDropped) {
  TempDir dir;
  const std::string bom = "\xEF\xBB\xBF";
  write_bytes(dir.file("joined.txt"),
              bom + "first\n\n" + bom + "second\n\n" + bom + "third, a" + bom + "b\n");
  Corpus c = read_corpus(inputs({dir.file("joined.txt")}));
  EXPECT_EQ(c.documents, (Docs{"first", "second", "third, a" + bom + "b"}));
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("2 UTF-8 byte-order marks at the start of a line inside the file"),
            std::string::npos)
      << c.warnings[0];
  write_bytes(dir.file("joined.jsonl"),
              bom + "{\"text\": \"one\"}\n" + bom + "{\"text\": \"two\"}\n");
  c = read_corpus(inputs({dir.file("joined.jsonl")}));
  EXPECT_EQ(c.documents, (Docs{"one", "two"}));
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("1 UTF-8 byte-order mark at"), std::string::npos) << c.warnings[0];
  // A file with its one mark at the start: nothing to say.
  write_bytes(dir.file("one.txt"), bom + "only\n");
  EXPECT_TRUE(read_corpus(inputs({dir.file("one.txt")})).warnings.empty());
}

TEST(ReadCorpus, InvalidUtf8IsReportedDroppedOrRefused) {
  TempDir dir;
  write_bytes(dir.file("latin1.txt"), "fine\n\ncaf\xE9\n\nna\xEFve and ol\xE9\n");
  CorpusOptions o = inputs({dir.file("latin1.txt")});

  const Corpus warned = read_corpus(o);
  EXPECT_EQ(warned.documents, (Docs{"fine", "caf\xE9", "na\xEFve and ol\xE9"}));  // kept as bytes
  ASSERT_EQ(warned.warnings.size(), 1u);
  EXPECT_NE(warned.warnings[0].find("3 invalid UTF-8 sequences, the first at byte 9 (line 3)"),
            std::string::npos)
      << warned.warnings[0];
  EXPECT_EQ(warned.files[0].invalid_utf8, 3u);

  o.invalid_utf8 = InvalidUtf8Policy::kSkip;
  const Corpus skipped = read_corpus(o);
  EXPECT_EQ(skipped.documents, (Docs{"fine"}));
  EXPECT_EQ(skipped.files[0].dropped_invalid, 2u);
  EXPECT_NE(skipped.warnings.at(0).find("dropped the 2 documents"), std::string::npos);

  o.invalid_utf8 = InvalidUtf8Policy::kError;
  EXPECT_NE(message_of(o).find("latin1.txt: 3 invalid UTF-8 sequences"), std::string::npos);

  // JSON cannot hold the bytes: U+FFFD under warn, the record dropped under skip.
  write_bytes(dir.file("bad.jsonl"), "{\"text\": \"caf\xE9\"}\n{\"text\": \"ok\"}\n");
  CorpusOptions j = inputs({dir.file("bad.jsonl")});
  EXPECT_EQ(read_corpus(j).documents, (Docs{"caf\xEF\xBF\xBD", "ok"}));
  j.invalid_utf8 = InvalidUtf8Policy::kSkip;
  EXPECT_EQ(read_corpus(j).documents, (Docs{"ok"}));
}

TEST(ReadCorpus, MalformedJsonlNamesFileAndLine) {
  TempDir dir;
  const auto with = [&](const std::string& text) {
    write_bytes(dir.file("d.jsonl"), text);
    return message_of(inputs({dir.file("d.jsonl")}));
  };
  EXPECT_NE(with("{\"text\": \"a\"}\n\n{\"text\": \"b\"\n").find("d.jsonl:3: not a JSON record"),
            std::string::npos);
  const std::string missing = with("{\"content\": \"a\", \"id\": 1}\n");
  EXPECT_NE(missing.find("d.jsonl:1: the record has no \"text\" field (it has: content, id)"),
            std::string::npos)
      << missing;
  EXPECT_NE(missing.find("--text-field"), std::string::npos);
  EXPECT_NE(with("[1, 2]\n").find("d.jsonl:1: the record is a JSON array"), std::string::npos);
  EXPECT_NE(with("{\"text\": 7}\n").find("field \"text\" is a number, not a string"),
            std::string::npos);
}

// Datasets nest their text ({"meta": ..., "content": {"body": ...}}, {"choices": [{"text": ...}]}):
// a dotted --text-field follows objects and array items, and a key holding a dot is still taken
// whole first (a user could not name nested fields at all).
TEST(ReadCorpus, DottedTextFieldsReachNestedText) {
  TempDir dir;
  write_bytes(
      dir.file("n.jsonl"),
      "{\"content\": {\"body\": \"first\", \"lang\": \"en\"}, \"choices\": [{\"text\": \"c0\"}]}\n"
      "{\"content\": {\"body\": \"second\"}, \"choices\": [{\"text\": \"x\"}, {\"text\": \"c1\"}], "
      "\"content.body\": \"whole key\"}\n");
  CorpusOptions o = inputs({dir.file("n.jsonl")});
  o.text_field = "content.body";
  EXPECT_EQ(read_corpus(o).documents, (Docs{"first", "whole key"}));
  o.text_field = "choices.0.text";
  EXPECT_EQ(read_corpus(o).documents, (Docs{"c0", "x"}));

  // A missing step says where the path stops and what is there.
  o.text_field = "content.text";
  EXPECT_NE(message_of(o).find("n.jsonl:1: the record has no \"content.text\" field: \"content\" "
                               "is an object without \"text\" (it has: body, lang)"),
            std::string::npos)
      << message_of(o);
  o.text_field = "choices.1.text";
  EXPECT_NE(message_of(o).find("n.jsonl:1: the record has no \"choices.1.text\" field: "
                               "\"choices\" is an array of 1 item, without item 1"),
            std::string::npos)
      << message_of(o);
  o.text_field = "content.body.x";
  EXPECT_NE(message_of(o).find("\"content.body\" is a string"), std::string::npos) << message_of(o);
  o.text_field = "meta.text";
  EXPECT_NE(message_of(o).find("n.jsonl:1: the record has no \"meta.text\" field (it has: choices, "
                               "content)"),
            std::string::npos)
      << message_of(o);
  o.text_field = "content";
  EXPECT_NE(message_of(o).find("field \"content\" is an object, not a string"), std::string::npos)
      << message_of(o);
  // Item numbers as JSON Pointer writes them, no empty steps (a trial: "a..1", "choices.00").
  o.text_field = "choices.00.text";
  EXPECT_NE(message_of(o).find("without item 00"), std::string::npos) << message_of(o);
  o.text_field = "choices..text";
  EXPECT_NE(message_of(o).find("has no empty steps"), std::string::npos) << message_of(o);
  // ... unless a key starts with the dot.
  write_bytes(dir.file("n.jsonl"), "{\"a\": {\".b\": \"dot first\"}}\n");
  o.text_field = "a..b";
  EXPECT_EQ(read_corpus(o).documents, (Docs{"dot first"}));
  // A key holding dots below the top level: the longest key the rest of the path starts with.
  write_bytes(dir.file("n.jsonl"),
              "{\"meta.data\": {\"text\": \"dotted\"}, \"meta\": {\"data\": 1}}\n"
              "{\"x\": {\"a.b\": [\"deep\"]}, \"meta.data\": {\"text\": \"second\"}}\n");
  o.text_field = "meta.data.text";
  EXPECT_EQ(read_corpus(o).documents, (Docs{"dotted", "second"}));
  write_bytes(dir.file("n.jsonl"), "{\"x\": {\"a.b\": [\"deep\"]}}\n");
  o.text_field = "x.a.b.0";
  EXPECT_EQ(read_corpus(o).documents, (Docs{"deep"}));
  write_bytes(dir.file("n.jsonl"), "{\"meta\": {\"text\": null}}\n");
  o.text_field = "meta.text";
  EXPECT_NE(message_of(o).find("field \"meta.text\" is null, not a string"), std::string::npos)
      << message_of(o);
}

TEST(CorpusOptionNames, ParseAndRefuse) {
  EXPECT_EQ(parse_corpus_format("jsonl"), CorpusFormat::kJsonl);
  EXPECT_EQ(parse_document_split("lines"), DocumentSplit::kLines);
  EXPECT_EQ(parse_invalid_utf8_policy("skip"), InvalidUtf8Policy::kSkip);
  EXPECT_THROW(parse_corpus_format("csv"), Error);
  EXPECT_THROW(parse_document_split("paragraphs"), Error);
  EXPECT_THROW(parse_invalid_utf8_policy("ignore"), Error);
}

}  // namespace
}  // namespace chainlm
