#include "train/train_options.h"

#include <cmath>

#include "core/error.h"

namespace chainlm {

nlohmann::json TrainOptions::to_json() const {
  return {{"data_dir", data_dir},
          {"steps", steps},
          {"batch_size", batch_size},
          {"micro_batch", micro_batch},
          {"seq_len", seq_len},
          {"lr", lr},
          {"min_lr_ratio", min_lr_ratio},
          {"warmup", warmup},
          {"lr_schedule_steps", lr_schedule_steps},
          {"weight_decay", weight_decay},
          {"grad_clip", grad_clip},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eval_every", eval_every},
          {"eval_windows", eval_windows},
          {"save_every", save_every},
          {"keep_checkpoints", keep_checkpoints},
          {"seed", seed},
          {"chain_loss_weights", chain_loss_weights},
          {"freeze_chains", freeze_chains},
          {"train_only", train_only},
          {"init", init},
          {"on_nonfinite", on_nonfinite},
          {"max_nonfinite_skips", max_nonfinite_skips},
          {"precision", precision},
          {"sample_every", sample_every},
          {"sample_prompt", sample_prompt},
          {"sample_tokens", sample_tokens},
          {"sample_chains", sample_chains}};
}

FreezeSpec TrainOptions::freeze_spec() const {
  FreezeSpec spec{freeze_chains, train_only == "head"};
  for (size_t i = 0; i < chain_loss_weights.size(); ++i)
    if (chain_loss_weights[i] > 0) spec.used_chains = (int)i + 1;
  return spec;
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  TrainOptions o;
  o.data_dir = j.at("data_dir").get<std::string>();
  o.steps = j.at("steps");
  o.batch_size = j.at("batch_size");
  o.micro_batch = j.at("micro_batch");
  o.seq_len = j.at("seq_len");
  o.lr = j.at("lr");
  o.min_lr_ratio = j.at("min_lr_ratio");
  o.warmup = j.at("warmup");
  // Runs from before the field: their schedule was as long as the run they stored.
  o.lr_schedule_steps = j.value("lr_schedule_steps", o.steps);
  o.weight_decay = j.at("weight_decay");
  o.grad_clip = j.at("grad_clip");
  o.beta1 = j.at("beta1");
  o.beta2 = j.at("beta2");
  o.eval_every = j.at("eval_every");
  o.eval_windows = j.at("eval_windows");
  o.save_every = j.at("save_every");
  o.keep_checkpoints = j.at("keep_checkpoints");
  o.seed = j.at("seed");
  o.chain_loss_weights = j.at("chain_loss_weights").get<std::vector<float>>();
  // Absent in states written before chain tuning existed.
  o.freeze_chains = j.value("freeze_chains", 0);
  o.train_only = j.value("train_only", std::string());
  o.init = j.value("init", std::string());
  o.on_nonfinite = j.value("on_nonfinite", std::string("stop"));
  o.max_nonfinite_skips = j.value("max_nonfinite_skips", 8);
  o.precision = j.value("precision", std::string("fp32"));
  o.sample_every = j.value("sample_every", 0L);
  o.sample_prompt = j.value("sample_prompt", std::string());
  o.sample_tokens = j.value("sample_tokens", 0);
  o.sample_chains = j.value("sample_chains", std::vector<int>());
  return o;
}

// The options' ranges, each refused naming its flag: out of range, most would train without a
// word (a --min-lr-ratio of 2 raised the learning rate over the run, a negative --grad-clip
// or --weight-decay was stored as given).
void TrainOptions::check_ranges() const {
  auto finite_at_least = [](float v, float lo) { return std::isfinite(v) && v >= lo; };
  CHAINLM_CHECK(seq_len >= 0, "--seq-len ", seq_len, " must be >= 0 (0 = the model's max_seq_len)");
  CHAINLM_CHECK(std::isfinite(lr) && lr > 0, "--lr ", lr, " must be a finite number above 0");
  CHAINLM_CHECK(finite_at_least(min_lr_ratio, 0.0f) && min_lr_ratio <= 1.0f, "--min-lr-ratio ",
                min_lr_ratio,
                " must be in [0, 1]: the final learning rate as a fraction of the peak");
  CHAINLM_CHECK(finite_at_least(weight_decay, 0.0f), "--weight-decay ", weight_decay,
                " must be a finite number >= 0");
  CHAINLM_CHECK(finite_at_least(grad_clip, 0.0f), "--grad-clip ", grad_clip,
                " must be a finite number >= 0 (0 = off)");
  CHAINLM_CHECK(warmup >= -1, "--warmup ", warmup, " must be >= 0 (or -1: min(100, steps/10))");
  CHAINLM_CHECK(lr_schedule_steps >= 0, "--lr-schedule-steps ", lr_schedule_steps,
                " must be >= 0 (0 = --steps)");
  CHAINLM_CHECK(eval_every >= 0, "--eval-every ", eval_every,
                " must be >= 0 (0 = only at the end)");
  CHAINLM_CHECK(eval_windows >= 0, "--eval-windows ", eval_windows,
                " must be >= 0 (0 = the whole validation split)");
  CHAINLM_CHECK(save_every >= 0, "--save-every ", save_every,
                " must be >= 0 (0 = at every validation)");
  CHAINLM_CHECK(keep_checkpoints >= 1, "--keep-checkpoints ", keep_checkpoints,
                " must be >= 1 (the run resumes from its newest checkpoint)");
  CHAINLM_CHECK(sample_every >= 0, "--sample-every ", sample_every, " must be >= 0 (0 = off)");
  CHAINLM_CHECK(sample_tokens >= 0, "--sample-tokens ", sample_tokens,
                " must be at least 1 (or 0 for the default)");
  bool any = chain_loss_weights.empty();  // empty: the full model's loss alone
  for (float w : chain_loss_weights) {
    CHAINLM_CHECK(finite_at_least(w, 0.0f), "--chain-loss-weights: ", w,
                  " is not a weight (each must be a finite number >= 0)");
    any = any || w > 0.0f;
  }
  CHAINLM_CHECK(any, "--chain-loss-weights: every weight is zero, so no sub-model would train");
}

}  // namespace chainlm
