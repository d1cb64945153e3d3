// The model config (config.json of a checkpoint, configs/*.json): load_config parses and
// validates it (SPEC A1 rules). A config it accepts must survive config_to_json and back.
#include "fuzz_util.h"
#include "model/config.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      fuzz::write_scratch_file("config.json", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_only_chainlm_errors([&] {
    const ModelConfig c = load_config(path);
    const ModelConfig again = config_from_json(config_to_json(c), "round trip");
    CHAINLM_FUZZ_ASSERT(config_to_json(again) == config_to_json(c));
  });
  return 0;
}
