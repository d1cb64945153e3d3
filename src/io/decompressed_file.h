#pragma once
// Reads a file whole, decompressing it first when it is gzip, xz, zstd, bzip2 or another
// compression libarchive recognizes (by its content, not its name), so a corpus.txt.gz is read as
// the text inside it and never tokenized as compressed bytes.
#include <string>

namespace chainlm {

struct DecompressedFile {
  std::string bytes;
  std::string compression;  // "none", or libarchive's name for the filter: "gzip", "xz", "zstd"...
};

// Throws naming the path on an unreadable file or corrupt/truncated compressed data.
DecompressedFile read_decompressed(const std::string& path);

}  // namespace chainlm
