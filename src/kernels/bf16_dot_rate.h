#pragma once
// How fast this CPU's AVX512-BF16 dot product runs against its fp32 FMA. One vdpbf16ps does
// twice an FMA's arithmetic (32 products into 16 sums), but cores issue it at different rates:
// AMD Zen 4 and Zen 5 as often as an FMA (bf16 GEMMs at ~2x fp32), Intel's Sapphire and Emerald
// Rapids on one port against the FMA's two (~0.5x: bf16 GEMMs at half the fp32 rate, for
// which those CPUs have AMX). No CPUID bit tells them apart, so it is measured: docs/precision.md.

namespace chainlm {

// The ratio of vdpbf16ps's floating-point operations per second to vfmadd's on one core, each
// over 512-bit registers with enough independent sums to fill the pipelines: ~2 on Zen 4, ~0.5
// on an Emerald Rapids. Measured once per process (a few milliseconds; each side's best of
// several interleaved timings, so a busy core does not tip it); 0 in builds without
// AVX512-BF16.
double bf16_dot_flops_ratio();

// Whether a bf16 dot product at this ratio does enough more arithmetic per second than the FMA
// to pay for rounding its operands (the ratios seen are ~2 and ~0.5, far on either side).
inline bool bf16_dot_outruns_fma(double dot_flops_ratio) {
  return dot_flops_ratio >= 1.25;
}

// Whether large bf16 GEMMs run on oneDNN's bf16 kernels for this ISA (onednn_isa()) and
// measured ratio: always with AMX, with AVX512-BF16 only where its dot product outruns the
// fp32 FMA; else the bf16-rounded operands go through the fp32 kernels, which then run faster
// than the bf16 ones.
bool bf16_large_gemm_native(const char* onednn_isa, double dot_flops_ratio);

}  // namespace chainlm
