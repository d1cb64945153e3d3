// The Prometheus text the server's /metrics renders (serve/metrics.h): label values escaped.
#include "serve/metrics.h"

#include <gtest/gtest.h>

namespace chainlm {
namespace {

// A model name is whatever --model-name or a path says: a quote, a backslash or a newline in it
// would end the label, or the line, of chainlm_build_info.
TEST(Metrics, BuildInfoLabelValuesAreEscaped) {
  Metrics m;
  m.set_build_info({{"version", "1.2"}, {"model", "a\"b\\c\nd"}});
  const std::string text = m.render({});
  EXPECT_NE(text.find("\nchainlm_build_info{version=\"1.2\",model=\"a\\\"b\\\\c\\nd\"} 1\n"),
            std::string::npos)
      << text;
}

TEST(Metrics, QueueWaitsFallInTheirBuckets) {
  Metrics m;
  m.count_queue_wait(0);
  m.count_queue_wait(0.3);
  m.count_queue_wait(100);
  const std::string text = m.render({});
  EXPECT_NE(text.find("\nchainlm_queue_wait_seconds_bucket{le=\"0.005\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\nchainlm_queue_wait_seconds_bucket{le=\"0.5\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\nchainlm_queue_wait_seconds_bucket{le=\"60\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\nchainlm_queue_wait_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\nchainlm_queue_wait_seconds_count 3\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace chainlm
