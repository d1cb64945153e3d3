// What a command line chainlm cannot parse is told (cli/usage_errors.h): CLI11 said "--model is
// required" for `generate --modle M`, "5 --max-token" were "not expected", and `eval perplexity`
// needed "A subcommand"; the misspelled name now comes first, with the nearest known one.
#include "cli/usage_errors.h"

#include <gtest/gtest.h>

#include <string>

#include "cli/run_cli.h"

namespace chainlm {
namespace {

using testing::contains;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

TEST(UsageErrors, TheNearestNameIsCloseOrNone) {
  const std::vector<std::string> flags = {"--model", "--max-tokens", "--prompt", "--temperature"};
  EXPECT_EQ(cli::nearest_name("--modle", flags), "--model");
  EXPECT_EQ(cli::nearest_name("--max-token", flags), "--max-tokens");
  EXPECT_EQ(cli::nearest_name("--promt", flags), "--prompt");
  EXPECT_EQ(cli::nearest_name("--seed", flags), "");
  EXPECT_EQ(cli::nearest_name("perplexity", {"ppl", "choice", "pairs"}), "");
  EXPECT_EQ(cli::nearest_name("generat", {"train", "generate", "eval"}), "generate");
}

TEST(UsageErrors, TheUnknownNameIsToldFirstWithTheNearest) {
  TempDir dir;
  write_bytes(dir.file("model"), "");
  const std::pair<std::string, std::string> cases[] = {
      {"generate --modle M",
       "unknown option '--modle' for 'chainlm generate' (did you mean --model?)"},
      {"eval ppl --modle M",
       "unknown option '--modle' for 'chainlm eval ppl' (did you mean --model?)"},
      {"generate --model M --max-token 5",
       "unknown option '--max-token' for 'chainlm generate' (did you mean "
       "--max-tokens?)"},
      {"--verison", "unknown option '--verison' for 'chainlm' (did you mean --version?)"},
      {"eval perplexity",
       "unknown command 'eval perplexity'; the eval commands are ppl, choice, pairs"},
      {"generat", "unknown command 'generat' (did you mean generate?); the commands are"},
      {"eval", "'chainlm eval' needs a command: ppl, choice, pairs"},
      // An option given twice: CLI11's "At Most 1 required but received 2" named neither.
      {"train --config c.json --data d --batch-size 4 --batch-size 0 --out r",
       "--batch-size was given 2 times (4, 0); give it once (options: chainlm train --help)"},
      {"serve --model m --api-key s3cret --api-key other",
       "--api-key was given 2 times; give it once (options: chainlm serve --help)"},
      // strtof reads hexadecimal: "--lr 0x10" trained at 16.
      {"train --config c.json --data d --out r --lr 0x10", "--lr: 0x10 is not a decimal number"},
      {"prepare --tokenizer t --input i --out o --val-fraction 0X.1",
       "--val-fraction: 0X.1 is not a decimal number"},
      // A value of the wrong type: CLI11 said "Could not convert: --chains = 99999999999".
      {"generate --model M --chains 99999999999",
       "--chains: '99999999999' is out of range for this option (options: chainlm generate "
       "--help)"},
      {"generate --model M --max-tokens 1.5", "--max-tokens: '1.5' is not a whole number"},
      {"train --config c.json --data d --out r --steps 1e3",
       "--steps: '1e3' is not a whole number"},
      {"generate --model M --temperature warm", "--temperature: 'warm' is not a number"},
      // CLI::Range said "Value abc not in range 1 to 65536".
      {"bench serve --model M --concurrency 1,abc", "--concurrency: 'abc' is not a whole number"},
      {"generate " + dir.file("model"),
       "unexpected argument '" + dir.file("model") +
           "' for 'chainlm generate'; files are given with their option (--model)"},
  };
  for (const auto& [args, says] : cases) {
    auto r = run_chainlm(dir, args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_TRUE(contains(r.err, "error: " + says)) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // What the parse placed but found wrong keeps CLI11's words, with the command's help.
  auto r = run_chainlm(dir, "train --out r --train-only body");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--train-only") && contains(r.err, "body") &&
              contains(r.err, "(options: chainlm train --help)"))
      << r.err;
}

}  // namespace
}  // namespace chainlm
