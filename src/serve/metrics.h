#pragma once
// Server counters, rendered for GET /metrics in the Prometheus text exposition format.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace chainlm {

class Metrics {
 public:
  // Every HTTP request once answered, by route (a known path, or "other") and status code.
  void count_request(const std::string& route, int status);
  // A generation that ran: its prompt tokens, the chains of each generated token, its time in a
  // session (queue wait excluded) and end to end, and whether its client went away first.
  void count_generation(int prompt_tokens, const std::vector<int>& chains_per_token,
                        double generation_seconds, double request_seconds, bool cancelled);

  // A request's wait in the queue for a session (0 when one was free), once admitted.
  void count_queue_wait(double seconds);
  // A request whose client left while it waited in the queue (it never started).
  void count_client_left_queue();
  // The labels of chainlm_build_info (version, model, weights), set once at start.
  void set_build_info(std::vector<std::pair<std::string, std::string>> labels);

  struct Gauges {
    int sessions_in_flight, queue_depth, max_sessions, max_queue;
    uint64_t resident_bytes, peak_resident_bytes, estimated_bytes;  // process memory
    // The batch scheduler's work: decoding steps and the rows (sequences) they advanced, and
    // prompt pieces read between them.
    long decode_steps, decode_rows, prefill_pieces;
    double decode_seconds, prefill_seconds;
    int decode_threads;  // threads the steps run on now (infer/decode_threads.h); 0 before any
    int waiting_to_join;  // generations handed to the scheduler, not yet in its steps
  };
  std::string render(const Gauges& g) const;

  // Upper bounds (seconds) of the latency histogram buckets.
  static constexpr std::array<double, 13> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                      1,     2.5,  5,     10,   30,  60};

 private:
  struct Histogram {
    std::array<long, kBuckets.size()> counts{};  // per bucket (not cumulative)
    long count = 0;
    double sum = 0;
    void observe(double seconds);
  };

  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, long> requests_;
  std::map<int, long> tokens_by_chains_;
  long prompt_tokens_ = 0, generations_ = 0, cancelled_ = 0, left_queue_ = 0;
  Histogram request_latency_, generation_latency_, queue_wait_;
  std::vector<std::pair<std::string, std::string>> build_info_;
};

}  // namespace chainlm
