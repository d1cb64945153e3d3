// llama2.c tokenizer.bin: load_tokenizer takes a *.bin path as one. A vocabulary it accepts
// must encode any text (byte fallback may refuse a byte its vocabulary lacks, with an Error)
// and decode every id it has.
#include "fuzz_util.h"
#include "io/llama2c.h"
#include "io/tokenizer.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      fuzz::write_scratch_file("tokenizer.bin", {reinterpret_cast<const char*>(data), size});
  (void)is_llama2c_tokenizer(path);
  fuzz::expect_only_chainlm_errors([&] {
    const auto tok = load_tokenizer(path);
    const int n = tok->vocab_size();
    CHAINLM_FUZZ_ASSERT(n >= 3);
    for (const char* text : {"Once upon a time", "  two  spaces\n", "h\xc3\xa9llo \xe2\x96\x81 \xff\xfe"}) {
      fuzz::expect_only_chainlm_errors([&] {
        const std::vector<int> ids = tok->encode(text);
        for (int id : ids) CHAINLM_FUZZ_ASSERT(id >= 0 && id < n);
        (void)tok->decode(ids);
      });
    }
    int prev = tok->bos_id();
    for (int id = 0; id < n; ++id) {
      (void)tok->decode_token(prev, id);
      prev = id;
    }
  });
  return 0;
}
