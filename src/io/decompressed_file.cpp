#include "io/decompressed_file.h"

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string_view>

#include "core/error.h"
#include "core/number_format.h"
#include "io/atomic_file.h"

namespace chainlm {
namespace {

struct ArchiveCloser {
  void operator()(archive* a) const { archive_read_free(a); }
};

// libarchive's words, then what a library's (not the system's) error means for the user: an
// .xz cut short said "Lzma library error: No progress is possible" and no more.
std::string reason(archive* a) {
  const char* message = archive_error_string(a);
  const std::string said = message ? message : "unknown libarchive error";
  // libarchive gives its own errors -1 (ARCHIVE_ERRNO_MISC) or EILSEQ (a format error), the
  // system's their errno.
  const int e = archive_errno(a);
  return e == -1 || e == EILSEQ || e == 0 ? said + "; the file is damaged or cut short" : said;
}

// Appends the decompressed content of the gzip file `path` (every member, as `cat a.gz b.gz`
// makes) to out; throws naming the file when zlib finds it damaged (a bad deflate stream, CRC
// or length), cut short, or followed by bytes that are not another member. zlib's gzread ended
// the data quietly at such bytes (a damaged second member was dropped without a word); gzip
// itself warns of "trailing garbage". Zero bytes after the last member (a block-padded tape or
// tar image) are let through, as gzip lets them.
void read_gzip(const std::string& path, const std::string& in, std::string& out) {
  const auto damaged = [&](const std::string& why) {
    fail("cannot read ", path, " (gzip-compressed): ", why, "; the file is damaged");
  };
  char buffer[1 << 16];
  size_t at = 0;
  while (at < in.size()) {
    if (in.size() - at < 2 || (unsigned char)in[at] != 0x1f || (unsigned char)in[at + 1] != 0x8b) {
      if (in.find_first_not_of('\0', at) == std::string::npos) break;
      damaged(cat(count_of((long)(in.size() - at), "byte"), " after byte ", at,
                  in.size() - at == 1 ? " is" : " are",
                  " not gzip data (a damaged member, or data appended)"));
    }
    z_stream z{};
    CHAINLM_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, "cannot read ", path,
                  ": zlib could not start");
    size_t fed = at;  // avail_in is 32-bit: the input goes in in pieces of up to 1 GiB
    int rc = Z_OK;
    while (rc == Z_OK) {
      if (z.avail_in == 0 && fed < in.size()) {
        const size_t n = std::min<size_t>(in.size() - fed, size_t{1} << 30);
        z.next_in =
            reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + fed));  // (zlib reads it only)
        z.avail_in = static_cast<uInt>(n);
        fed += n;
      }
      z.next_out = reinterpret_cast<Bytef*>(buffer);
      z.avail_out = sizeof buffer;
      rc = inflate(&z, Z_NO_FLUSH);
      out.append(buffer, sizeof buffer - z.avail_out);
      if (rc == Z_BUF_ERROR && z.avail_in == 0 && fed == in.size()) break;  // ended mid-member
      if (rc == Z_BUF_ERROR) rc = Z_OK;  // the output buffer was full, or more input is due
    }
    const std::string message = z.msg ? z.msg : "";
    const size_t used = z.total_in;
    inflateEnd(&z);
    if (rc == Z_BUF_ERROR) damaged("a truncated gzip file (it ends in the middle of its data)");
    if (rc != Z_STREAM_END)
      damaged(cat(at > 0 ? cat("the member at byte ", at, ": ") : std::string(),
                  message.empty() ? cat("zlib error ", rc) : message));
    at += used;
  }
}

std::string whole_file(const std::string& path) {
  try {
    return read_file(path);
  } catch (const Error& e) {
    fail("cannot read ", path, ": ", e.what());
  }
}

// The first n bytes of a file (fewer if it is shorter).
std::string first_bytes(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string head(n, '\0');
  in.read(head.data(), (std::streamsize)n);
  head.resize((size_t)std::max<std::streamsize>(in.gcount(), 0));
  return head;
}

}  // namespace

DecompressedFile read_decompressed(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CHAINLM_CHECK(fs::exists(path, ec), "cannot read ", path, ": no such file");
  CHAINLM_CHECK(!fs::is_directory(path, ec), "cannot read ", path, ": it is a directory");
  DecompressedFile file{"", "none"};
  // A pipe, a FIFO or /dev/stdin is read once, whole: its first bytes, read to tell how it is
  // compressed, are gone from a second open (a user trial's `cat corpus | chainlm prepare
  // --input /dev/stdin` lost its first 8 KiB without a word, and a FIFO hung).
  const bool stream = !fs::is_regular_file(path, ec);
  std::string raw;
  if (stream) {
    raw = whole_file(path);
    if (raw.empty()) return file;
  } else if (fs::file_size(path, ec) == 0 && !ec) {
    return file;
  }
  const std::string magic = stream ? raw.substr(0, 6) : first_bytes(path, 6);
  // libarchive's gzip filter neither reports a damaged deflate stream (it ends the data there)
  // nor checks the trailer's CRC and length: a corrupt .gz became a shorter corpus without a
  // word. zlib reads gzip itself, members one after another, and checks each. Told by the
  // magic bytes before libarchive opens it: a small file cut in its trailer failed that open
  // with "unknown libarchive error".
  if (magic.size() >= 2 && (unsigned char)magic[0] == 0x1f && (unsigned char)magic[1] == 0x8b) {
    file.compression = "gzip";
    read_gzip(path, stream ? raw : whole_file(path), file.bytes);
    return file;
  }

  // libarchive's "raw" format with every filter: the file's content, after undoing whatever
  // compression its first bytes announce (a plain file passes through unchanged).
  std::unique_ptr<archive, ArchiveCloser> a(archive_read_new());
  CHAINLM_CHECK(a != nullptr, "cannot read ", path, ": out of memory");
  archive_read_support_filter_all(a.get());
  archive_read_support_format_raw(a.get());
  const int opened = stream ? archive_read_open_memory(a.get(), raw.data(), raw.size())
                            : archive_read_open_filename(a.get(), path.c_str(), size_t{1} << 16);
  if (opened != ARCHIVE_OK) {
    const std::string why = reason(a.get());
    // Legacy LZMA ("lzma alone") has no magic number: libarchive guesses it from the header's
    // values, and took a fortune index (.dat, binary) for it ("Lzma library error: Corrupted
    // input data; the file is damaged"). Neither named .lzma nor xz (which has a magic), such a
    // file is read as it is, and the caller says it holds binary data.
    const bool xz = magic == std::string_view(
                                 "\xFD"
                                 "7zXZ\0",
                                 6);
    if (why.rfind("Lzma", 0) == 0 && !xz && fs::path(path).extension().string() != ".lzma")
      return DecompressedFile{stream ? std::move(raw) : whole_file(path), "none"};
    fail("cannot read ", path, ": ", why);
  }
  // The filters are chosen when the file is opened, from its first bytes.
  if (archive_filter_count(a.get()) > 1 && archive_filter_code(a.get(), 0) != ARCHIVE_FILTER_NONE)
    file.compression = archive_filter_name(a.get(), 0);
  const std::string what =
      file.compression == "none" ? path : path + " (" + file.compression + "-compressed)";
  archive_entry* entry = nullptr;
  const int header = archive_read_next_header(a.get(), &entry);
  CHAINLM_CHECK(header == ARCHIVE_OK || header == ARCHIVE_WARN, "cannot read ", what, ": ",
                reason(a.get()));

  const size_t on_disk = stream ? raw.size() : fs::file_size(path, ec);
  if (!ec && file.compression == "none") file.bytes.reserve(on_disk);
  char buffer[1 << 16];
  for (;;) {
    const la_ssize_t n = archive_read_data(a.get(), buffer, sizeof(buffer));
    CHAINLM_CHECK(n >= 0, "cannot read ", what, ": ", reason(a.get()));
    if (n == 0) break;
    file.bytes.append(buffer, static_cast<size_t>(n));
  }
  return file;
}

}  // namespace chainlm
