// GGUF files (export --format gguf, and files from llama.cpp users): GgufReader validates the
// whole header on construction; every tensor it accepts must lie inside the file; load_model
// then builds a LLaMA from it (metadata, names, shapes, F32/F16/BF16/Q8_0/Q4_0 data) or refuses
// it, and load_tokenizer reads the SentencePiece model a chainlm GGUF carries or refuses.
#include "fuzz_util.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch_file("model.gguf", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_only_chainlm_errors([&] {
    GgufReader reader(path);
    for (const GgufTensorInfo& t : reader.tensors()) {
      CHAINLM_FUZZ_ASSERT(reader.find(t.name) == &t);
      CHAINLM_FUZZ_ASSERT(t.offset + t.bytes <= size);
    }
    for (const std::string& key : reader.keys()) (void)reader.value(key).describe();
  });
  fuzz::expect_only_chainlm_errors([&] {
    const auto model = load_model(path);
    CHAINLM_FUZZ_ASSERT(model->params().size() > 0);
  });
  fuzz::expect_only_chainlm_errors([&] {
    const auto tok = load_tokenizer(path);
    CHAINLM_FUZZ_ASSERT(tok->vocab_size() > 0);
  });
  return 0;
}
