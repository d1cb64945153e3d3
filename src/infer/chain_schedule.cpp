#include "infer/chain_schedule.h"

#include "core/error.h"
#include "core/text_list.h"

namespace chainlm {

namespace {

// Spaces around a number are allowed (" 1 : 3, 2"), as in the other number lists.
int parse_int(const std::string& raw, const std::string& segment) {
  const std::string s = trim_blanks(raw);
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(s, &used);
  } catch (const std::out_of_range&) {  // digits, but past an int: said as such
    fail("chain schedule: '", segment, "': ", s, " is too large");
  } catch (const std::logic_error&) {
    used = 0;
  }
  CHAINLM_CHECK(used == s.size() && !s.empty(), "chain schedule: '", segment,
                "' is not of the form K or K:COUNT with integers");
  return v;
}

}  // namespace

ChainSchedule ChainSchedule::parse(const std::string& text, int n_chains) {
  ChainSchedule s;
  for (const std::string& seg : split_list(text, "chain schedule")) {
    CHAINLM_CHECK(s.segments_.empty() || s.segments_.back().second >= 0, "chain schedule '", text,
                  "': only the last segment may omit its token count");
    const size_t colon = seg.find(':');
    const int k = parse_int(seg.substr(0, colon), seg);
    int count = -1;
    if (colon != std::string::npos) {
      count = parse_int(seg.substr(colon + 1), seg);
      CHAINLM_CHECK(count > 0, "chain schedule: segment '", seg, "' needs a positive token count");
    }
    CHAINLM_CHECK(k >= 1 && k <= n_chains, "chain schedule: segment '", seg, "' asks for ", k,
                  " chains; the model has 1..", n_chains);
    s.segments_.push_back({k, count});
  }
  CHAINLM_CHECK(!s.segments_.empty(), "chain schedule is empty");
  return s;
}

int ChainSchedule::chains_for(int i) const {
  for (const auto& [k, count] : segments_) {
    if (count < 0 || i < count) return k;
    i -= count;
  }
  return segments_.back().first;  // past the listed counts: keep the last sub-model
}

}  // namespace chainlm
