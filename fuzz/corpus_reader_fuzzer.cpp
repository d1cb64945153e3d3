// Corpus inputs of `prepare` / `tokenizer train` (io/corpus_reader.h): any bytes, read as a
// plain or compressed text or JSONL file under each UTF-8 policy. The reader either refuses the
// file with a chainlm::Error or returns documents that are never empty and, where the policy
// promises it, valid UTF-8; the UTF-8 replacer always yields valid UTF-8 and leaves valid text
// unchanged.
#include <string>

#include "fuzz_util.h"
#include "io/corpus_reader.h"
#include "io/text_encoding.h"

using namespace chainlm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string replaced = replace_invalid_utf8(bytes);
  CHAINLM_FUZZ_ASSERT(check_utf8(replaced).ok());
  CHAINLM_FUZZ_ASSERT(check_utf8(bytes).ok() == (replaced == bytes));
  (void)detect_text_encoding(bytes);

  const std::string text_path = fuzz::write_scratch_file("corpus.txt", bytes);
  const std::string jsonl_path = fuzz::write_scratch_file("corpus.jsonl", bytes);
  for (const std::string& path : {text_path, jsonl_path}) {
    for (InvalidUtf8Policy policy :
         {InvalidUtf8Policy::kWarn, InvalidUtf8Policy::kError, InvalidUtf8Policy::kSkip}) {
      fuzz::expect_only_chainlm_errors([&] {
        CorpusOptions o;
        o.inputs = {path};
        o.invalid_utf8 = policy;
        o.split = size % 2 ? DocumentSplit::kLines : DocumentSplit::kBlankLines;
        const Corpus c = read_corpus(o);
        CHAINLM_FUZZ_ASSERT(c.files.size() == 1);
        const bool valid_promised = policy != InvalidUtf8Policy::kWarn || c.files[0].jsonl;
        for (const std::string& doc : c.documents) {
          CHAINLM_FUZZ_ASSERT(!doc.empty());
          if (valid_promised) CHAINLM_FUZZ_ASSERT(check_utf8(doc).ok());
        }
      });
    }
  }
  return 0;
}
