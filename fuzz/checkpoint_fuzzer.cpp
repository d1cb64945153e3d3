// chainlm checkpoints, loaded by load_model (and the tokenizer a checkpoint carries). Parts of
// the input (fuzz_util.h):
//   [config.json, model.safetensors]                  a checkpoint directory
//   [..., chainlm_tokenizer.json]                     plus its tokenizer descriptor
//   [..., chainlm_tokenizer.json, latest]             the checkpoint as run/step-00000001
//                                                     inside a run directory whose `latest`
//                                                     file is the fourth part
#include "fuzz_util.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_parts(data, size);
  const std::string run = fuzz::fresh_scratch_subdir("run");
  const bool in_run = parts.size() >= 4;
  const std::string rel = in_run ? "run/step-00000001/" : "run/";
  if (in_run) {
    fuzz::fresh_scratch_subdir("run/step-00000001");
    fuzz::write_scratch_file("run/latest", parts[3]);
  }
  fuzz::write_scratch_file(rel + "config.json", parts[0]);
  if (parts.size() >= 2) fuzz::write_scratch_file(rel + "model.safetensors", parts[1]);
  if (parts.size() >= 3) fuzz::write_scratch_file(rel + "chainlm_tokenizer.json", parts[2]);
  fuzz::expect_only_chainlm_errors([&] {
    const auto model = load_model(run);
    CHAINLM_FUZZ_ASSERT(model->params().size() > 0);
  });
  if (parts.size() >= 3) fuzz::expect_only_chainlm_errors([&] {
      const auto tok = load_tokenizer(resolve_checkpoint_dir(run));
      CHAINLM_FUZZ_ASSERT(tok->kind() == "byte");
    });
  return 0;
}
