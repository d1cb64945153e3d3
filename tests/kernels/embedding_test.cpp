#include "kernels/embedding.h"

#include <gtest/gtest.h>

#include "gradcheck.h"

namespace chainlm {
namespace {

TEST(Embedding, ForwardGathersPrefixAndBackwardScatterAdds) {
  const int V = 5, D = 6, M = 4, width = 4;
  auto table = test::random_vector((size_t)V * D, 1);
  std::vector<int> tokens = {2, 0, 2, 4};
  std::vector<float> out((size_t)M * D, -3.0f);
  embedding_forward(M, width, tokens.data(), table.data(), D, out.data(), D);
  for (int r = 0; r < M; ++r) {
    for (int j = 0; j < width; ++j) EXPECT_EQ(out[(size_t)r * D + j], table[(size_t)tokens[r] * D + j]);
    for (int j = width; j < D; ++j) EXPECT_EQ(out[(size_t)r * D + j], -3.0f);
  }
  auto dout = test::random_vector((size_t)M * D, 2);
  std::vector<float> dtable((size_t)V * D, 1.0f);
  embedding_backward(M, width, tokens.data(), dout.data(), D, dtable.data(), D);
  // Reference: token 2 appears twice (rows 0 and 2); token 1 and 3 never.
  for (int j = 0; j < D; ++j) {
    const bool active = j < width;
    EXPECT_FLOAT_EQ(dtable[2 * D + j], 1.0f + (active ? dout[j] + dout[2 * D + j] : 0.0f));
    EXPECT_FLOAT_EQ(dtable[0 * D + j], 1.0f + (active ? dout[1 * D + j] : 0.0f));
    EXPECT_FLOAT_EQ(dtable[4 * D + j], 1.0f + (active ? dout[3 * D + j] : 0.0f));
    EXPECT_EQ(dtable[1 * D + j], 1.0f);
    EXPECT_EQ(dtable[3 * D + j], 1.0f);
  }
}

}  // namespace
}  // namespace chainlm
