#pragma once
// How gemm_nt_jobs spreads a parallel region's few-row products over its threads: in units of
// work that the threads take in turn as they finish the last one, rather than a fixed share of
// every product each. A fixed share made every thread wait at the region's end for the slowest:
// in a batched CoLM-Air decoding step on the 2-core AVX2 VM the two threads' finishing times
// differed by 14% of the regions' time (a server's HTTP threads, the host's other guests and
// page faults hold up one core or the other), and libgomp's waits took 15.6% of the samples;
// 9.8% with units (perf of `bench serve --chains mix` at concurrency 8, the same run each).
//
// A unit is one part of a lane: jobs that must run in order on the same columns (the same N,
// weight form and turn: a running sum over column blocks, an up projection whose `then` reads
// the gate's columns) cut alike into `parts` column ranges. Every column is computed the same
// whichever thread takes it and wherever the ranges are cut, so the bits do not change.
#include <vector>

#include "kernels/gemm.h"

namespace chainlm {

// The weight bytes a unit aims at: ~5-10 us of streaming on one core of the machines measured,
// long against the ~0.1 us a thread takes to claim it, short enough to even out a region of a
// few hundred microseconds.
constexpr long kJobUnitWeightBytes = 96L * 1024;

// A lane: jobs order[begin, end) (indices into the region's jobs, in their order), cut into
// `parts` column ranges (job_part_columns).
struct JobLane {
  int begin, end, parts;
};

// The lanes of jobs[0, n), in the order of their first job, into `lanes` and their jobs into
// `order` (both reused). Each lane is cut into `threads` parts, or more, one per
// kJobUnitWeightBytes of its weights, while parts keep at least 16 columns (a panel weight:
// one panel).
void gemm_job_lanes(const GemmNtJob* jobs, int n, int threads, std::vector<JobLane>& lanes,
                    std::vector<int>& order);

// Columns [*n0, *n1) of part `part` of `parts` of a job's N: even ranges, on panel boundaries
// for a weight in panels (threads never write the same panel's outputs). Empty when the part
// has none.
void job_part_columns(const GemmNtJob& g, int part, int parts, int* n0, int* n1);

// Bytes of one weight row of a job (its K in the weight's form).
long job_row_bytes(const GemmNtJob& g);

}  // namespace chainlm
