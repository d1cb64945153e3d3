// chainlm bench: performance measurements that print one JSON line each.
#include <memory>

#include "cli/bench_util.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "cli/commands.h"
#include "core/error.h"

namespace chainlm::cli {

void add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Performance benchmarks (one JSON line each)");
  bench->require_subcommand(1);
  auto* train = bench->add_subcommand(
      "train",
      "Training step throughput and MFU against the best GEMM peak measured (OpenBLAS, oneDNN)");
  struct Args {
    std::string config, weights, precision = "fp32";
    int batch = 8, seq = 0, threads = 0, steps = 5;  // seq 0: min(256, the config's max_seq_len)
    double bucket_mb = 16;
    bool baseline = false, overlap = false, vs_fp32 = false;
  };
  auto a = std::make_shared<Args>();
  train->add_option("--config", a->config, "Model config JSON")->required();
  train->add_option("--batch-size", a->batch, "Sequences per step (over all ranks under mpirun)")
      ->capture_default_str();
  train
      ->add_option("--seq-len", a->seq,
                   "Tokens per sequence; 0 = min(256, the config's max_seq_len)")
      ->capture_default_str();
  train->add_option("--threads", a->threads,
                    "Threads per process; 0 = all cores (or OMP_NUM_THREADS when set), under "
                    "mpirun the machine's cores shared "
                    "among its ranks");
  train
      ->add_option("--bucket-mb", a->bucket_mb, "Under mpirun: gradient allreduce bucket size (MB)")
      ->check(in_float_range())
      ->capture_default_str();
  train->add_flag("--overlap-comm", a->overlap,
                  "Under mpirun: sum each layer's gradients during the backward");
  train->add_option("--steps", a->steps, "Timed steps (median reported)")->capture_default_str();
  train->add_option("--chain-loss-weights", a->weights, "Weights per chain prefix");
  train->add_flag("--baseline", a->baseline,
                  "PHD config: also time it without PHD, interleaved, and report the ratio");
  add_precision_option(train, a->precision, "GEMM operands: fp32, or bf16 over fp32 master weights");
  train->add_flag(
      "--vs-fp32", a->vs_fp32,
      "With --precision bf16: also time the model in fp32, interleaved step by step, and report "
      "the speedup (a slow spell of a shared machine falls on both)");
  train->callback([a]() {
    CHAINLM_CHECK(a->steps > 0 && a->batch > 0 && a->seq >= 0,
                  "bench train: --steps and --batch-size must be positive, --seq-len not negative");
    bench_train(a->config, a->batch, a->seq, a->threads, a->steps, a->weights, a->baseline,
                a->bucket_mb, a->overlap, parse_precision(a->precision), a->vs_fp32);
  });

  auto add_inference = [&](const char* name, const char* help, bool decode) {
    auto* cmd = bench->add_subcommand(name, help);
    auto b = std::make_shared<InferenceBenchArgs>();
    cmd->add_option("--model", b->model, "Checkpoint, run directory, HF directory, GGUF file or llama2.c .bin");
    cmd->add_option("--config", b->config, "Or: a model config JSON, with random weights");
    cmd->add_option("--chains", b->chains, "Active chains k; default: all")->check(at_least(1));
    cmd->add_option("--threads", b->threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
    cmd->add_option("--prompt-tokens", b->prompt_tokens, "Prompt length")
        ->capture_default_str()
        ->check(at_least(decode ? 1 : 2));
    if (decode)
      cmd->add_option("--tokens", b->tokens, "Decoded tokens timed")
          ->capture_default_str()
          ->check(at_least(1));
    cmd->add_flag("--baseline", b->baseline,
                  "PHD model: also time it without PHD (same weights), interleaved; report the ratio");
    add_precision_option(cmd, b->precision, kInferencePrecisionHelp);
    cmd->add_option("--quant", b->quant,
                    "Quantize the fp32 weights in memory first (what `chainlm quantize` writes)")
        ->check(CLI::IsMember({"q8_0", "q4_0"}));
    add_kv_cache_option(cmd, b->kv_cache);
    cmd->add_flag("--vs-fp32", b->vs_fp32,
                  "With --precision bf16 or --quant: also time the fp32 weights, interleaved; "
                  "report the speedup");
    cmd->callback([b, decode, cmd]() {
      b->prompt_tokens_given = cmd->count("--prompt-tokens") > 0;
      b->tokens_given = decode && cmd->count("--tokens") > 0;
      decode ? bench_decode(*b) : bench_prefill(*b);
    });
  };
  add_inference("decode", "Batch-1 decoding: tokens/s, KV bytes, fraction of the bandwidth bound", true);
  add_inference("prefill", "Prompt prefill time; CoLM-Air chain-1 prefill vs full prefill", false);

  auto* serve = bench->add_subcommand("serve", "Served throughput and latency at several concurrencies (loopback HTTP)");
  auto s = std::make_shared<ServeBenchArgs>();
  serve
      ->add_option("--model", s->model,
                   "Checkpoint, run directory, HF directory, GGUF or llama2.c file")
      ->required();
  serve->add_option("--tokenizer", s->tokenizer,
                    "Tokenizer for a model file that carries none (llama2.c)");
  serve
      ->add_option("--concurrency", s->concurrency,
                   "Concurrent clients, one level after another (1,2,4,8)")
      ->delimiter(',')
      ->check(whole_number_in(1, 1 << 16));
  serve->add_option("--chains", s->chains, "Sub-model of the requests: all, a count, or mix (spread over 1..n)")
      ->capture_default_str();
  serve->add_option("--tokens", s->tokens, "Tokens generated per request (EOS ignored)")
      ->capture_default_str()
      ->check(at_least(1));
  serve->add_option("--prompt-tokens", s->prompt_tokens, "Prompt length (random token ids)")
      ->capture_default_str()
      ->check(at_least(1));
  serve->add_option("--requests", s->requests, "Requests per level; 0 = max(4, 2 x concurrency)")
      ->check(at_least(0));
  serve
      ->add_option(
          "--rounds", s->rounds,
          "Run the levels this many times in turn (1, 8, 1, 8, ...) and print each level's median; "
          "on a shared machine a single run can be tens of percent off")
      ->capture_default_str()
      ->check(whole_number_in(1, 1000));
  serve->add_option("--threads", s->threads,
                    "Server compute threads; 0 = all cores, or OMP_NUM_THREADS when set");
  serve
      ->add_option("--max-sessions", s->max_sessions,
                   "Server sessions; 0 = the largest concurrency")
      ->check(at_least(0));
  serve->add_flag("--fixed-threads", s->fixed_threads,
                  "As serve --fixed-threads: decode on --threads threads always");
  add_precision_option(serve, s->precision, kInferencePrecisionHelp);
  serve
      ->add_option("--quant", s->quant,
                   "Quantize the fp32 weights in memory first (what `chainlm quantize` writes)")
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
  add_kv_cache_option(serve, s->kv_cache);
  add_stream_interval_option(serve, s->stream_interval_ms);
  serve->callback([s, serve]() {
    s->tokens_given = serve->count("--tokens") > 0;
    s->prompt_tokens_given = serve->count("--prompt-tokens") > 0;
    bench_serve(*s);
  });
}

}  // namespace chainlm::cli
