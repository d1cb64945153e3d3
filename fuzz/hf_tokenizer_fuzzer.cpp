// Hugging Face tokenizer.json: load_tokenizer takes a *.json path with a "model" as one. A file
// it accepts must encode any text into ids inside its vocabulary, decode what it encodes, and
// decode (whole and token by token) every id it has; anything else is a chainlm::Error naming
// the file (bad JSON, an unknown model or component, a merge outside the vocabulary, a regex
// that does not compile or runs past PCRE2's match limit).
#include "fuzz_util.h"
#include "io/tokenizer.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch_file("tokenizer.json", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_only_chainlm_errors([&] {
    const auto tok = load_tokenizer(path);
    const int n = tok->vocab_size();
    CHAINLM_FUZZ_ASSERT(n >= 1);
    CHAINLM_FUZZ_ASSERT(tok->bos_id() >= 0 && tok->bos_id() < n && tok->eos_id() >= 0 && tok->eos_id() < n);
    for (const char* text : {"Once upon a time", "  two  spaces\n\n", "It's 12345 caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x90\x88",
                             "h\xc3\xa9llo \xe2\x96\x81 \xff\xfe <s></s><|endoftext|>", ""}) {
      const std::vector<int> ids = tok->encode(text);
      for (int id : ids) CHAINLM_FUZZ_ASSERT(id >= 0 && id < n);
      (void)tok->decode(ids);
    }
    int prev = tok->bos_id();
    for (int id = 0; id < std::min(n, 4096); ++id) {
      (void)tok->decode_token(prev, id);
      (void)tok->decode({id});
      prev = id;
    }
  });
  return 0;
}
