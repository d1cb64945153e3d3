#pragma once
// The token stream a perplexity evaluation reads, and the bytes of text it stands for (the
// denominator of bits per byte).
#include <string>
#include <vector>

#include "io/corpus_reader.h"
#include "io/tokenizer.h"

namespace chainlm {

struct EvalTokens {
  std::vector<int> tokens;  // BOS + document tokens, document after document
  long bytes = -1;          // UTF-8 bytes of the documents' text; -1 = unknown (no tokenizer)
  long documents = -1;      // -1 when unknown
  std::string kind;         // "text" or "shard"
  std::string path;         // the file read
};

// path is one of
//   a token shard (chainlm prepare's train.bin / val.bin): its tokens as they are; with a
//     tokenizer, the bytes are those of the text it decodes to, document by document (a
//     document starts at each BOS), else unknown;
//   a data directory: its val.bin, as above;
//   a text or JSON Lines file, plain or compressed: read and split into documents as
//     `chainlm prepare` reads an --input with its default options (io/corpus_reader.h: blank or
//     '%' lines; a .jsonl's "text" fields), each tokenized with BOS in front; the bytes are the
//     documents' own (separators excluded, since no token stands for them). Needs the tokenizer.
// A text file is read with `text_options` (format, JSONL text field, document split, invalid
// UTF-8: what prepare was given; its inputs are ignored), a shard as it is.
EvalTokens load_eval_tokens(const std::string& path, const Tokenizer* tokenizer,
                            const CorpusOptions& text_options = CorpusOptions());

}  // namespace chainlm
