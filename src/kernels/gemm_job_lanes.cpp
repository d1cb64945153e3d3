#include "kernels/gemm_job_lanes.h"

#include <algorithm>

#include "kernels/gemm_panels.h"
#include "kernels/quant.h"

namespace chainlm {

namespace {

// Columns a part keeps at least (unless the lane has fewer than one per thread): a few-row
// kernel's tiles are 1-3 weight rows, and a range's end costs a partial tile.
constexpr int kMinPartColumns = 16;

bool in_panels(const GemmNtJob& g) {
  return g.B.panels && !g.B.bf16 && !g.B.quant;
}

// The panel a job's first column falls in, or -1: jobs split alike only with the same phase.
int panel_phase(const GemmNtJob& g) {
  return in_panels(g) ? g.B.panel_row : -1;
}

bool same_lane(const GemmNtJob& a, const GemmNtJob& b) {
  return a.N == b.N && a.turn == b.turn && panel_phase(a) == panel_phase(b);
}

}  // namespace

long job_row_bytes(const GemmNtJob& g) {
  if (g.B.quant) return (long)quant_row_bytes(g.B.quant_type, g.K);
  return (long)g.K * (g.B.bf16 ? sizeof(bf16_t) : sizeof(float));
}

void job_part_columns(const GemmNtJob& g, int part, int parts, int* n0, int* n1) {
  if (in_panels(g)) {
    panel_column_share(g.B.panel_row, g.N, part, parts, n0, n1);
    return;
  }
  *n0 = (int)((long)g.N * part / parts);
  *n1 = (int)((long)g.N * (part + 1) / parts);
}

void gemm_job_lanes(const GemmNtJob* jobs, int n, int threads, std::vector<JobLane>& lanes,
                    std::vector<int>& order) {
  lanes.clear();
  order.clear();
  // first[l]: lane l's first job, which the others are compared with. Kept from call to call,
  // as the caller's vectors: a decoding step makes ~40 calls.
  thread_local std::vector<int> first, lane_of;
  first.clear();
  lane_of.resize(n);
  for (int j = 0; j < n; ++j) {
    int l = 0;
    while (l < (int)first.size() && !same_lane(jobs[first[l]], jobs[j])) ++l;
    if (l == (int)first.size()) first.push_back(j);
    lane_of[j] = l;
  }
  for (int l = 0; l < (int)first.size(); ++l) {
    const GemmNtJob& head = jobs[first[l]];
    const int begin = (int)order.size();
    long bytes = 0;
    for (int j = first[l]; j < n; ++j)
      if (lane_of[j] == l) {
        order.push_back(j);
        bytes += (long)head.N * job_row_bytes(jobs[j]);
      }
    // Panels: at most one part per panel the columns touch; else kMinPartColumns each.
    const int most = in_panels(head) ? (head.B.panel_row + head.N + kPanel - 1) / kPanel
                                     : head.N / kMinPartColumns;
    const int by_bytes = (int)std::min<long>(bytes / kJobUnitWeightBytes, 1 << 20);
    lanes.push_back({begin, (int)order.size(), std::max(threads, std::min(by_bytes, most))});
  }
}

}  // namespace chainlm
