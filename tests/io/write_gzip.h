#pragma once
// A gzip file of given bytes, through zlib's own gzip writer: the compressed inputs the readers
// of text (prepare, eval) must take as their text.
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

namespace chainlm::testing {

inline void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile gz = gzopen(path.c_str(), "wb");
  ASSERT_NE(gz, nullptr) << "cannot write " << path;
  ASSERT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

}  // namespace chainlm::testing
