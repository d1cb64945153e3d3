// The body of POST /v1/completions, handled as the server does (src/serve/server.cpp):
// parse_completion_body (a RequestError is a 400), the prompt encoded; then the completion
// text built from the prompt's bytes under the request's stop sequences, as streaming does.
// Any other exception would be a 500: a finding.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "served_config.h"
#include "io/tokenizer.h"
#include "serve/completion_request.h"
#include "serve/completion_text.h"

using namespace chainlm;

namespace {

// The pieces the prompt is streamed in: uneven, 1..5 bytes.
std::vector<std::string> pieces_of(const std::string& text, size_t salt) {
  std::vector<std::string> pieces;
  for (size_t pos = 0, step = 0; pos < text.size(); ++step) {
    const size_t n = std::min(text.size() - pos, 1 + (step * 7 + salt) % 5);
    pieces.push_back(text.substr(pos, n));
    pos += n;
  }
  return pieces;
}

// What the completion text must be: generation stops after the first piece that completes a
// stop sequence, and the text generated so far is cut before the first stop sequence in it.
std::string expected_text(const std::vector<std::string>& pieces,
                          const std::vector<std::string>& stop) {
  std::string text;
  for (const std::string& piece : pieces) {
    text += piece;
    size_t cut = std::string::npos;
    for (const std::string& q : stop) cut = std::min(cut, text.find(q));
    if (cut != std::string::npos) return text.substr(0, cut);
  }
  return text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ModelConfig config = fuzz_served_config();
  static const ByteTokenizer tok;
  CompletionRequest r;
  try {
    r = parse_completion_body(std::string(reinterpret_cast<const char*>(data), size), config);
  } catch (const RequestError& e) {
    CHAINLM_FUZZ_ASSERT(std::string(e.what()).size() > 0);
    return 0;
  }
  CHAINLM_FUZZ_ASSERT(r.gen.max_tokens >= 0 && r.gen.max_tokens <= config.max_seq_len);
  CHAINLM_FUZZ_ASSERT(r.gen.chains >= 0 && r.gen.chains <= config.n_chains());
  CHAINLM_FUZZ_ASSERT(r.stop.size() <= 4);
  if (!r.gen.schedule.empty())
    for (int i = 0; i < 100; ++i) {
      const int k = r.gen.schedule.chains_for(i);
      CHAINLM_FUZZ_ASSERT(k >= 1 && k <= config.n_chains());
    }
  CHAINLM_FUZZ_ASSERT(!r.prompts.empty() && r.n >= 1 && r.prompts.size() * r.n <= (size_t)kMaxChoices);
  for (const PromptInput& p : r.prompts) {
    (void)tok.encode(p.text);
    for (int t : p.tokens) CHAINLM_FUZZ_ASSERT(t >= 0 && t < config.vocab_size);
  }

  // Stream the prompt's bytes through the stop-sequence filter, as generated tokens would be.
  const std::vector<std::string> pieces = pieces_of(r.prompts[0].text, size);
  CompletionText text(r.stop);
  std::string released;
  for (const std::string& piece : pieces) released += text.push(piece);
  released += text.finish();
  CHAINLM_FUZZ_ASSERT(released == text.text());
  CHAINLM_FUZZ_ASSERT(released == expected_text(pieces, r.stop));
  (void)json_dump(nlohmann::json{{"text", released}});
  return 0;
}
