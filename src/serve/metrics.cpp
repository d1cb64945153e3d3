#include "serve/metrics.h"

#include <sstream>

namespace chainlm {

void Metrics::Histogram::observe(double seconds) {
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  if (b < kBuckets.size()) ++counts[b];
  ++count;
  sum += seconds;
}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

void Metrics::count_generation(int prompt_tokens, const std::vector<int>& chains_per_token,
                               double generation_seconds, double request_seconds, bool cancelled) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++generations_;
  prompt_tokens_ += prompt_tokens;
  for (int k : chains_per_token) ++tokens_by_chains_[k];
  if (cancelled) ++cancelled_;
  generation_latency_.observe(generation_seconds);
  request_latency_.observe(request_seconds);
}

void Metrics::count_queue_wait(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  queue_wait_.observe(seconds);
}

void Metrics::count_client_left_queue() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++left_queue_;
}

void Metrics::set_build_info(std::vector<std::pair<std::string, std::string>> labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  build_info_ = std::move(labels);
}

namespace {

// A label value in the exposition format: backslash, double quote and newline escaped (a model
// name is a path, which may hold any of them).
std::string label_value(const std::string& v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"')
      out += '\\', out += ch;
    else if (ch == '\n')
      out += "\\n";
    else
      out += ch;
  }
  return out;
}

void histogram(std::ostringstream& os, const std::string& name, const std::string& help,
               const std::array<long, Metrics::kBuckets.size()>& counts, long count, double sum) {
  os << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " histogram\n";
  long cumulative = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    cumulative += counts[b];
    os << name << "_bucket{le=\"" << Metrics::kBuckets[b] << "\"} " << cumulative << '\n';
  }
  os << name << "_bucket{le=\"+Inf\"} " << count << '\n';
  os << name << "_sum " << sum << '\n' << name << "_count " << count << '\n';
}

void gauge(std::ostringstream& os, const std::string& name, const std::string& help, long value) {
  os << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n"
     << name << ' ' << value << '\n';
}

void counter(std::ostringstream& os, const std::string& name, const std::string& help, long value) {
  os << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
     << name << ' ' << value << '\n';
}

}  // namespace

std::string Metrics::render(const Gauges& g) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream os;
  os.precision(9);
  os << "# HELP chainlm_http_requests_total HTTP requests answered, by route and status code.\n"
        "# TYPE chainlm_http_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    os << "chainlm_http_requests_total{route=\"" << key.first << "\",code=\"" << key.second
       << "\"} " << n << '\n';
  os << "# HELP chainlm_generations_total Generations run (completions admitted to a session).\n"
        "# TYPE chainlm_generations_total counter\n"
        "chainlm_generations_total "
     << generations_ << '\n';
  os << "# HELP chainlm_generations_cancelled_total Generations stopped because the client went "
        "away (streamed or not).\n"
        "# TYPE chainlm_generations_cancelled_total counter\n"
        "chainlm_generations_cancelled_total "
     << cancelled_ << '\n';
  counter(os, "chainlm_requests_left_queue_total",
          "Requests whose client went away while they waited for a session: never started.",
          left_queue_);
  os << "# HELP chainlm_prompt_tokens_total Prompt tokens read (BOS included), by every "
        "generation: a "
        "request of n choices reads its prompt n times.\n"
        "# TYPE chainlm_prompt_tokens_total counter\n"
        "chainlm_prompt_tokens_total "
     << prompt_tokens_ << '\n';
  os << "# HELP chainlm_generated_tokens_total Tokens generated, by the active chains (sub-model) "
        "that produced them.\n"
        "# TYPE chainlm_generated_tokens_total counter\n";
  for (const auto& [k, n] : tokens_by_chains_)
    os << "chainlm_generated_tokens_total{chains=\"" << k << "\"} " << n << '\n';
  histogram(os, "chainlm_request_duration_seconds",
            "Generations (a request's choices, each) from the request's arrival to their last "
            "token, queue "
            "wait included.",
            request_latency_.counts, request_latency_.count, request_latency_.sum);
  histogram(os, "chainlm_generation_duration_seconds",
            "Time a completion held a session (prefill and decoding).", generation_latency_.counts,
            generation_latency_.count, generation_latency_.sum);
  histogram(os, "chainlm_queue_wait_seconds",
            "Time a request waited for a session before its generations started (0 when one was "
            "free).",
            queue_wait_.counts, queue_wait_.count, queue_wait_.sum);
  counter(os, "chainlm_decode_steps_total", "Batched decoding steps (each advances every active generation by a token).",
          g.decode_steps);
  counter(os, "chainlm_decode_rows_total",
          "Tokens those steps read (generated ones, and prompts' last tokens); divided by the "
          "steps, the average batch.",
          g.decode_rows);
  counter(os, "chainlm_prefill_pieces_total", "Prompt pieces (of up to --prefill-chunk tokens) read between steps.",
          g.prefill_pieces);
  os << "# HELP chainlm_decode_seconds_total Time in decoding steps.\n# TYPE chainlm_decode_seconds_total counter\n"
     << "chainlm_decode_seconds_total " << g.decode_seconds << '\n';
  os << "# HELP chainlm_prefill_seconds_total Time reading prompt pieces.\n# TYPE chainlm_prefill_seconds_total counter\n"
     << "chainlm_prefill_seconds_total " << g.prefill_seconds << '\n';
  gauge(os, "chainlm_decode_threads",
        "Threads the decoding steps run on now: fewer than --threads while that measures faster (a "
        "busy core).",
        g.decode_threads);
  gauge(os, "chainlm_generations_waiting_to_join",
        "Admitted generations the scheduler has not yet taken into its steps (it takes them "
        "between steps; more than a moment's worth means it is behind).",
        g.waiting_to_join);
  gauge(os, "chainlm_sessions_in_flight",
        "Requests admitted and not yet answered (one of n choices counts once).",
        g.sessions_in_flight);
  gauge(os, "chainlm_queue_depth", "Requests waiting for a session.", g.queue_depth);
  gauge(os, "chainlm_max_sessions", "Generations that may run at once.", g.max_sessions);
  gauge(os, "chainlm_max_queue", "Requests that may wait; beyond them the server answers 503.",
        g.max_queue);
  gauge(os, "chainlm_resident_memory_bytes", "Resident set size of the server process now.",
        (long)g.resident_bytes);
  gauge(os, "chainlm_peak_resident_memory_bytes", "Largest resident set size of the server process so far.",
        (long)g.peak_resident_bytes);
  gauge(os, "chainlm_estimated_memory_bytes",
        "Memory the server was estimated to need at start (weights, every session at full context).",
        (long)g.estimated_bytes);
  if (!build_info_.empty()) {
    os << "# HELP chainlm_build_info The server's version, model and weights (always 1).\n"
          "# TYPE chainlm_build_info gauge\nchainlm_build_info{";
    for (size_t i = 0; i < build_info_.size(); ++i)
      os << (i ? "," : "") << build_info_[i].first << "=\"" << label_value(build_info_[i].second)
         << '"';
    os << "} 1\n";
  }
  return os.str();
}

}  // namespace chainlm
