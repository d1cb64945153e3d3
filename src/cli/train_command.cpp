// chainlm train: train a model from a config (or resume a run) on prepared token shards,
// in one process or data-parallel under mpirun (docs/distributed.md).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "cli/system_info.h"
#include "cli/train_checks.h"
#include "cli/training_samples.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/printable.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "io/run_path.h"
#include "io/text_encoding.h"
#include "io/tokenizer.h"
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"
#include "model/checkpoint.h"
#include "train/distributed.h"
#include "train/run_directory.h"
#include "train/trainer.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

namespace {

std::string absolute_path(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

}  // namespace

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model on token shards made by `chainlm prepare`");
  struct Args {
    std::string config, data, out, chain_weights, init, train_only, memory_limit;
    std::string sample_prompt, sample_chains;
    long sample_every = 0;
    int sample_tokens = 0;
    int freeze_chains = 0, max_nonfinite_skips = 8, keep_checkpoints = 2;
    std::string on_nonfinite = "stop", precision = "fp32";
    long steps = 1000, eval_every = 100, save_every = 0, warmup = -1, lr_schedule_steps = 0;
    int batch = 8, micro = 0, seq = 0, threads = 0, eval_windows = 64;
    float lr = 1e-3f, wd = 0.1f, clip = 1.0f, min_lr_ratio = 0.1f;
    double bucket_mb = 16;
    uint64_t seed = 1337;
    bool resume = false, quiet = false, overlap_comm = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option(
      "--config", a->config,
      "Model config JSON for a new run (not with --init; with --resume only the run's own config)");
  cmd->add_option("--init", a->init,
                  "Start from these weights (chainlm checkpoint or run, llama2.c .bin, Hugging "
                  "Face LLaMA directory) with a fresh optimizer; the config comes from them");
  cmd->add_option("--freeze-chains", a->freeze_chains,
                  "Chain tuning (SPEC A7): freeze the first N chains")
      ->capture_default_str();
  cmd->add_option("--train-only", a->train_only, "Train only this part: 'head' (untied output head)")
      ->check(CLI::IsMember({"head"}));
  cmd->add_option("--data", a->data, "Directory with train.bin, val.bin and the tokenizer");
  cmd->add_option("--out", a->out, "Run directory (checkpoints, metrics.jsonl)")->required();
  cmd->add_option("--steps", a->steps,
                  "Optimizer steps (with --resume: the run's own unless given)")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->batch,
                  "Sequences per optimizer step, over all ranks under mpirun")
      ->capture_default_str();
  cmd->add_option("--micro-batch", a->micro,
                  "At most this many sequences per forward/backward (gradient accumulation); "
                  "0 = a rank's whole share of the batch");
  cmd->add_option("--seq-len", a->seq, "Tokens per sequence; 0 = the model's max_seq_len");
  cmd->add_option("--lr", a->lr, "Peak learning rate")
      ->check(in_float_range())
      ->capture_default_str();
  cmd->add_option("--min-lr-ratio", a->min_lr_ratio, "Final LR as a fraction of the peak")
      ->check(in_float_range())
      ->capture_default_str();
  cmd->add_option("--warmup", a->warmup,
                  "Warmup steps; -1 = min(100, S/10), S the schedule's steps (--lr-schedule-steps, "
                  "else --steps)");
  cmd->add_option("--lr-schedule-steps", a->lr_schedule_steps,
                  "Steps of the cosine schedule; the LR holds its final value after them. 0 = "
                  "--steps when the run starts; raising --steps on resume keeps the schedule");
  cmd->add_option("--weight-decay", a->wd, "AdamW weight decay on matrices")
      ->check(in_float_range())
      ->capture_default_str();
  cmd->add_option("--grad-clip", a->clip, "Global gradient norm clip; 0 = off")
      ->check(in_float_range())
      ->capture_default_str();
  cmd->add_option("--eval-every", a->eval_every, "Validate every N steps; 0 = only at the end")
      ->capture_default_str();
  cmd->add_option("--eval-windows", a->eval_windows, "Validation windows; 0 = whole split")
      ->capture_default_str();
  cmd->add_option("--save-every", a->save_every, "Checkpoint every N steps; 0 = at validation");
  cmd->add_option("--keep-checkpoints", a->keep_checkpoints,
                  "Checkpoints kept in the run directory, the newest; older ones are pruned")
      ->capture_default_str();
  cmd->add_option("--chain-loss-weights", a->chain_weights,
                  "Comma-separated weight per chain prefix (SPEC A5); default: full model only");
  cmd->add_option("--threads", a->threads,
                  "Threads (OpenMP and BLAS) per process; 0 = all cores (or OMP_NUM_THREADS when "
                  "set), under mpirun the "
                  "machine's cores shared among its ranks");
  cmd->add_option("--seed", a->seed, "Seed for initialization and data order")
      ->check(seed_value())
      ->capture_default_str();
  cmd->add_option("--memory-limit", a->memory_limit,
                  "Memory budget of this process, e.g. 8G (default: what the machine has "
                  "available); a run whose estimate exceeds it is refused before it starts");
  cmd->add_option("--on-nonfinite", a->on_nonfinite,
                  "A step whose loss or gradient norm is not finite: 'stop' the run with an "
                  "error, or 'skip' the step (weights and optimizer state untouched, a warning, "
                  "counted in metrics.jsonl)")
      ->check(CLI::IsMember({"stop", "skip"}))
      ->capture_default_str();
  cmd->add_option("--max-nonfinite-skips", a->max_nonfinite_skips,
                  "With --on-nonfinite skip: give up after this many skipped steps in a row")
      ->capture_default_str();
  add_precision_option(cmd, a->precision,
                       "GEMM operands: fp32, or bf16 over fp32 master weights (docs/precision.md); "
                       "may change on resume");
  cmd->add_option("--sample-every", a->sample_every,
                  "Every N steps (and at the last), print greedy generations of each sub-model "
                  "and log them in metrics.jsonl; 0 = off")
      ->capture_default_str();
  cmd->add_option("--sample-prompt", a->sample_prompt,
                  "Text the samples continue (default: none, BOS alone)");
  cmd->add_option("--sample-tokens", a->sample_tokens,
                  "Tokens per sample; 0 = 32, or what the context leaves after the prompt")
      ->capture_default_str();
  cmd->add_option("--sample-chains", a->sample_chains,
                  "Sub-models to sample, e.g. 1,4 (default: every sub-model)");
  cmd->add_flag("--resume", a->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->add_option("--bucket-mb", a->bucket_mb,
                  "Under mpirun: gradients are summed in buckets of at most this many MB")
      ->check(in_float_range())
      ->capture_default_str()
      // Checked with or without mpirun, naming the flag: a bucket holds at least one gradient.
      ->check(CLI::Validator(
          [](std::string& v) {
            char* end = nullptr;
            const double mb = std::strtod(v.c_str(), &end);
            if (end == v.c_str() || *end) return std::string();  // not a number: CLI11 says so
            return std::isfinite(mb) && mb * (1 << 20) >= sizeof(float)
                       ? std::string()
                       : cat("must be a size in MB that holds a gradient, at least 4 bytes (got ",
                             v, ")");
          },
          "> 0"));
  cmd->add_flag("--overlap-comm", a->overlap_comm,
                "Under mpirun: sum each layer's gradients while the backward computes the layers "
                "below (pays when the network, not the CPU, is the bottleneck)");
  cmd->callback([a, cmd]() {
    Communicator& comm = Communicator::world();
    const bool root = comm.is_root();
    // Errors every rank meets at the same point end the job with one message (rank 0's, or the
    // first failing rank's) and exit code 1 on every rank.
    // A rank's own error names the rank (and machine): the other ranks' data may be fine.
    auto agree = [&comm](const std::string& local_error) {
      end_job_on_first_error(comm, with_rank_named(comm, local_error));
    };
    // Each rank's own options first, through the same agreement: mpirun's MPMD form may give one
    // rank a bad --threads or --memory-limit, and a rank that stopped at it alone left the others
    // waiting for it for ever (a user trial).
    {
      std::string own_error;
      try {
        apply_threads_option(a->threads, launched_by_mpi() ? default_threads_per_rank(comm) : 0);
        if (cmd->count("--memory-limit")) parse_byte_size(a->memory_limit, "--memory-limit");
      } catch (const Error& e) {
        own_error = e.what();
      }
      agree(own_error);
    }
    // mpirun's MPMD form (A : B) gives ranks their own command lines: every rank ran with rank
    // 0's options, nothing said (a user trial). Each rank's own: --threads, --memory-limit,
    // --quiet.
    warn_if_rank_options_differ(comm,
                                given_options(*cmd, {"--threads", "--memory-limit", "--quiet"}));
    // The memory budget is this machine's, not part of the run's state.
    auto with_memory_budget = [&](TrainOptions o) {
      // (Given empty, it is refused as not a size: it meant no limit.)
      o.memory_limit =
          cmd->count("--memory-limit") ? parse_byte_size(a->memory_limit, "--memory-limit") : 0;
      o.processes_per_machine = processes_on_this_machine();
      return o;
    };
    std::unique_ptr<Model> model;
    TrainOptions opt;
    std::string resume_dir, error;
    std::string tokenizer_source;  // whose tokenizer the checkpoints carry ("" = the data's)
    Trainer::SampleFn sampler;
    // Rank 0 alone reads the config, the initial weights and the run directory: under mpirun
    // the other ranks receive the config and options here, and the weights, moments and step
    // when the run starts (Trainer::run), so only rank 0 needs the run directory.
    auto read_setup = [&]() {
      // The run's JSON files record these (trainer_state.json's options): bytes that are not
      // UTF-8, which a path may hold, failed the first checkpoint after the steps before it.
      for (const auto& [flag, value] :
           {std::pair<const char*, const std::string&>{"--data", a->data},
            {"--init", a->init},
            {"--sample-prompt", a->sample_prompt}}) {
        const Utf8Check check = check_utf8(value);
        CHAINLM_CHECK(
            check.ok(), "train: ", flag, " is not valid UTF-8 (byte ", check.first_invalid,
            "): the run records it in its checkpoints' JSON; rename the path or re-encode "
            "the text (nothing was trained)");
      }
      CHAINLM_CHECK(a->init.empty() || a->config.empty(),
                    "train: pass --config (a new model) or --init (existing weights), not both");
      if (a->resume) {
        CHAINLM_CHECK(a->init.empty(), "train: --init starts a new run; --resume continues one");
        RunDirectory::refuse_if_training(a->out);  // before its checkpoints are read
        std::error_code ec;
        if (fs::is_directory(a->out, ec) && !fs::exists(fs::path(a->out) / "latest", ec)) {
          if (is_checkpoint_dir(a->out)) refuse_checkpoint_as_run(a->out, true);
          // A step-N directory is complete once it has its name (built under a temporary one,
          // fsynced, then renamed): without `latest` (deleted, or a writer killed before writing
          // it) the run goes on from the newest.
          // Only those that hold a checkpoint: a directory of the user's named like one was
          // announced as the checkpoint resumed from, then refused (a trial).
          std::vector<std::string> found;
          std::string others;
          for (const std::string& name : RunDirectory(a->out).checkpoints_after(-1)) {
            if (is_checkpoint_dir((fs::path(a->out) / name).string()))
              found.push_back(name);
            else
              others += (others.empty() ? "" : ", ") + name;
          }
          // A run still before its first checkpoint, training in another process: say that.
          const bool started = fs::exists(fs::path(a->out) / ".lock", ec);  // a run took it once
          if (found.empty() && started) RunDirectory(a->out).lock();
          CHAINLM_CHECK(
              !found.empty(), "train --resume: ", a->out,
              started
                  ? " holds no complete checkpoint (no 'latest' file: the run stopped before its "
                    "first checkpoint); start it again without --resume"
                  : " holds no chainlm run (no checkpoint, no 'latest' file); --out names the "
                    "directory a run trained into");
          resume_dir = (fs::path(a->out) / found.back()).string();
          if (!a->quiet)
            std::fprintf(
                stderr,
                "resume: %s has no 'latest' file; resuming from its newest checkpoint, %s%s\n",
                a->out.c_str(), found.back().c_str(),
                others.empty() ? ""
                               : cat(" (", others,
                                     ": named like checkpoints, but without config.json and "
                                     "model.safetensors)")
                                     .c_str());
        }
        if (resume_dir.empty()) resume_dir = resolve_checkpoint_dir(a->out);
        model = load_model(resume_dir);
        nlohmann::json state;
        try {  // cut short or corrupt: the intact earlier checkpoint is named
          state = read_json_file((fs::path(resume_dir) / "trainer_state.json").string());
          try {
            opt = TrainOptions::from_json(state.at("options"));
          } catch (const nlohmann::json::exception& e) {
            fail(resume_dir, "/trainer_state.json: invalid options: ", e.what());
          }
        } catch (const Error& e) {
          fail(with_intact_earlier(e.what(), resume_dir));
        }
        check_run_model_unchanged(*model, state, resume_dir);
        // --steps counts from the run's start: one below the step the checkpoint is at would
        // ask the run to go back.
        const long at = state.value("step", 0L);
        CHAINLM_CHECK(!cmd->count("--steps") || a->steps >= at, "train --resume: --steps ",
                      a->steps, " is below the step the run is at (", at, ", ", resume_dir,
                      "); --steps counts ", "from the run's start, so pass more than ", at,
                      " to train further");
        // What defines the run's trajectory must not change on resume: an option given with a
        // different value is refused, naming each (it used to be ignored silently).
        std::string fixed;
        auto same = [&](const char* flag, auto given, auto stored) {
          if (cmd->count(flag) && given != stored)
            fixed += cat(fixed.empty() ? "" : ", ", flag, " ", given, " (the run's: ", stored, ")");
        };
        same("--batch-size", a->batch, opt.batch_size);
        const int max_len = model->config().max_seq_len;  // what a seq_len of 0 means
        same("--seq-len", a->seq > 0 ? a->seq : max_len, opt.seq_len > 0 ? opt.seq_len : max_len);
        same("--lr", a->lr, opt.lr);
        same("--min-lr-ratio", a->min_lr_ratio, opt.min_lr_ratio);
        // The documented defaults given explicitly (a job script repeating its options) mean
        // what leaving them out means: -1 is the warmup the run chose at its start, and below
        // --lr-schedule-steps 0 is the run's schedule (a user trial: -1 was refused, 0 stretched
        // the schedule to the new --steps and raised the LR).
        if (a->warmup >= 0) same("--warmup", a->warmup, opt.warmup);
        same("--weight-decay", a->wd, opt.weight_decay);
        same("--grad-clip", a->clip, opt.grad_clip);
        same("--seed", a->seed, opt.seed);
        // What the run trains, with the others: each refusal named one, and fixing it met the next
        // (a user trial).
        same("--freeze-chains", a->freeze_chains, opt.freeze_chains);
        auto part = [](const std::string& p) { return p.empty() ? std::string("all") : p; };
        same("--train-only", part(a->train_only), part(opt.train_only));
        if (cmd->count("--chain-loss-weights") &&
            parse_float_list(a->chain_weights, "--chain-loss-weights") != opt.chain_loss_weights)
          same("--chain-loss-weights", a->chain_weights, nlohmann::json(opt.chain_loss_weights).dump());
        if (!a->config.empty()) {
          const std::string differences = config_differences(
              config_to_json(load_config(a->config)), config_to_json(model->config()), "the run's");
          if (!differences.empty())
            fixed += cat(fixed.empty() ? "" : ", ", "--config ", a->config,
                         " (not the run's model: ", differences, ")");
        }
        CHAINLM_CHECK(fixed.empty(), "train --resume: ", fixed, " cannot change on resume: they ",
                      "define the run, which goes on exactly as it started. Start a new run from ",
                      "its weights to change them (train --init ", a->out, " --out NEW ...)");
        // These may change (the length of the run, how often it validates and saves, how it
        // computes); each change is said. The micro-batch changes no step's data, only the
        // rounding of the gradient sums (a different number of ranks may need it).
        std::string changed;
        auto change = [&](const char* flag, auto given, auto& stored) {
          if (!cmd->count(flag) || given == stored) return;
          changed += cat(changed.empty() ? "" : ", ", flag, " ", stored, " -> ", given);
          stored = given;
        };
        change("--steps", a->steps, opt.steps);
        if (a->lr_schedule_steps > 0)
          change("--lr-schedule-steps", a->lr_schedule_steps, opt.lr_schedule_steps);
        change("--micro-batch", a->micro, opt.micro_batch);
        change("--eval-every", a->eval_every, opt.eval_every);
        change("--eval-windows", a->eval_windows, opt.eval_windows);
        change("--save-every", a->save_every, opt.save_every);
        change("--keep-checkpoints", a->keep_checkpoints, opt.keep_checkpoints);
        change("--on-nonfinite", a->on_nonfinite, opt.on_nonfinite);
        change("--max-nonfinite-skips", a->max_nonfinite_skips, opt.max_nonfinite_skips);
        change("--sample-every", a->sample_every, opt.sample_every);
        change("--sample-prompt", a->sample_prompt, opt.sample_prompt);
        change("--sample-tokens", a->sample_tokens, opt.sample_tokens);
        if (cmd->count("--sample-chains")) {
          std::vector<int> chains = parse_sample_chains(a->sample_chains, model->config().n_chains());
          if (chains != opt.sample_chains) {
            std::string was;  // as the options list them: empty = every sub-model
            for (int k : opt.sample_chains) was += (was.empty() ? "" : ",") + std::to_string(k);
            changed += cat(changed.empty() ? "" : ", ", "--sample-chains ",
                           was.empty() ? "all" : was, " -> ", a->sample_chains);
            opt.sample_chains = chains;
          }
        }
        // The precision is how the steps compute, not state (weights and moments are fp32).
        if (cmd->count("--precision") && a->precision != opt.precision && !a->quiet)
          std::fprintf(stderr, "precision: %s until the checkpoint, %s from here on\n",
                       opt.precision.c_str(), a->precision.c_str());
        const bool precision_changes = cmd->count("--precision") && a->precision != opt.precision;
        change("--precision", a->precision, opt.precision);
        opt.check_ranges();  // a bad new value is refused before its change is said
        // Sums split over another thread count (or run by another GEMM library) round otherwise:
        // the run goes on, but not bit-identically to an uninterrupted one. Said.
        const nlohmann::json was = state.value("compute", nlohmann::json::object());
        const int threads_now = num_threads();
        // The kernel too (oneDNN's ISA, OpenBLAS's core): ONEDNN_MAX_CPU_ISA, another CPU or
        // OPENBLAS_CORETYPE changed the bits under the same "gemm" (a checkpoint from before the
        // kernel was recorded is compared by its library alone).
        const std::string gemm_now = gemm_kernel_name(),
                          library_now = gemm_backend_name(gemm_backend());
        const int threads_was = was.value("threads", threads_now);
        const std::string gemm_was =
            was.contains("gemm_kernel")                     ? was.value("gemm_kernel", gemm_now)
            : was.value("gemm", library_now) == library_now ? gemm_now
                                                            : was.value("gemm", library_now);
        // The ranks too: gradients summed over another count of ranks round otherwise (a
        // checkpoint from before the count was kept is taken to have this one).
        const int ranks_now = comm.size(), ranks_was = was.value("ranks", ranks_now);
        auto compute = [](int ranks, int threads, const std::string& gemm) {
          return cat(ranks > 1 ? cat(ranks, " ranks of ") : std::string(), threads,
                     " thread(s) with ", gemm, " GEMMs");
        };
        const std::string keep =
            cat(ranks_was != ranks_now ? (ranks_was > 1 ? cat("mpirun -np ", ranks_was, ", ")
                                                        : std::string("one process, "))
                                       : std::string(),
                "--threads ", threads_was, " and ", gemm_was,
                " GEMMs (CHAINLM_GEMM, on a CPU with those "
                "kernels) keep them");
        // Said under --quiet too: what a reviewer comparing losses needs to know.
        if (root && (threads_was != threads_now || gemm_was != gemm_now || ranks_was != ranks_now))
          std::fprintf(stderr,
                       "resume: the steps so far ran on %s, these run on %s: the losses will not "
                       "be bit-identical to an uninterrupted run's (%s)\n",
                       compute(ranks_was, threads_was, gemm_was).c_str(),
                       compute(ranks_now, threads_now, gemm_now).c_str(),
                       precision_changes ? "nor are they in another precision" : keep.c_str());
        if (!a->data.empty()) change("--data", absolute_path(a->data), opt.data_dir);
        // The run names its data by the absolute path it had at the start: data moved since is
        // found again with --data (a user trial got only "cannot open token shard").
        CHAINLM_CHECK(!a->data.empty() || fs::exists(opt.data_dir, ec),
                      "train --resume: the run's data ", opt.data_dir,
                      " (recorded when it started) is not there; if it moved, give ",
                      "its new place: chainlm train --out ", shell_word(a->out),
                      " --resume --data NEW_DIR (nothing was trained)");
        require_data_tokenizer(opt.data_dir);
        // A checkpoint without its tokenizer (removed by hand) would take the data's unchecked
        // and pass it on to every later checkpoint.
        if (!dir_has_tokenizer(resume_dir)) {  // an intact earlier checkpoint is named too
          const std::string what =
              cat("train --resume: the checkpoint ", resume_dir,
                  " holds no tokenizer, so the data's cannot be checked against the one the run "
                  "was trained with; copy that tokenizer into ",
                  resume_dir);
          const std::string advice = with_intact_earlier(what, resume_dir);
          fail(advice == what ? what + " (nothing was trained)" : advice);
        }
        try {  // a corrupt one was taken for another tokenizer than the data's
          load_tokenizer(resume_dir);
        } catch (const Error& e) {
          const std::string what =
              cat("train --resume: the checkpoint's tokenizer cannot be read: ", e.what());
          const std::string advice = with_intact_earlier(what, resume_dir);
          fail(advice == what ? what + " (nothing was trained)" : advice);
        }
        check_same_tokenizer(opt.data_dir, resume_dir, "train --resume");
        tokenizer_source =
            resume_dir;  // with what the run's checkpoints carried (its chat template)
        // Said once the resume is known to go ahead (a refusal after "resume: --steps 20 -> 25"
        // read as if the change had been made).
        if (!changed.empty() && !a->quiet) std::fprintf(stderr, "resume: %s\n", changed.c_str());
      } else {
        CHAINLM_CHECK(!a->config.empty() || !a->init.empty(),
                      "train: --config (a new model) or --init (existing weights) is required, or "
                      "pass --resume");
        CHAINLM_CHECK(!a->data.empty(), "train: --data is required");
        // A symbolic link that leads nowhere ("cannot create the run directory: File exists")
        // or in a loop (a raw filesystem_error).
        std::error_code link_ec;
        if (fs::is_symlink(fs::symlink_status(a->out, link_ec))) {
          const fs::file_status target = fs::status(a->out, link_ec);
          CHAINLM_CHECK(!link_ec || link_ec == std::errc::no_such_file_or_directory,
                        "train: --out ", a->out, " is a symbolic link that cannot be followed (",
                        link_ec.message(), "); choose another --out (nothing was trained)");
          CHAINLM_CHECK(
              fs::exists(target), "train: --out ", a->out, " is a symbolic link to ",
              fs::read_symlink(a->out, link_ec).string(),
              ", which does not exist; create that directory or choose another --out (nothing "
              "was trained)");
        }
        std::error_code latest_ec;
        CHAINLM_CHECK(!fs::exists(fs::path(a->out) / "latest", latest_ec), a->out,
                      " already holds a training run; pass --resume to continue it or choose ",
                      "another --out (nothing was overwritten)");
        if (is_checkpoint_dir(a->out)) refuse_checkpoint_as_run(a->out, false);
        if (const std::string note = other_entries_note(a->out); !note.empty())
          std::fprintf(stderr, "train: note: %s\n", note.c_str());
        // A run's checkpoints and log inside the data directory would mix the two (and a later
        // prepare --overwrite there would see them as someone's files).
        std::error_code same_ec;
        CHAINLM_CHECK(!fs::equivalent(a->out, a->data, same_ec), "train: --out ", a->out,
                      " is the data directory; a run writes its checkpoints and log into --out: "
                      "choose another directory (nothing was trained)");
        require_data_tokenizer(a->data);
        if (!a->init.empty()) {
          model = load_model(a->init);
          std::error_code ec;
          if (fs::is_directory(a->init, ec)) {
            const std::string init_dir = resolve_checkpoint_dir(a->init);
            check_same_tokenizer(a->data, init_dir, "train --init");
            // The same tokenizer, with the model's companions (chat template, EOS list), which
            // the data's directory may lack.
            if (dir_has_tokenizer(init_dir)) tokenizer_source = init_dir;
          }
          // A llama2.c file, or a checkpoint written without one, carries no tokenizer to compare
          // the data's with: said, since the run's checkpoints then take the data's as the model's.
          if (carried_tokenizer(a->init).empty())
            std::fprintf(stderr,
                         "warning: %s carries no tokenizer, so the data's (%s) cannot be checked "
                         "against the "
                         "one it was trained with; the run's checkpoints will carry the data's\n",
                         a->init.c_str(), a->data.c_str());
        }
        // Freezing a new model's chains keeps them at their random initialization: chain tuning
        // freezes trained weights (--init). Allowed (a random-features experiment), but said.
        if (root && a->init.empty() && (a->freeze_chains > 0 || a->train_only == "head"))
          std::fprintf(
              stderr,
              "warning: %s on a new model (--config, no --init) keeps the frozen weights at their "
              "random initialization; chain tuning starts from trained ones (--init CHECKPOINT)\n",
              a->freeze_chains > 0 ? cat("--freeze-chains ", a->freeze_chains).c_str()
                                   : "--train-only head");
        opt.init = a->init.empty() ? std::string() : absolute_path(a->init);
        opt.freeze_chains = a->freeze_chains;
        opt.train_only = a->train_only;
        // Absolute: the run may be resumed from any working directory.
        opt.data_dir = absolute_path(a->data);
        opt.steps = a->steps;
        opt.batch_size = a->batch;
        opt.micro_batch = a->micro;
        opt.seq_len = a->seq;
        opt.lr = a->lr;
        opt.min_lr_ratio = a->min_lr_ratio;
        opt.warmup = a->warmup;
        opt.weight_decay = a->wd;
        opt.grad_clip = a->clip;
        opt.eval_every = a->eval_every;
        opt.eval_windows = a->eval_windows;
        opt.save_every = a->save_every;
        opt.keep_checkpoints = a->keep_checkpoints;
        opt.seed = a->seed;
        opt.on_nonfinite = a->on_nonfinite;
        opt.max_nonfinite_skips = a->max_nonfinite_skips;
        opt.precision = a->precision;
        opt.lr_schedule_steps = a->lr_schedule_steps;
        opt.sample_every = a->sample_every;
        opt.sample_prompt = a->sample_prompt;
        opt.sample_tokens = a->sample_tokens;
        if (!a->chain_weights.empty())
          opt.chain_loss_weights = parse_float_list(a->chain_weights, "--chain-loss-weights");
        opt.check_ranges();  // before the memory estimate, which reads some of them
        if (a->init.empty()) {
          // A new model: refuse a run that cannot fit before even its weights are allocated.
          const ModelConfig config = load_config(a->config);
          Trainer::check_memory(config, with_memory_budget(opt), comm.size());
          model = std::make_unique<Model>(config);
          model->init_random(a->seed);
        }
        if (!a->sample_chains.empty())
          opt.sample_chains = parse_sample_chains(a->sample_chains, model->config().n_chains());
      }
      // Rank 0 alone samples; a bad prompt or chain list is refused before the run starts.
      sampler = make_training_sampler(opt, model->config());
    };
    if (root) {
      try {
        read_setup();
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    agree(error);
    if (comm.size() > 1) {
      std::string config_text = root ? config_to_json(model->config()).dump() : std::string();
      std::string options_text = root ? opt.to_json().dump() : std::string();
      comm.broadcast(config_text);
      comm.broadcast(options_text);
      if (!root) {
        model = std::make_unique<Model>(config_from_json(nlohmann::json::parse(config_text), "rank 0's config"));
        opt = TrainOptions::from_json(nlohmann::json::parse(options_text));
      }
    }
    opt = with_memory_budget(opt);
    opt.out_dir = a->out;
    opt.quiet = a->quiet;
    opt.bucket_mb = a->bucket_mb;
    opt.overlap_comm = a->overlap_comm;
    if (comm.size() > 1) {  // the collectives' sizes: every rank must take rank 0's
      comm.broadcast(&opt.bucket_mb, sizeof opt.bucket_mb);
      comm.broadcast(&opt.overlap_comm, sizeof opt.overlap_comm);
    }
    opt.resuming = !resume_dir.empty();
    std::unique_ptr<Trainer> trainer_ptr;
    try {
      trainer_ptr = std::make_unique<Trainer>(*model, opt, comm);
      if (root && !resume_dir.empty()) trainer_ptr->restore(resume_dir);
      if (root && !tokenizer_source.empty()) trainer_ptr->carry_tokenizer_of(tokenizer_source);
    } catch (const std::exception& e) {
      error = e.what();
    }
    agree(error);
    Trainer& trainer = *trainer_ptr;
    // Every rank must read the same data (a stale copy on one machine trained silently, to other
    // losses): rank 0's shards' fingerprints against each rank's.
    if (comm.size() > 1) {
      // The fingerprints (counts, vocabularies, sampled CRCs) say how; the whole shards' CRCs,
      // made by the token check, catch a copy that differs only between the samples.
      const std::string mine = trainer.data_fingerprint() + "; " + trainer.data_checksums();
      std::string rank0 = mine;
      comm.broadcast(rank0);
      agree(
          mine == rank0
              ? std::string()
              : cat("the data in ", opt.data_dir, " differs from rank 0's (rank 0: ", rank0,
                    "; here: ", mine,
                    "); give every rank the same data (copy the data directory to every machine)"));
    }
    if (sampler) trainer.set_sampler(sampler);
    const ModelConfig& c = model->config();
    // A finished run resumed says so and no more (the setup lines came after "nothing to train").
    const bool finished = trainer.step() >= trainer.options().steps;
    if (!a->quiet && root) {
      std::fprintf(stderr, "model: %d layers, dim %d, chains %s%s%s, %.2fM parameters; %s from step %ld to %ld\n",
                   c.n_layers, c.dim, nlohmann::json(c.chains).dump().c_str(),
                   c.kv_share ? " (CoLM-Air)" : "",
                   c.phd.enabled() ? cat(", ", c.phd.name()).c_str() : "", model->num_params(c.n_chains()) / 1e6,
                   resume_dir.empty() ? "training" : "resuming", trainer.step(), trainer.options().steps);
      if (finished) {
        // `latest` may name an earlier checkpoint than the run's newest (set by hand to go on
        // from there): "its last" was then wrong, and a larger --steps moves the later aside.
        std::string later;
        for (const auto& [step, name] : run_checkpoints(a->out))
          if (step > trainer.step()) later += cat(later.empty() ? "" : ", ", name);
        std::fprintf(stderr,
                     later.empty()
                         ? "the run is already at step %ld, its last: nothing to train. Pass a "
                           "larger --steps to train further%s\n"
                         : "the run is already at step %ld, the checkpoint `latest` names: nothing "
                           "to train. A larger --steps trains on from it and moves the later "
                           "checkpoints (%s) aside\n",
                     trainer.step(), later.c_str());
      }
    }
    if (!a->quiet && root && !finished) {
      const ParamStore& ps = model->params();
      const TrainOptions& o = trainer.options();
      const std::string what = o.train_only == "head" ? std::string(" (output head only)")
                               : o.freeze_chains > 0  ? cat(" (chains 1..", o.freeze_chains, " frozen)")
                                                      : std::string();
      std::fprintf(stderr, "trainable: %zu of %zu parameters (%.1f%%)%s\n", ps.trainable_numel(),
                   ps.numel(), 100.0 * trainer.trainable_fraction(), what.c_str());
      if (o.precision == "bf16")
        std::fprintf(stderr, "precision: bf16 GEMMs over fp32 master weights (%s)\n",
                     bf16_gemm_note().c_str());
      if (comm.size() > 1)
        std::fprintf(stderr,
                     "data parallel: %d ranks on %d machine(s), %d thread(s) each; %d of the %d "
                     "sequences of every step per rank, in micro-batches of %d%s\n",
                     comm.size(), comm.nodes(), num_threads(), trainer.rows_per_rank(), o.batch_size,
                     trainer.micro_batch(), o.overlap_comm ? "; gradients summed during the backward" : "");
    }
    if (!a->quiet && root && !finished && launched_by_mpi() && num_threads() > cores_available())
      std::fprintf(stderr,
                   "warning: rank %d runs %d threads on %d core(s) it is bound to; under mpirun "
                   "give --threads 1, or bind ranks to more cores (mpirun --bind-to none, or "
                   "--map-by slot:PE=%d)\n",
                   comm.rank(), num_threads(), cores_available(), num_threads());
    // Ctrl-C / SIGTERM: finish the step, save it, say how to go on (a second one quits at once).
    install_stop_handlers("stopping after this step and saving a checkpoint");
    auto report_stop = [&]() {
      if (!trainer.stopped_by()) {
        // A stop that came during the last step: the run is whole and saved, but whoever sent
        // it must see it heeded. Exiting 0, a script's Ctrl-C went on to its next command (a
        // user trial of bench/replicate).
        const int late = stop_signal();
        if (!late) return;
        if (root)
          std::fprintf(stderr,
                       "%s came during the last step: training finished at step %ld; saved %s\n",
                       signal_name(late), trainer.step(), resolve_checkpoint_dir(a->out).c_str());
        std::fflush(stderr);
        std::exit(128 + late);
      }
      // The same ranks and threads: resumed on another thread count (every core by default),
      // the run goes on, but not bit for bit (a user trial followed the hint and lost the bits).
      const std::string launcher = comm.size() > 1
                                       ? cat("mpirun -np ", comm.size(), " <your mpirun options> ")
                                       : std::string();
      const std::string threads = cat(" --threads ", num_threads());
      if (root)
        std::fprintf(
            stderr,
            "training stopped by %s at step %ld of %ld; saved %s. Continue with: %schainlm "
            "train --out %s --resume%s\n",
            signal_name(trainer.stopped_by()), trainer.step(), trainer.options().steps,
            resolve_checkpoint_dir(a->out).c_str(), launcher.c_str(), shell_word(a->out).c_str(),
            threads.c_str());
      std::fflush(stderr);
      std::exit(128 + trainer.stopped_by());
    };
    if (comm.size() == 1) {
      // A finished run has nothing to write either: a requeued job on a read-only copy ends well.
      // What a writer killed as it finished left is removed, when the run can be written.
      if (trainer.step() >= trainer.options().steps) {
        trainer.tidy_finished_run();
        return;
      }
      trainer.run();
      report_stop();
      return;
    }
    // From here on an error may strike one rank alone, mid-collective: it ends the whole job
    // (MPI_Abort) rather than leave the other ranks waiting for it. Errors all ranks raise
    // together end it with rank 0's message.
    try {
      trainer.run();
      report_stop();
    } catch (const CollectiveError& e) {
      end_without_stopping();  // mpirun's SIGTERM, if another rank exits first, says nothing
      if (root) throw;
      std::exit(1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error (rank %d of %d): %s\n", comm.rank(), comm.size(), e.what());
      std::fflush(stderr);
      comm.abort(1);
    }
  });
}

}  // namespace chainlm::cli
