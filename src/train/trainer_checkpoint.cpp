// A checkpoint's contents (Trainer::save, Trainer::restore): the model (model.safetensors,
// config.json), the AdamW moments (optimizer.safetensors, "m."/"v." + parameter name), the
// trainer state (step, options, skipped steps) and the data's tokenizer. RunDirectory writes
// them by its crash-safe protocol; nothing non-finite is ever written.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "core/fault_injection.h"
#include "core/version.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "kernels/gemm_backend.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "train/trainer.h"

namespace chainlm {

namespace fs = std::filesystem;

std::string Trainer::nonfinite_state() const {
  const ParamStore& ps = model_.params();
  const AlignedVector<float>* moments[2] = {&const_cast<Optimizer&>(optimizer_).m(),
                                            &const_cast<Optimizer&>(optimizer_).v()};
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    const float* arrays[3] = {ps.values() + p.offset, moments[0]->data() + p.offset,
                              moments[1]->data() + p.offset};
    const char* what[3] = {"weight", "AdamW first moment", "AdamW second moment"};
    for (int a = 0; a < 3; ++a)
      for (long k = 0; k < (long)p.numel(); ++k)
        if (!std::isfinite(arrays[a][k]))
          return cat(what[a], " '", p.name, "'[", k, "] = ", arrays[a][k]);
  }
  return std::string();
}

void Trainer::prepare_run_dir() {
  run_dir_.prepare();
}

std::string Trainer::save() {
  // The last line of defence: a checkpoint never holds a non-finite weight or moment.
  const std::string bad = nonfinite_state();
  CHAINLM_CHECK(bad.empty(), "step ", step_, ": refusing to write checkpoint ",
                run_dir_.checkpoint_path(step_), ": ", bad, " is not finite; ",
                run_dir_.what_is_kept());
  return run_dir_.write_checkpoint(step_, opt_.keep_checkpoints, [&](const std::string& dir) {
    const fs::path tmp(dir);
    save_model(model_, tmp.string());
    fault::point("checkpoint.after_weights");
    ParamStore& ps = model_.params();
    std::vector<TensorView> views;
    for (int i = 0; i < (int)ps.infos().size(); ++i) {
      const ParamInfo& p = ps.info(i);
      views.push_back({"m." + p.name, p.shape, optimizer_.m().data() + p.offset});
      views.push_back({"v." + p.name, p.shape, optimizer_.v().data() + p.offset});
    }
    write_safetensors((tmp / "optimizer.safetensors").string(), views);
    fault::point("checkpoint.after_optimizer");
    nlohmann::json state = {{"format", "chainlm-trainer-1"},
                            {"step", step_},
                            {"options", opt_.to_json()},
                            {"trainable_params", ps.trainable_numel()},
                            {"total_params", ps.numel()},
                            {"trainable_fraction", trainable_fraction()},
                            {"skipped_steps", skipped_},
                            {"skipped_in_a_row", skipped_in_a_row_},
                            {"compute", compute_json()},
                            {"data_fingerprint", data_fingerprint()},
                            {"chainlm_version", kChainlmVersion},
                            {"libraries", gemm_library_versions()},
                            // The model trained, beside config.json: an edited config.json (a `phd`
                            // object added, say) is then told from the run's on resume.
                            {"model_config", config_to_json(model_.config())}};
    write_file_atomic((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
    if (carried_tokenizer_.empty())
      save_tokenizer_to_dir(find_tokenizer_in_dir(opt_.data_dir), tmp.string());
    for (const auto& [name, bytes] : carried_tokenizer_)
      write_file_atomic((tmp / name).string(), bytes);
  });
}

void Trainer::carry_tokenizer_of(const std::string& dir) {
  // save_tokenizer_to_dir writes what a checkpoint holds of it (converting, and copying the
  // companions): into a temporary directory, whose files are kept.
  // Named by process (as write_file_atomic names its temporaries): a run killed while it is
  // here leaves it, and the next run removes those of processes that are gone.
  const std::string tmp_dir = temp_directory();
  remove_stale_temporaries(tmp_dir, "chainlm-tokenizer-");
  static std::atomic<int> counter{0};
  const std::string tmp =
      (fs::path(tmp_dir) / cat("chainlm-tokenizer-", ::getpid(), ".", counter++)).string();
  CHAINLM_CHECK(::mkdir(tmp.c_str(), 0700) == 0, "cannot create a temporary directory ", tmp, ": ",
                std::strerror(errno), " (TMPDIR names where temporary files go)");
  struct Remove {
    std::string dir;
    ~Remove() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } remove{tmp};
  save_tokenizer_to_dir(dir, tmp);
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& e : fs::directory_iterator(tmp))
    files.emplace_back(e.path().filename().string(), read_file(e.path().string()));
  std::sort(files.begin(), files.end());
  carried_tokenizer_ = std::move(files);
}

void Trainer::restore_state(const std::string& dir) {
  load_model_weights(model_, (fs::path(dir) / "model.safetensors").string());
  SafetensorsReader opt((fs::path(dir) / "optimizer.safetensors").string());
  ParamStore& ps = model_.params();
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    opt.read_f32("m." + p.name, p.shape, optimizer_.m().data() + p.offset);
    opt.read_f32("v." + p.name, p.shape, optimizer_.v().data() + p.offset);
  }
  const std::string state_path = (fs::path(dir) / "trainer_state.json").string();
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_file(state_path));
    step_ = state.at("step").get<long>();
    skipped_ = state.value("skipped_steps", 0L);
    skipped_in_a_row_ = state.value("skipped_in_a_row", 0L);
    restored_data_fingerprint_ = state.value("data_fingerprint", std::string());
  } catch (const nlohmann::json::exception& e) {
    fail(state_path, ": invalid trainer state: ", e.what());
  }
  CHAINLM_CHECK(step_ >= 0, state_path, ": negative step");
  // A state edited by hand or copied from another checkpoint: resuming went on from its step,
  // moved the checkpoint itself aside as "later" and left `latest` naming nothing.
  const std::string name = fs::path(dir).filename().string();
  const long named = checkpoint_step(name);
  CHAINLM_CHECK(named < 0 || named == step_, state_path, " says step ", step_,
                " but its checkpoint is ", name,
                ": the file was edited or belongs to another checkpoint (nothing was changed)");
}

void Trainer::restore(const std::string& checkpoint_dir) {
  const std::string dir = resolve_checkpoint_dir(checkpoint_dir);
  try {
    restore_state(dir);
  } catch (const Error& e) {  // a file of it cut short or corrupt: the intact earlier one is named
    fail(with_intact_earlier(e.what(), dir));
  }
  // Resuming from an older checkpoint than the run's newest would overwrite the newer ones and
  // drop their metrics as it goes: they are moved aside first, never deleted. (Both take the
  // run's lock before they change anything: a resume refused because another process trains
  // here must not move that run's checkpoints aside or cut its log on its way out.) A resume
  // with nothing to train (--steps at the restored step) overwrites nothing: it changes nothing.
  run_dir_.set_last_checkpoint(dir);
  if (step_ >= opt_.steps) return;
  if (comm_.is_root()) {
    run_dir_.check_metrics_lines();
    const RunDirectory::Superseded moved = run_dir_.supersede_after(step_);
    const std::string others = moved.others.empty()
                                   ? std::string()
                                   : cat(moved.checkpoints.empty() ? "" : "; ", moved.others,
                                         ", named like checkpoints but holding none, too");
    if (!moved.dir.empty() && !opt_.quiet)
      std::fprintf(stderr,
                   "resuming from step %ld, the checkpoint `latest` names: the later checkpoints "
                   "(%s%s) and their metrics lines were moved to %s (nothing was deleted)\n",
                   step_, moved.checkpoints.c_str(), others.c_str(), moved.dir.c_str());
  }
  // Keep only the metrics of steps up to the restored one, so a resumed run's log reads as one
  // uninterrupted run.
  if (comm_.is_root()) run_dir_.truncate_metrics(step_);
}

// A checkpoint's config.json edited by hand (a `phd` object added to make a PHD model, as
// docs/phd.md does for a new run) resumed the run as another architecture, with the old one's
// optimizer moments and schedule, and nothing said it. trainer_state.json records the model the
// run trained (checkpoints written before it did are not checked).
void check_run_model_unchanged(const Model& model, const nlohmann::json& state,
                               const std::string& resume_dir) {
  if (!state.contains("model_config")) return;
  const nlohmann::json now = config_to_json(model.config()), ran = state["model_config"];
  if (now == ran) return;
  const std::string differences = config_differences(now, ran, "the run's");
  fail("train --resume: ", resume_dir, "/config.json is not the model the run trained (",
       differences.empty() ? std::string("it differs") : cat("it differs in: ", differences),
       "; trainer_state.json records the run's): a resume goes on with the same model. To "
       "train the edited model from these weights, start a new run: chainlm train --init ",
       resume_dir, " --out NEW ... (nothing was trained)");
}

}  // namespace chainlm
