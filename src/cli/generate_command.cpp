// chainlm generate: continue a prompt with sub-model k of a checkpoint.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/threads.h"
#include "infer/generator.h"
#include "infer/session.h"
#include "model/memory_estimate.h"

namespace chainlm::cli {

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a checkpoint");
  struct Args {
    std::string model, tokenizer, prompt, schedule, precision = "fp32", kv_cache = "auto";
    GenerateOptions gen;
    int threads = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  a->gen.sampling.temperature = 0.8f;
  cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, HF directory or GGUF file")
      ->required();
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer (default: the one in the checkpoint)");
  cmd->add_option("--prompt", a->prompt, "Prompt text")->capture_default_str();
  cmd->add_option("--max-tokens", a->gen.max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->gen.sampling.temperature, "0 = greedy")
      ->check(in_float_range())
      ->capture_default_str();
  cmd->add_option("--top-k", a->gen.sampling.top_k, "Sample from the k most likely; 0 = off");
  cmd->add_option("--top-p", a->gen.sampling.top_p, "Nucleus sampling mass; 1 = off")
      ->check(in_float_range());
  cmd->add_option("--seed", a->gen.sampling.seed, "Sampling seed")
      ->check(seed_value())
      ->capture_default_str();
  cmd->add_option("--chains", a->gen.chains, "Active chains k (sub-model); default: all");
  cmd->add_option("--chain-schedule", a->schedule,
                  "Chains per generated token, e.g. \"1:16,4\" = 1 chain for 16 tokens, then 4");
  cmd->add_flag("--full-prefill", [a](int64_t) { a->gen.chain1_prefill = false; },
                "CoLM-Air: prefill with the active chains instead of chain 1 alone");
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
  cmd->add_flag(
      "--fixed-threads", [a](int64_t) { a->gen.adaptive_threads = false; },
      "Decode on --threads threads always (default: on fewer while another process keeps "
      "a core busy and that measures faster)");
  add_precision_option(cmd, a->precision, kInferencePrecisionHelp);
  add_kv_cache_option(cmd, a->kv_cache);
  cmd->add_flag("--json", a->json, "Print one JSON object instead of the text");
  cmd->callback([a, cmd]() {
    apply_threads_option(a->threads);
    CHAINLM_CHECK(!cmd->count("--chains") || a->gen.chains >= 1, "--chains must be >= 1 (got ",
                  a->gen.chains, ")");
    // Named by their flags, before the model is read (the library's checks name its fields:
    // "top_p must be in (0, 1]", "max tokens must be >= 0").
    const SamplingOptions& s = a->gen.sampling;
    CHAINLM_CHECK(a->gen.max_tokens >= 0, "--max-tokens must be >= 0 (got ", a->gen.max_tokens,
                  ")");
    CHAINLM_CHECK(std::isfinite(s.temperature) && s.temperature >= 0,
                  "--temperature must be finite and >= 0 (got ", s.temperature, ")");
    CHAINLM_CHECK(s.top_k >= 0, "--top-k must be >= 0 (got ", s.top_k, ")");
    CHAINLM_CHECK(s.top_p > 0 && s.top_p <= 1, "--top-p must be in (0, 1] (got ", s.top_p, ")");
    LoadedModel loaded =
        load_model_and_tokenizer(a->model, a->tokenizer, true, parse_precision(a->precision));
    const Model& model = *loaded.model;
    a->gen.kv_cache = resolve_kv_cache_type(parse_kv_cache_type(a->kv_cache), model);
    // The session's cache holds the prompt and the tokens to generate (a token is at least a
    // byte of the prompt, BOS and a leading piece aside): a config's max_seq_len of 16M died in
    // the allocator ("std::bad_alloc", naming nothing).
    const int positions = (int)std::min<long>((long)a->prompt.size() + 2 + a->gen.max_tokens,
                                              model.config().max_seq_len);
    MemoryEstimate memory;
    memory.parts = {
        {"weights", model.weight_bytes()},
        {cat("a session of ", positions, " positions"),
         InferenceSession::memory_bytes(model.config(), 512, a->gen.kv_cache, positions)},
        {"runtime", kRuntimeOverheadBytes}};
    check_memory_fits("generate", memory, 1, 0, "use fewer --max-tokens or a shorter prompt",
                      model.weight_bytes(), false);
    // Chain-1 prefill is CoLM-Air's (keys and values from chain 1 alone); elsewhere every prefill
    // is full, and the flag changes nothing.
    if (!a->gen.chain1_prefill && !model.config().kv_share)
      std::fprintf(
          stderr,
          "warning: --full-prefill changes nothing for this model: only CoLM-Air (kv_share) "
          "models prefill with chain 1 alone\n");
    if (cmd->count("--chain-schedule")) {  // an empty one is ChainSchedule::parse's to refuse
      CHAINLM_CHECK(!cmd->count("--chains"), "pass --chains or --chain-schedule, not both");
      a->gen.schedule = ChainSchedule::parse(a->schedule, model.config().n_chains());
    }
    // The prompt is printed with the first token, after every option and the prompt's length
    // were checked: an error never follows a printed prompt.
    std::function<void(const std::string&)> stream;
    bool prompt_shown = false;
    auto show_prompt = [&]() {
      if (prompt_shown) return;
      std::fputs(a->prompt.c_str(), stdout);
      prompt_shown = true;
    };
    if (!a->json) {
      stream = [&](const std::string& s) {
        show_prompt();
        std::fputs(s.c_str(), stdout);
        std::fflush(stdout);
      };
    }
    GenerateResult r = generate(model, *loaded.tokenizer, a->prompt, a->gen, stream);
    if (!a->json) show_prompt();
    if (a->json) {
      nlohmann::json j = {{"text", r.text},
                          {"prompt_tokens", r.prompt_tokens},
                          {"tokens", r.tokens},
                          {"chains", r.chains},
                          {"tokens_per_s", r.tokens_per_s},
                          {"prefill_ms", r.prefill_ms},
                          {"decode_ms_per_token", r.decode_ms_per_token},
                          {"threads", r.threads},
                          {"prefill_threads", r.prefill_threads},
                          {"decode_threads", r.decode_threads},
                          {"stop_reason", stop_reason_name(r.stop_reason)},
                          {"kv_cache", kv_cache_type_name(a->gen.kv_cache)},
                          // What reproduces it (the same text from the same seed and settings).
                          {"sampling",
                           {{"temperature", a->gen.sampling.temperature},
                            {"top_k", a->gen.sampling.top_k},
                            {"top_p", a->gen.sampling.top_p},
                            {"seed", a->gen.sampling.seed}}},
                          // The weights that ran: a quantized model's type, not the default
                          // fp32 of --precision.
                          {"precision", model.weight_format()}};
      // Byte-level tokens can split a UTF-8 sequence: replace invalid bytes with U+FFFD.
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
      std::fflush(stdout);
      const std::string chains = !a->schedule.empty() ? a->schedule
                                 : std::to_string(a->gen.chains ? a->gen.chains : model.config().n_chains());
      // Fewer tokens than --max-tokens asked for, without EOS: say that the context is full.
      const std::string full =
          r.stop_reason == StopReason::max_seq_len
              ? ", stopped: the context is full (max_seq_len " +
                    std::to_string(model.config().max_seq_len) + ")"
              : "";
      // Decoding came down to fewer threads (a busy core): said, since it explains the speed.
      const std::string fewer =
          r.decode_threads < r.threads
              ? cat(", decoding on ", r.decode_threads, " of ", r.threads, " threads (a busy core)")
              : "";
      // The first token comes from the prefill, each later one from a decoding step: ms/token
      // averages those; tok/s counts every token over the whole time (0.07 ms/token beside 4,887
      // tok/s read as a contradiction).
      std::fprintf(
          stderr,
          "[%zu tokens, chains %s, prefill %.1f ms, then %.2f ms/token, %.1f tok/s overall%s%s]\n",
          r.tokens.size(), chains.c_str(), r.prefill_ms, r.decode_ms_per_token, r.tokens_per_s,
          fewer.c_str(), full.c_str());
    }
  });
}

}  // namespace chainlm::cli
