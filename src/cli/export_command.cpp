// chainlm export: a model (or its 1-chain sub-model) in the standard Hugging Face LLaMA
// layout, config.json + model.safetensors, which transformers and other tools load as is, or as
// a GGUF file for llama.cpp (model/gguf_convert.h).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cli/logit_difference.h"
#include "cli/model_info.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/hf_llama.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/gguf_convert.h"
#include "model/hf_llama_convert.h"

namespace chainlm::cli {

namespace fs = std::filesystem;
namespace {

// The tokenizer to put beside the weights, from --tokenizer (a file or a directory holding one)
// or from the source model's directory: a SentencePiece model (both formats carry it) or a
// Hugging Face tokenizer.json (a HF directory carries it; GGUF export refuses it). Empty when
// there is none, with what the source carries instead in *missing_reason.
std::string tokenizer_to_export(const std::string& model_arg, const std::string& tokenizer_arg, int vocab_size,
                                const std::string& format, std::string* missing_reason) {
  std::error_code ec;
  const char* formats = format == "gguf" ? "a GGUF file" : "a Hugging Face LLaMA directory";
  auto check_kind = [&](const Tokenizer& tok, const std::string& what) {
    CHAINLM_CHECK(
        tok.kind() == "sentencepiece" || (tok.kind() == "hf" && format == "hf"), "export: ", what,
        " is ",
        tok.kind() == "byte" ? "the byte tokenizer"
        : tok.kind() == "hf" ? "a Hugging Face tokenizer.json"
                             : "a " + tok.kind() + " tokenizer",
        ", which ", formats, " written by chainlm cannot carry",
        tok.kind() == "hf"
            ? " (chainlm writes llama.cpp's SentencePiece vocabulary only; export --format hf "
              "keeps the tokenizer.json, and llama.cpp's convert_hf_to_gguf.py converts that)"
            : "",
        tok.kind() == "llama2c" ? "; a llama2.c tokenizer.bin is made from a SentencePiece .model "
                                  "(stories260K's tok512.bin "
                                  "from tok512.model): pass that as --tokenizer, or --no-tokenizer "
                                  "to export the weights alone"
                                : "; pass --no-tokenizer to export the weights alone");
  };
  if (!tokenizer_arg.empty()) {
    const std::string spec = fs::is_directory(tokenizer_arg, ec) ? find_tokenizer_in_dir(tokenizer_arg)
                                                                 : tokenizer_arg;
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(spec);
    check_kind(*tok, "--tokenizer " + tokenizer_arg);
    // No more tokens than the model's rows (fewer: a padded vocabulary), and as many as the
    // tokenizer the model carries, warning when it is another file (as eval and generate do).
    check_tokenizer_for_model(model_arg, tokenizer_arg, *tok, vocab_size);
    return spec;
  }
  if (fs::is_regular_file(model_arg, ec) && is_gguf_file(model_arg)) {
    const std::string carried = carried_tokenizer(model_arg);
    if (carried.empty()) *missing_reason = model_arg + " is a GGUF file that carries no SentencePiece model";
    return carried;
  }
  if (!fs::is_directory(model_arg, ec)) {
    *missing_reason = model_arg + " is a llama2.c checkpoint, which carries no tokenizer";
    return "";
  }
  const fs::path dir = resolve_checkpoint_dir(model_arg);
  std::string carried;
  try {
    carried = find_tokenizer_in_dir(dir.string());
  } catch (const Error&) {
    *missing_reason = model_arg + " holds no tokenizer";
    return "";
  }
  if (carried == "byte") {
    *missing_reason = model_arg + " uses the byte tokenizer, which neither a Hugging Face LLaMA directory nor a GGUF "
                                  "file can carry";
    return "";
  }
  check_kind(*load_tokenizer(carried), model_arg + "'s tokenizer");
  return carried;
}

// Logits of sub-model k of `model` on a fixed probe sequence.
std::vector<float> probe_logits(Model& model, int k) {
  const int T = std::min(32, model.config().max_seq_len), V = model.config().vocab_size;
  std::vector<int> probe(T);
  Rng rng(5);
  for (int& t : probe) t = (int)rng.below(V);
  std::vector<float> out((size_t)T * V);
  model.logits(probe.data(), 1, T, k, out.data());
  return out;
}

// The probe's logits of a model about to be exported, refused when they are not finite (a copy
// differing from them by inf read as "a bug").
std::vector<float> finite_probe_logits(Model& model, int k, const std::string& path) {
  std::vector<float> logits = probe_logits(model, k);
  CHAINLM_CHECK(all_finite(logits.data(), logits.size()), "export: ", path, kNonFiniteLogits);
  return logits;
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  return max_abs_difference(a.data(), b.data(), a.size());
}

struct ExportArgs {
  std::string model, format, out, tokenizer, type, dtype, max_shard_size;
  int chains = 0, threads = 0;
  bool no_tokenizer = false;
};

void export_gguf_file(const ExportArgs& a, Model& model, int k, const std::string& spm) {
  GgufExportOptions o{.chains = k,
                      .type = a.type,
                      .tokenizer = spm,
                      .name = fs::path(a.model).lexically_normal().stem().string(),
                      .chat_template = carried_chat_template(a.model).jinja};
  if (o.name.empty()) o.name = fs::path(a.model).lexically_normal().parent_path().filename().string();
  check_gguf_exportable(model, o);
  const std::vector<float> original = finite_probe_logits(model, k, a.model);
  // Written beside --out, read back and checked, then renamed: --out appears complete or not at all.
  const std::string tmp = a.out + ".tmp-" + std::to_string(::getpid());
  remove_stale_temporaries(fs::absolute(a.out).parent_path().string(),
                           fs::path(a.out).filename().string() + ".tmp-");
  GgufExportSummary summary;
  std::unique_ptr<Model> back;
  double diff = 0;
  try {
    try {
      summary = export_gguf(model, o, tmp);
    } catch (const Error& e) {  // the path it failed on is the temporary: --out is named first
      fail("export: ", a.out, " not written: ", e.what(), " (nothing was written)");
    }
    back = load_model(tmp);
    diff = max_difference(original, probe_logits(*back, 1));
    // An fp32 model's f32 file and a quantized model's copied blocks compute what the model
    // computes: the logits must agree. f16 and fresh quantization round the weights. F32/F16
    // matrices from a quantized model (--type f32 or f16, or rows that are not whole blocks)
    // hold its dequantized weights but multiply fp32 activations, which the quantized model's
    // products round to q8_0 (docs/quantization.md, Kernels): the difference is reported, not
    // checked here (tests/model/gguf_convert_test.cpp checks the F32 values are the blocks').
    const bool exact = model.quantized()
                           ? summary.file_type != "f32" && summary.file_type != "f16" &&
                                 summary.fallback_tensors == 0
                           : summary.file_type == "f32";
    CHAINLM_CHECK(!exact || diff <= 1e-4, "export: the GGUF model's logits differ by ", diff,
                  " from the original's (a bug: nothing was written)");
    CHAINLM_CHECK(std::isfinite(diff), "export: the GGUF model's logits are not finite (nothing was written)");
    rename_no_replace(tmp, a.out, "export");
    fsync_directory(fs::absolute(a.out).parent_path().string());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::printf("exported  %s%s: %s\n", a.model.c_str(),
              model.config().n_chains() > 1 ? cat(" (sub-model of ", k, " chain)").c_str() : "",
              describe_model(*back).c_str());
  int matrices = 0;
  for (const ParamInfo& p : back->params().infos()) matrices += p.shape.size() == 2;
  const char* fallback_type = model.quantized() ? "F32" : "F16";
  if (summary.fallback_tensors > 0 && summary.fallback_tensors >= matrices)
    // "weights q8_0; 16 matrices in F32" read as a quantized file when no matrix was (a trial).
    std::printf(
        "weights   %s in every matrix, none %s: their rows are not whole 32-weight blocks, "
        "which GGUF's %s needs (the file's general.file_type still says %s)\n",
        fallback_type, summary.file_type.c_str(), summary.file_type.c_str(),
        summary.file_type.c_str());
  else
    std::printf(
        "weights   %s%s%s%s\n", summary.file_type.c_str(),
        summary.copied_blocks ? " (the model's blocks, copied)" : "",
        (summary.fallback_tensors
             ? cat("; ", summary.fallback_tensors, " of the ", matrices, " matrices in ",
                   fallback_type, " (rows not whole 32-blocks)")
             : std::string())
            .c_str(),
        summary.fp32_tensors
            ? cat("; ", summary.fp32_tensors, " in F32 as the model holds them (",
                  summary.fp32_tensors == 1 ? "its embedding or head" : "its embedding and head",
                  ")")
                  .c_str()
            : "");
  std::printf("check     max |logit difference| after reading it back: %.3g\n", diff);
  std::printf("wrote     %s (%s, %s)\n", a.out.c_str(),
              format_bytes((double)fs::file_size(a.out)).c_str(),
              spm.empty() ? "no tokenizer (--no-tokenizer)" : "SentencePiece tokenizer inside");
}

// The options of an HF export from the command line; the token ids are the source's when it is
// a Hugging Face directory itself, so an import-export round trip keeps them (lists included).
// config.json's bos/eos ids: a HF source directory's own, else the exported tokenizer's (a
// list when it ends texts with several tokens, as LLaMA-3 instruct models do), else (with
// --no-tokenizer) the one the model carries: a byte-tokenizer model's are 256 and 257, and the
// defaults 1 and 2 were control bytes to it (a docs trial). 1 and 2 only when there is none.
HfExportOptions hf_export_options(const ExportArgs& a, int k,
                                  const std::string& exported_tokenizer) {
  const std::string tokenizer =
      !exported_tokenizer.empty() ? exported_tokenizer : carried_tokenizer(a.model);
  HfExportOptions o{.chains = k, .dtype = a.dtype.empty() ? "f32" : a.dtype};
  if (!a.max_shard_size.empty()) o.max_shard_bytes = parse_max_shard_size(a.max_shard_size, "--max-shard-size");
  std::error_code ec;
  if (fs::is_directory(a.model, ec) && is_hf_model_dir(a.model)) {
    const HfLlamaConfig source = read_hf_llama_config(a.model);
    o.bos_token_id = source.bos_token_id;
    o.eos_token_id = source.eos_token_id;
  } else if (!tokenizer.empty()) {
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(tokenizer);
    const std::vector<int> eos = tok->eos_ids();
    o.bos_token_id = {{tok->bos_id()}, false};
    o.eos_token_id = {eos, eos.size() > 1};
  }
  return o;
}

void export_hf_directory(const ExportArgs& a, Model& model, int k, const std::string& tokenizer) {
  const HfExportOptions o = hf_export_options(a, k, tokenizer);
  const bool rounded = o.dtype != "f32";
  const std::vector<float> original = finite_probe_logits(model, k, a.model);
  std::unique_ptr<Model> back;
  HfExportSummary summary;
  double diff = 0;
  std::string tokenizer_note = "no tokenizer (--no-tokenizer)";
  write_directory_atomic(a.out, [&](const std::string& tmp) {
    summary = export_hf_llama(model, o, tmp);
    // The tokenizer goes along as HF LLaMA directories keep it: tokenizer.model, or tokenizer.json
    // with tokenizer_config.json and generation_config.json.
    if (!tokenizer.empty() && load_tokenizer(tokenizer)->kind() == "hf") {
      save_tokenizer_to_dir(tokenizer, tmp);
      tokenizer_note = "tokenizer.json, tokenizer_config.json, generation_config.json (Hugging Face tokenizer)";
    } else if (!tokenizer.empty()) {
      write_file_atomic((fs::path(tmp) / "tokenizer.model").string(), sentencepiece_model_bytes(tokenizer));
      copy_sentencepiece_companions(tokenizer, tmp);  // the chat template, BOS/EOS files beside it
      tokenizer_note = "tokenizer.model (SentencePiece)";
    }
    // Read it back the way every chainlm command will, and compare logits on a probe: with the
    // model's own weights for f32; for bf16/f16 with the model's weights rounded the same way
    // (in place: the model is not used after the export), so the file must hold exactly those.
    back = load_model(tmp);
    if (rounded) {
      float* w = model.params().values();
      for (size_t i = 0; i < model.params().size(); ++i) w[i] = round_to_hf_dtype(w[i], o.dtype);
    }
    diff = max_difference(rounded ? probe_logits(model, k) : original, probe_logits(*back, 1));
    CHAINLM_CHECK(std::isfinite(diff) && diff <= 1e-4, "export: the exported model's logits differ by ", diff,
                  " from the original's", rounded ? " with its weights rounded to " + o.dtype : "",
                  " (a bug: nothing was written)");
  }, "export");
  std::printf("exported  %s%s: %s\n", a.model.c_str(),
              model.config().n_chains() > 1 ? cat(" (sub-model of ", k, " chain)").c_str() : "",
              describe_model(*back).c_str());
  if (rounded)
    std::printf("check     max |logit difference| after reading it back: %.3g against the weights rounded to "
                "%s, %.3g against the original\n", diff, o.dtype.c_str(), max_difference(original, probe_logits(*back, 1)));
  else
    std::printf("check     max |logit difference| after reading it back: %.3g\n", diff);
  const std::string weights = summary.files.size() == 1
                                  ? summary.files[0]
                                  : cat(summary.files.size() - 1, " shards (", summary.files.front(), " ...) and ",
                                        summary.files.back());
  std::printf("wrote     %s: config.json (torch_dtype %s), %s (%s), %s\n", a.out.c_str(),
              hf_torch_dtype(o.dtype).c_str(), weights.c_str(), format_bytes((double)summary.total_bytes).c_str(),
              tokenizer_note.c_str());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a model as a Hugging Face LLaMA directory or a GGUF file");
  auto a = std::make_shared<ExportArgs>();
  cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, HF directory or GGUF")->required();
  cmd->add_option(
      "--chains", a->chains,
      "Export the sub-model of the first k chains (default: all; a GGUF holds a LLaMA: k = 1, or "
      "a model of one chain)");
  cmd->add_option("--format", a->format, "Output format: hf (Hugging Face LLaMA directory) or gguf (llama.cpp)")
      ->required()
      ->check(CLI::IsMember({"hf", "gguf"}));
  cmd->add_option("--type", a->type,
                  "gguf: weight type f32, f16, q8_0 or q4_0 (default: the model's own, f32 for fp32 models)")
      ->check(CLI::IsMember({"f32", "f16", "q8_0", "q4_0"}));
  cmd->add_option("--dtype", a->dtype,
                  "hf: dtype of the safetensors weights, f32, bf16 or f16 (rounded to nearest even; default f32)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--max-shard-size", a->max_shard_size,
                  "hf: largest weight file, as transformers' max_shard_size: bytes or e.g. 5GB, 500MB (powers "
                  "of 1000), 2GiB (powers of 1024); larger weights are split into model-0000N-of-0000M.safetensors "
                  "with model.safetensors.index.json (default 5GB)");
  cmd->add_option("--out", a->out, "Output directory (hf) or file (gguf); must not exist")->required();
  auto* tok = cmd->add_option("--tokenizer", a->tokenizer,
                              "SentencePiece .model or (hf) Hugging Face tokenizer.json, or a directory holding "
                              "one, to include; needed when --model carries none (a llama2.c .bin)");
  cmd->add_flag("--no-tokenizer", a->no_tokenizer,
                "Export the weights alone when there is no tokenizer the format can carry")
      ->excludes(tok);
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
  cmd->callback([a, cmd]() {
    apply_threads_option(a->threads);
    // A GGUF is one file: "DIR/" or an existing directory names no file (said first: "DIR/
    // already exists" hid what was wrong).
    std::error_code ec;
    if (a->format == "gguf") {
      const bool slash = !a->out.empty() && a->out.back() == '/';
      CHAINLM_CHECK(!slash && !fs::is_directory(a->out, ec), "export: --out ", a->out,
                    slash ? " names a directory" : " is a directory",
                    "; a GGUF export writes one file: name it, e.g. ",
                    (fs::path(a->out) / "model.gguf").lexically_normal().string());
    }
    // (fs::exists(a->out) follows a symbolic link: a dangling one was "there" only at the end.)
    CHAINLM_CHECK(!fs::exists(fs::symlink_status(a->out)), a->out,
                  " already exists; choose another --out (nothing was overwritten)");
    // A missing parent directory of a GGUF is made (as for hf), not found missing only when the
    // temporary file beside --out is written; removed again when the export then fails (a bad
    // --model left it behind).
    std::optional<OutputParentDirs> gguf_dirs;
    if (a->format == "gguf") gguf_dirs.emplace(fs::absolute(a->out).string(), "export");
    CHAINLM_CHECK(a->type.empty() || a->format == "gguf", "export: --type applies to --format gguf only (a "
                  "Hugging Face directory's dtype is --dtype f32, bf16 or f16)");
    CHAINLM_CHECK(a->format == "hf" || (a->dtype.empty() && a->max_shard_size.empty()),
                  "export: ", !a->dtype.empty() ? "--dtype" : "--max-shard-size",
                  " applies to --format hf only (a GGUF file's weight type is --type)");
    // A bad size is refused before the model is read.
    if (!a->max_shard_size.empty()) parse_max_shard_size(a->max_shard_size, "--max-shard-size");
    std::unique_ptr<Model> model = load_model(a->model);
    const int n = model->config().n_chains();
    const int k = cmd->count("--chains") ? a->chains : n;
    // Refuse what the format cannot express before anything is written.
    if (a->format == "gguf")
      check_gguf_exportable(
          *model, {.chains = k, .type = a->type, .tokenizer = "", .name = "", .chat_template = ""});
    else
      check_hf_exportable(*model, k);
    // Without a tokenizer the output holds weights no tool can feed text to: refuse unless
    // the user says that is what they want.
    std::string missing;
    const std::string tokenizer =
        a->no_tokenizer ? "" : tokenizer_to_export(a->model, a->tokenizer, model->config().vocab_size, a->format, &missing);
    // A byte-tokenizer model has no tokenizer either format can carry: --tokenizer cannot help.
    const bool byte_model =
        tokenizer.empty() && !a->no_tokenizer && carried_tokenizer(a->model) == "byte";
    CHAINLM_CHECK(!tokenizer.empty() || a->no_tokenizer, "export: ", missing, ", so the ",
                  a->format == "gguf" ? "GGUF file" : "Hugging Face directory",
                  " would have none and could not be used on text; ",
                  byte_model ? "pass --no-tokenizer to export the weights alone"
                             : "pass --tokenizer with the tokenizer the model was trained with, or "
                               "--no-tokenizer to "
                               "export the weights alone",
                  " (nothing was written)");
    if (a->format == "gguf") {
      export_gguf_file(*a, *model, k, tokenizer);
      gguf_dirs->keep();
      return;
    }
    export_hf_directory(*a, *model, k, tokenizer);
  });
}

}  // namespace chainlm::cli
