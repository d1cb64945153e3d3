// Hugging Face LLaMA directories, loaded by load_model. Parts of the input (fuzz_util.h):
//   [config.json, model.safetensors]                                   a single-file model
//   [config.json, model.safetensors.index.json, shard 1, shard 2, ...] sharded weights, shard i
//                                                                      written as
//                                                                      model-0000i-of-0000n.safetensors
#include <cstdio>

#include "fuzz_util.h"
#include "model/checkpoint.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_parts(data, size);
  const std::string dir = fuzz::fresh_scratch_subdir("hf");
  fuzz::write_scratch_file("hf/config.json", parts[0]);
  if (parts.size() == 2) fuzz::write_scratch_file("hf/model.safetensors", parts[1]);
  if (parts.size() >= 3) {
    fuzz::write_scratch_file("hf/model.safetensors.index.json", parts[1]);
    const size_t shards = parts.size() - 2;
    for (size_t i = 0; i < shards; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "hf/model-%05zu-of-%05zu.safetensors", i + 1, shards);
      fuzz::write_scratch_file(name, parts[2 + i]);
    }
  }
  fuzz::expect_only_chainlm_errors([&] {
    const auto model = load_model(dir);
    CHAINLM_FUZZ_ASSERT(model->config().n_chains() == 1);
  });
  return 0;
}
