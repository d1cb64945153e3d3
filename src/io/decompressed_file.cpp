#include "io/decompressed_file.h"

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "core/error.h"

namespace chainlm {
namespace {

struct ArchiveCloser {
  void operator()(archive* a) const { archive_read_free(a); }
};

std::string reason(archive* a) {
  const char* message = archive_error_string(a);
  return message ? message : "unknown libarchive error";
}

// Appends the decompressed content of the gzip file `path` (every member) to out; throws naming
// the file when zlib finds it damaged (a bad deflate stream, CRC or length) or truncated.
void read_gzip(const std::string& path, std::string& out) {
  gzFile gz = gzopen(path.c_str(), "rb");
  CHAINLM_CHECK(gz != nullptr, "cannot read ", path, ": cannot open it");
  gzbuffer(gz, 1 << 16);
  char buffer[1 << 16];
  for (;;) {
    const int n = gzread(gz, buffer, sizeof buffer);
    if (n < 0) {
      int code = 0;
      std::string message = gzerror(gz, &code);
      if (message.rfind(path + ": ", 0) == 0)
        message.erase(0, path.size() + 2);  // zlib names the file
      gzclose(gz);
      fail("cannot read ", path, " (gzip-compressed): ", message, "; the file is damaged");
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  // A file cut short ends without an error from gzread; gzclose_r reports it (Z_BUF_ERROR).
  const int closed = gzclose_r(gz);
  CHAINLM_CHECK(closed == Z_OK, "cannot read ", path, " (gzip-compressed): ",
                closed == Z_BUF_ERROR ? "a truncated gzip file (it ends in the middle of its data)"
                                      : "zlib error",
                "; the file is damaged");
}

}  // namespace

DecompressedFile read_decompressed(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CHAINLM_CHECK(fs::exists(path, ec), "cannot read ", path, ": no such file");
  CHAINLM_CHECK(!fs::is_directory(path, ec), "cannot read ", path, ": it is a directory");
  DecompressedFile file{"", "none"};
  if (fs::file_size(path, ec) == 0 && !ec) return file;
  // libarchive's gzip filter neither reports a damaged deflate stream (it ends the data there)
  // nor checks the trailer's CRC and length: a corrupt .gz became a shorter corpus without a
  // word. zlib reads gzip itself, members one after another, and checks each. Told by the
  // magic bytes before libarchive opens it: a small file cut in its trailer failed that open
  // with "unknown libarchive error".
  {
    std::ifstream in(path, std::ios::binary);
    char magic[2] = {0, 0};
    if (in.read(magic, 2) && (unsigned char)magic[0] == 0x1f && (unsigned char)magic[1] == 0x8b) {
      file.compression = "gzip";
      read_gzip(path, file.bytes);
      return file;
    }
  }

  // libarchive's "raw" format with every filter: the file's content, after undoing whatever
  // compression its first bytes announce (a plain file passes through unchanged).
  std::unique_ptr<archive, ArchiveCloser> a(archive_read_new());
  CHAINLM_CHECK(a != nullptr, "cannot read ", path, ": out of memory");
  archive_read_support_filter_all(a.get());
  archive_read_support_format_raw(a.get());
  CHAINLM_CHECK(archive_read_open_filename(a.get(), path.c_str(), size_t{1} << 16) == ARCHIVE_OK,
                "cannot read ", path, ": ", reason(a.get()));
  // The filters are chosen when the file is opened, from its first bytes.
  if (archive_filter_count(a.get()) > 1 && archive_filter_code(a.get(), 0) != ARCHIVE_FILTER_NONE)
    file.compression = archive_filter_name(a.get(), 0);
  const std::string what =
      file.compression == "none" ? path : path + " (" + file.compression + "-compressed)";
  archive_entry* entry = nullptr;
  const int header = archive_read_next_header(a.get(), &entry);
  CHAINLM_CHECK(header == ARCHIVE_OK || header == ARCHIVE_WARN, "cannot read ", what, ": ",
                reason(a.get()));

  const size_t on_disk = fs::file_size(path, ec);
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
