#include "cli/model_loading.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_document.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "model/checkpoint.h"

namespace chainlm::cli {

LoadedModel load_model_and_tokenizer(const std::string& model_arg, const std::string& tokenizer_arg,
                                     bool need_tokenizer, Precision precision, bool fp32_panels) {
  LoadedModel r;
  std::string spec = tokenizer_arg;
  std::error_code ec;
  if (std::filesystem::is_regular_file(model_arg, ec)) {
    r.model = load_model(model_arg);
    // A chainlm GGUF carries its SentencePiece model (load_tokenizer reads it from the file).
    if (spec.empty() && need_tokenizer && is_gguf_file(model_arg)) spec = model_arg;
    CHAINLM_CHECK(!need_tokenizer || !spec.empty(), model_arg,
                  ": a model file carries no tokenizer; pass --tokenizer (e.g. the llama2.c "
                  "tokenizer.bin or SentencePiece .model the model was trained with)");
  } else {
    // A trainer writing into a run prunes its older checkpoints: the one `latest` named may go
    // while it is read (2 of 100 generates beside a run saving every step failed, one "no
    // tokenizer: pass --tokenizer"). Read again from the checkpoint `latest` names now.
    for (int attempt = 1;; ++attempt) {
      const std::string dir = resolve_checkpoint_dir(model_arg);
      try {
        r.model = load_model(dir);
        // A Hugging Face directory carries tokenizer.model (SentencePiece) or tokenizer.json.
        if (spec.empty() && need_tokenizer) {
          const std::string found = find_tokenizer_in_dir(dir);
          r.tokenizer = load_tokenizer(found);
          spec = found;
        }
        break;
      } catch (const Error&) {
        std::error_code e;
        if (attempt >= 5 || dir == model_arg || std::filesystem::exists(dir, e)) throw;
      }
    }
  }
  if (!spec.empty() && !r.tokenizer) r.tokenizer = load_tokenizer(spec);
  // The tokenizer a directory carries and its weights: "the tokenizer has 956 tokens but the
  // model's vocab_size is 800" named neither file.
  if (tokenizer_arg.empty() && r.tokenizer)
    CHAINLM_CHECK(r.tokenizer->vocab_size() <= r.model->config().vocab_size, spec, " has ",
                  r.tokenizer->vocab_size(), " tokens but the model in ", model_arg,
                  " has a vocab_size of ", r.model->config().vocab_size,
                  ": that tokenizer and those weights do not belong together; put the model's "
                  "own tokenizer beside it, or pass it with --tokenizer");
  if (!tokenizer_arg.empty() && r.tokenizer)
    check_tokenizer_for_model(model_arg, tokenizer_arg, *r.tokenizer, r.model->config().vocab_size);
  if (precision == Precision::Bf16) r.model->use_bf16_weights(/*keep_fp32=*/false);
  else if (fp32_panels)
    r.model->use_fp32_panels();
  return r;
}

void check_tokenizer_for_model(const std::string& model_arg, const std::string& tokenizer_arg,
                               const Tokenizer& tokenizer, int model_vocab) {
  CHAINLM_CHECK(tokenizer.vocab_size() <= model_vocab, "--tokenizer ", tokenizer_arg, " has ",
                tokenizer.vocab_size(), " tokens but the model's vocab_size is ", model_vocab,
                ": it is not the tokenizer this model was trained with");
  const std::string carried = carried_tokenizer(model_arg);
  // A model that carries none (a llama2.c .bin) cannot say which is its own; a tokenizer far
  // smaller than its rows (the byte tokenizer's 258 for stories260K's 512) generated garbage
  // silently, and expand stored it. Padding rounds a vocabulary up by a few dozen rows.
  const int missing = model_vocab - tokenizer.vocab_size();
  if (carried.empty() && missing >= 64 && tokenizer.vocab_size() < 0.9 * model_vocab)
    std::fprintf(stderr,
                 "warning: --tokenizer %s has %d tokens but %s has %d rows: %d of them would be "
                 "padding no token has; is it the tokenizer the model was trained with?\n",
                 tokenizer_arg.c_str(), tokenizer.vocab_size(), model_arg.c_str(), model_vocab,
                 missing);
  if (carried.empty() || tokenizer_fingerprint(tokenizer_arg) == tokenizer_fingerprint(carried))
    return;
  const int carried_vocab = load_tokenizer(carried)->vocab_size();
  CHAINLM_CHECK(
      carried_vocab == tokenizer.vocab_size(), "--tokenizer ", tokenizer_arg, " has ",
      tokenizer.vocab_size(), " tokens, but the tokenizer ", model_arg, " carries (", carried,
      ") has ", carried_vocab,
      ": it is not the tokenizer this model was trained with; leave out --tokenizer to use "
      "the model's own");
  std::fprintf(
      stderr,
      "warning: --tokenizer %s is another file than the tokenizer %s carries (%s), with as many "
      "tokens; using --tokenizer\n",
      tokenizer_arg.c_str(), model_arg.c_str(), carried.c_str());
}

std::string carried_tokenizer(const std::string& model_arg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(model_arg, ec) && is_gguf_file(model_arg)) {
    try {
      sentencepiece_model_bytes(model_arg);
      return model_arg;
    } catch (const Error&) {
      return "";
    }
  }
  if (!fs::is_directory(model_arg, ec)) return "";
  const std::string dir = resolve_checkpoint_dir(model_arg);
  try {
    return find_tokenizer_in_dir(dir);
  } catch (const Error&) {
    return "";
  }
}

CarriedChatTemplate carried_chat_template(const std::string& model_arg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(model_arg, ec) &&
      is_gguf_file(model_arg)) {  // llama.cpp's converter writes it here
    const GgufReader gguf(model_arg);
    if (gguf.has("tokenizer.chat_template"))
      return {gguf.get_string("tokenizer.chat_template"), model_arg};
    return {};
  }
  if (!fs::is_directory(model_arg, ec)) return {};
  const fs::path dir = resolve_checkpoint_dir(model_arg);
  const fs::path config = dir / "tokenizer_config.json";
  if (fs::is_regular_file(config, ec)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(config.string()));
    } catch (const nlohmann::json::exception& e) {
      fail(config.string(), " is not valid JSON (", json_error_reason(e), ")");
    }
    const nlohmann::json t =
        j.is_object() ? j.value("chat_template", nlohmann::json()) : nlohmann::json();
    if (t.is_string()) return {t.get<std::string>(), config.string()};
    if (t.is_array())  // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
      for (const auto& named : t)
        if (named.is_object() && named.value("name", "") == "default" &&
            named.contains("template") && named["template"].is_string())
          return {named["template"].get<std::string>(), config.string()};
    // Anything else is a broken file, not "no template" (the model was served as plain).
    CHAINLM_CHECK(t.is_null() || t.is_array(), config.string(), ": \"chat_template\" is a ",
                  t.type_name(), ", not a Jinja string or a list of {\"name\", \"template\"}");
  }
  // Recent transformers save the template in a file of its own beside tokenizer_config.json.
  const fs::path own_file = dir / "chat_template.jinja";
  if (fs::is_regular_file(own_file, ec)) return {read_file(own_file.string()), own_file.string()};
  return {};
}

}  // namespace chainlm::cli
