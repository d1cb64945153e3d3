// Model FLOPs of a training step (model/training_flops.h), against multiply-adds counted by
// hand for tiny models (model_test_util.h's tiny_config: 16 wide and 12 FFN per chain unit,
// head size 8, 2 layers, vocabulary 37), T = 8 tokens so a query attends to 4 keys on average.
#include "model/training_flops.h"

#include <gtest/gtest.h>

#include "model_test_util.h"

namespace chainlm {
namespace {

constexpr int kT = 8;

// Per layer, a LLaMA 16 wide: wq, wk, wv, wo 16x16 each, w1, w3 12x16, w2 16x12 = 1600
// multiply-adds per token; 2 layers 3200; the head 37x16 = 592. Attention: QK^T and AV over
// 4 keys, 16 wide, 2 layers = 256. 6 per multiply-add when everything trains.
TEST(TrainingFlops, ALlamaIsSixTimesItsMultiplyAdds) {
  Model m(test::tiny_config({1}, false));
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {1.0f}), 6.0 * (3200 + 592 + 256));
}

// Chains [1, 1]: chain 2's blocks read both chains, so per layer wq, wk, wv, wo are 16x16 +
// 16x32 = 768 each and w1, w2, w3 192 + 384 = 576 each: 4800, 9600 for 2 layers. Heads 37x16
// and 37x32; attention 4 keys x 2 layers x 32 wide x 2 = 512.
TEST(TrainingFlops, EveryWeightedHeadAndOnlyTrainingPartsCountBackward) {
  Model m(test::tiny_config({1, 1}, false));
  const double trunk2 = 9600, trunk1 = 3200, attn2 = 512, attn1 = 256, head1 = 592, head2 = 1184;
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {1.0f, 1.0f}), 6.0 * (trunk2 + attn2 + head1 + head2));
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {0.0f, 1.0f}), 6.0 * (trunk2 + attn2 + head2));
  // Only sub-model 1 weighted: chain 2 is not computed at all.
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {1.0f, 0.0f}), 6.0 * (trunk1 + attn1 + head1));

  // Chain tuning: chain 1 frozen runs forward only; the head's chain-1 columns get no gradient.
  m.set_freeze({.chains = 1});
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {0.0f, 1.0f}),
                   2.0 * (trunk2 + attn2 + head2) + 4.0 * (trunk2 - trunk1 + attn2 - attn1 + head2 - head1));
  // Head-only: the head's weight gradient alone.
  m.set_freeze({.chains = 0, .head_only = true});
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {0.0f, 1.0f}), 2.0 * (trunk2 + attn2 + head2) + 2.0 * head2);
  EXPECT_THROW(training_flops_per_token(m, kT, {0.0f, 0.0f}), Error);
  EXPECT_THROW(training_flops_per_token(m, kT, {1.0f}), Error);
}

// PHD-SWA-2-4: the trunk runs 2 rows per token, each attending 8/2 x 2 originals' rows plus
// its window of 4 and its own copy (13 keys); the head runs once.
TEST(TrainingFlops, PhdRunsTheTrunkOnEveryCopy) {
  ModelConfig c = test::tiny_config({1}, false);
  c.phd.repeat = 2;
  c.phd.window = 4;
  Model m(c);
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, kT, {1.0f}), 6.0 * (2 * 3200 + 592 + 2.0 * 2 * 13 * 16));
}

}  // namespace
}  // namespace chainlm
