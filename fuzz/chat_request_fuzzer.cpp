// The bodies of POST /v1/chat/completions, /tokenize and /detokenize, handled as the server does
// (src/serve/server.cpp): parse_json_body, then parse_chat_request and the conversation rendered
// in every template family (a chainlm::Error from the renderer is the 400 a conversation the
// template refuses gets), then the token routes' parsers. A RequestError is a 400; any other
// exception would be a 500: a finding.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "served_config.h"
#include "io/tokenizer.h"
#include "serve/chat_request.h"
#include "serve/chat_template.h"
#include "serve/completion_text.h"
#include "serve/tokenize_request.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ModelConfig config = fuzz_served_config();
  static const ByteTokenizer tok;
  nlohmann::json body;
  try {
    body = parse_json_body(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const RequestError&) {
    return 0;
  }
  try {
    const ChatRequest r = parse_chat_request(body, config);
    CHAINLM_FUZZ_ASSERT(!r.messages.empty());
    CHAINLM_FUZZ_ASSERT(r.completion.logprobs >= -1 && r.completion.logprobs <= kMaxTopLogprobs);
    for (ChatTemplate t : {ChatTemplate::kPlain, ChatTemplate::kChatML, ChatTemplate::kLlama2,
                           ChatTemplate::kLlama3, ChatTemplate::kLlama31, ChatTemplate::kZephyr}) {
      try {
        const auto segments = render_chat(t, r.messages, true);
        std::string text = chat_text(segments, "<s>", "</s>");
        for (const ChatSegment& g : segments)
          if (g.kind == ChatSegment::kText) (void)tok.encode(g.text);
        (void)json_dump(nlohmann::json{{"prompt", text}});
      } catch (const Error&) {
        CHAINLM_FUZZ_ASSERT(t == ChatTemplate::kLlama2);  // only it refuses conversations of valid roles
      }
    }
  } catch (const RequestError& e) {
    CHAINLM_FUZZ_ASSERT(std::string(e.what()).size() > 0);
  }
  try {
    const TokenizeRequest t = parse_tokenize_request(body);
    (void)tok.encode(t.content);
  } catch (const RequestError&) {
  }
  try {
    const std::vector<int> ids = parse_detokenize_request(body, tok.vocab_size());
    for (int id : ids) CHAINLM_FUZZ_ASSERT(id >= 0 && id < tok.vocab_size());
    (void)json_dump(nlohmann::json{{"content", tok.decode(ids)}});
  } catch (const RequestError&) {
  }
  return 0;
}
