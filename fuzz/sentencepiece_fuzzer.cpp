// SentencePiece .model files through chainlm's wrapper (load_tokenizer on a .model path:
// tried as a llama2.c tokenizer.bin first, then parsed by SentencePiece). A model it accepts
// must encode text and decode every id it has.
#include "fuzz_util.h"
#include "io/tokenizer.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      fuzz::write_scratch_file("tokenizer.model", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_only_chainlm_errors([&] {
    const auto tok = load_tokenizer(path);
    const int n = tok->vocab_size();
    CHAINLM_FUZZ_ASSERT(n > 0);
    for (const char* text : {"Once upon a time", "  two  spaces\n", "h\xc3\xa9llo \xff\xfe"}) {
      fuzz::expect_only_chainlm_errors([&] {
        const std::vector<int> ids = tok->encode(text);
        for (int id : ids) CHAINLM_FUZZ_ASSERT(id >= 0 && id < n);
        (void)tok->decode(ids);
      });
    }
    int prev = tok->bos_id();
    for (int id = 0; id < n && id < 4096; ++id) {
      (void)tok->decode_token(prev, id);
      prev = id;
    }
  });
  return 0;
}
