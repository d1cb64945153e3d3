// llama2.c legacy checkpoints (model.bin): load_model takes any *.bin file as one, reads it
// with read_llama2c (header checked against the file size before allocating) and imports it
// as a chainlm Model. is_llama2c_checkpoint must never throw.
#include "fuzz_util.h"
#include "io/llama2c.h"
#include "model/checkpoint.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      fuzz::write_scratch_file("model.bin", {reinterpret_cast<const char*>(data), size});
  const bool looks_valid = is_llama2c_checkpoint(path);
  bool loaded = false;
  fuzz::expect_only_chainlm_errors([&] {
    const auto model = load_model(path);
    loaded = true;
    CHAINLM_FUZZ_ASSERT(model->config().n_chains() == 1);
  });
  // The cheap check and the loader agree, except on headers the model config refuses.
  if (loaded) CHAINLM_FUZZ_ASSERT(looks_valid);
  return 0;
}
