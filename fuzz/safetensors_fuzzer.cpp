// safetensors files (model.safetensors, optimizer.safetensors, HF weights): the reader
// validates the whole header on construction; every tensor it accepts must then read as float
// (F32, F16, BF16) or be refused by dtype.
#include "fuzz_util.h"
#include "io/safetensors.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      fuzz::write_scratch_file("model.safetensors", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_only_chainlm_errors([&] {
    SafetensorsReader reader(path);
    for (const auto& e : reader.entries()) {
      CHAINLM_FUZZ_ASSERT(reader.has(e.name));
      CHAINLM_FUZZ_ASSERT(e.begin <= e.end && e.end <= size);
      fuzz::expect_only_chainlm_errors([&] {
        const Tensor t = reader.read_f32(e.name);
        CHAINLM_FUZZ_ASSERT(t.shape == e.shape);
      });
    }
  });
  return 0;
}
