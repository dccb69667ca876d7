// Runs the CUDA HCO kernels (csrc/cuda/hco_kernels.cuh) on the host block emulator
// (csrc/cuda/device_compat.cuh: one std::thread per CUDA thread, std::barrier for
// __syncthreads) through the same launch sequences as the CUDA op (hco_launch.cuh), and
// compares forward and dE with a naive float64 evaluation of the HCO. Covers the fused
// plane path and the line path (forced, and chosen by a small shared-memory limit),
// float and double, odd / prime / 1-wide / H != W shapes and channel tails.
// No GPU and no libtorch needed: g++ -std=c++20 -O2 -pthread -Icsrc.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/hco_launch.cuh"

using vheat::cuda::EmulatedLaunch;
using vheat::cuda::HcoPath;
using vheat::cuda::HcoShape;

// bfloat16 on the host (round to nearest even, as the device conversions), so the fused
// kernels run their bf16 tensor-core path on the emulator.
struct HostBf16 {
  uint16_t bits = 0;
  HostBf16() = default;
  HostBf16(float v) : bits(vheat::cuda::emu::bf16_bits(v)) {}
  HostBf16(double v) : HostBf16(static_cast<float>(v)) {}
  operator float() const { return vheat::cuda::emu::bf16_value(bits); }
};
template <>
struct vheat::cuda::MmaKindOf<HostBf16> {
  static constexpr MmaKind value = MmaKind::kBf16;
};
// IEEE half on the host (_Float16 rounds to nearest even, as cvt.rn.f16x2.f32).
struct HostFp16 {
  _Float16 v = 0;
  HostFp16() = default;
  HostFp16(float f) : v(static_cast<_Float16>(f)) {}
  HostFp16(double f) : HostFp16(static_cast<float>(f)) {}
  operator float() const { return static_cast<float>(v); }
};
template <>
struct vheat::cuda::MmaKindOf<HostFp16> {
  static constexpr MmaKind value = MmaKind::kFp16;
};

namespace {

int failures = 0;

void expect(bool ok, const char* what, const HcoShape& s, const char* detail, double err = 0.0, double tol = 0.0) {
  if (!ok) {
    ++failures;
    std::printf("FAIL %s shape (%ld, %ld, %ld, %ld) %s err %.3g tol %.3g\n", what, long(s.B), long(s.H), long(s.W),
                long(s.C), detail, err, tol);
  }
}

double coef(int k, int i, int n) {
  const double scale = k == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
  return scale * std::cos(M_PI * (i + 0.5) * k / n);
}

// DCT2 (inverse = false) or its inverse over H and W of each (b, c) plane, in double.
std::vector<double> dct2(const HcoShape& s, const std::vector<double>& in, bool inverse) {
  const int64_t B = s.B, H = s.H, W = s.W, C = s.C;
  std::vector<double> tmp(in.size(), 0.0), out(in.size(), 0.0);
  auto at = [&](int64_t b, int64_t h, int64_t w, int64_t c) { return ((b * H + h) * W + w) * C + c; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < W; ++j)
        for (int64_t i = 0; i < W; ++i)
          for (int64_t c = 0; c < C; ++c)
            tmp[at(b, h, j, c)] += (inverse ? coef(i, j, W) : coef(j, i, W)) * in[at(b, h, i, c)];
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c)
            out[at(b, j, w, c)] += (inverse ? coef(i, j, H) : coef(j, i, H)) * tmp[at(b, i, w, c)];
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

template <typename T>
double max_err(const std::vector<T>& got, const std::vector<double>& want) {
  double e = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(static_cast<std::conditional_t<std::is_same_v<T, double>, double, float>>(got[i]));
    e = std::isfinite(g) ? std::max(e, std::abs(g - want[i])) : INFINITY;
  }
  return e;
}

// Max error allowed relative to 1 + max |oracle| (vheat_kernels/testing.py, the cuda backend's tolerance).
template <typename T>
constexpr double tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  else if constexpr (std::is_same_v<T, float>) return 2e-6;
  else if constexpr (std::is_same_v<T, HostFp16>) return 2e-3;
  else return 1.6e-2;
}

// Input layouts the op reads in place (channel stride 1): contiguous, or Heat2D's chunk
// view of a linear output of 2C channels (x: the second chunk, so the view starts C
// elements in; dy: the first chunk, with a padded batch stride so x and dy differ).
enum class Layout { kContiguous, kChunkView };

// Copies the contiguous (B, H, W, C) `values` into a buffer with the layout's strides;
// everything outside the view is NaN, so a kernel reading the wrong element fails.
template <typename T>
struct StridedInput {
  std::vector<T> storage;
  vheat::cuda::PlaneStrides strides;
  int64_t offset = 0;
  const T* data() const { return storage.data() + offset; }
  StridedInput(const std::vector<T>& values, const HcoShape& s, Layout layout, bool second_chunk) {
    if (layout == Layout::kContiguous) {
      storage = values;
      strides = vheat::cuda::contiguous_strides(s);
      return;
    }
    const int64_t sw = 2 * s.C, sh = s.W * sw, sb = s.H * sh + (second_chunk ? 0 : 8);
    strides = {sb, sh, sw};
    offset = second_chunk ? s.C : 0;
    storage.assign(std::max<int64_t>(s.B * sb, 1) + 2 * s.C + 8, T(NAN));
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t w = 0; w < s.W; ++w)
          for (int64_t c = 0; c < s.C; ++c)
            storage[offset + b * sb + h * sh + w * sw + c] = values[((b * s.H + h) * s.W + w) * s.C + c];
  }
};

template <typename T>
void check_shape(const HcoShape& s, size_t smem_limit, bool force_lines, int max_threads, std::mt19937& rng,
                 Layout layout = Layout::kContiguous, bool all_backward_variants = true) {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  constexpr bool kSplit16 = vheat::cuda::is_16bit(vheat::cuda::MmaKindOf<T>::value);
  const int failures_before = failures;
  const double tol = tolerance<T>();
  const char* tname = std::is_same_v<T, float>      ? "float"
                      : std::is_same_v<T, double>   ? "double"
                      : std::is_same_v<T, HostFp16> ? "fp16"
                                                    : "bf16";
  const char* lname = layout == Layout::kContiguous ? "contiguous" : "chunk-view";
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> x(s.numel()), gy(s.numel()), E(s.plane());
  for (auto& v : x) v = normal(rng);
  for (auto& v : gy) v = normal(rng);
  for (auto& v : E) v = unit(rng);
  std::vector<T> xt(x.begin(), x.end()), gyt(gy.begin(), gy.end());
  std::vector<acc_t> Et(E.begin(), E.end());
  // Rounded inputs feed the oracle too, so only the kernel's arithmetic is measured.
  for (size_t i = 0; i < x.size(); ++i) x[i] = acc_t(xt[i]), gy[i] = acc_t(gyt[i]);
  for (size_t i = 0; i < E.size(); ++i) E[i] = Et[i];
  const StridedInput<T> xin(xt, s, layout, true), gyin(gyt, s, layout, false);

  // oracle: y = HCO(x, E), dx = HCO(gy, E), dE = sum_b DCT2(x_b) * DCT2(gy_b)
  std::vector<double> X = dct2(s, x, false), G = dct2(s, gy, false), Y(X.size()), GE(G.size()), dE(s.plane(), 0.0);
  for (int64_t i = 0; i < s.numel(); ++i) Y[i] = X[i] * E[i % s.plane()], GE[i] = G[i] * E[i % s.plane()];
  const std::vector<double> y = dct2(s, Y, true), dx = dct2(s, GE, true);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t p = 0; p < s.plane(); ++p) dE[p] += X[b * s.plane() + p] * G[b * s.plane() + p];

  const EmulatedLaunch launch{max_threads};
  char detail[128], fwd_detail[128] = "", bwd_detail[128] = "";
  double rel_fwd = 0, rel_dx = 0, rel_dE = 0;  // error / bound, reported on success
  {
    const auto plan = vheat::cuda::plan_forward(s, sizeof(acc_t), kSplit16, smem_limit, force_lines);
    std::vector<T> out(s.numel(), T(NAN));
    std::vector<acc_t> ws(plan.workspace_elems);
    vheat::cuda::run_forward(launch, s, plan, xin.data(), xin.strides, Et.data(), out.data(), ws.data());
    std::snprintf(detail, sizeof detail, "%s %s %s tc=%d", tname, lname, plan.path == HcoPath::kFused ? "fused" : "lines",
                  plan.path == HcoPath::kFused ? plan.fused.tc : plan.line_w.tc);
    const double err = max_err(out, y), bound = tol * (1 + max_abs(y));
    expect(err <= bound, "forward", s, detail, err, bound);
    rel_fwd = err / bound;
    std::snprintf(fwd_detail, sizeof fwd_detail, "%s", detail);
    if (force_lines) expect(plan.path == HcoPath::kLines, "forward plan", s, "expected the line path");
  }
  // Backward: dx and dE together, dE alone, dx alone. A low block target makes several
  // batches share a chunk (bchunk > 1) and several chunks need the reduce.
  for (const auto [need_dx, need_dE] : {std::pair{true, true}, std::pair{false, true}, std::pair{true, false}}) {
    if (!all_backward_variants && !(need_dx && need_dE)) continue;
    const auto plan = vheat::cuda::plan_backward(s, sizeof(acc_t), kSplit16, smem_limit, need_dx, need_dE,
                                                 force_lines, s.B > 2 ? 2 : 1024);
    std::vector<T> dx_out(need_dx ? s.numel() : 0, T(NAN));
    std::vector<acc_t> dE_out(need_dE ? s.plane() : 0, acc_t(NAN)), ws(plan.workspace_elems);
    vheat::cuda::run_backward(launch, s, plan, xin.data(), xin.strides, gyin.data(), gyin.strides, Et.data(),
                              need_dx ? dx_out.data() : nullptr, need_dE ? dE_out.data() : nullptr, ws.data());
    std::snprintf(detail, sizeof detail, "%s %s %s dx=%d dE=%d chunks=%ld x %ld", tname, lname,
                  plan.path == HcoPath::kFused ? "fused" : "lines", int(need_dx), int(need_dE), long(plan.nchunks),
                  long(plan.bchunk));
    if (need_dx) {
      const double err = max_err(dx_out, dx), bound = tol * (1 + max_abs(dx));
      expect(err <= bound, "grad_x", s, detail, err, bound);
      rel_dx = std::max(rel_dx, err / bound);
    }
    if (need_dE) {
      const double err = max_err(dE_out, dE), bound = tol * (1 + max_abs(dE)) * std::sqrt(double(std::max<int64_t>(s.B, 1)));
      expect(err <= bound, "grad_E", s, detail, err, bound);
      rel_dE = std::max(rel_dE, err / bound);
    }
    if (need_dx && need_dE) std::snprintf(bwd_detail, sizeof bwd_detail, "%s", detail);
  }
  if (failures == failures_before)
    std::printf("ok %s (%ld, %ld, %ld, %ld) smem_limit=%zu force_lines=%d max_threads=%d: forward %s, backward %s; "
                "error / bound forward %.3f, dx %.3f, dE %.3f\n", tname, long(s.B), long(s.H), long(s.W), long(s.C),
                smem_limit, int(force_lines), max_threads, fwd_detail, bwd_detail, rel_fwd, rel_dx, rel_dE);
}

// Launch counting: runs the op's kernel sequence with a launcher that records each
// launch (kernel, blocks) instead of executing it.
struct CountingLaunch {
  int* launches;
  template <typename... KArgs, typename... Args>
  void operator()(void (*)(KArgs...), int64_t blocks, int, size_t, Args...) const {
    if (blocks > 0) ++*launches;
  }
};

template <typename T>
void count_launches(const char* tname, const char* arch, size_t smem_limit, const HcoShape& s) {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  constexpr bool kSplit16 = vheat::cuda::is_16bit(vheat::cuda::MmaKindOf<T>::value);
  int forward = 0, backward = 0;
  const auto fp = vheat::cuda::plan_forward(s, sizeof(acc_t), kSplit16, smem_limit);
  vheat::cuda::run_forward(CountingLaunch{&forward}, s, fp, static_cast<const T*>(nullptr),
                           vheat::cuda::contiguous_strides(s), static_cast<const acc_t*>(nullptr),
                           static_cast<T*>(nullptr), static_cast<acc_t*>(nullptr));
  const auto bp = vheat::cuda::plan_backward(s, sizeof(acc_t), kSplit16, smem_limit, true, true);
  vheat::cuda::run_backward(CountingLaunch{&backward}, s, bp, static_cast<const T*>(nullptr),
                            vheat::cuda::contiguous_strides(s), static_cast<const T*>(nullptr),
                            vheat::cuda::contiguous_strides(s), static_cast<const acc_t*>(nullptr),
                            static_cast<T*>(nullptr), static_cast<acc_t*>(nullptr), static_cast<acc_t*>(nullptr));
  std::printf("launches %s %s (%ld, %ld, %ld, %ld) forward %d %s tc=%d backward %d %s tc=%d chunks=%ld\n", arch, tname,
              long(s.B), long(s.H), long(s.W), long(s.C), forward, fp.path == HcoPath::kFused ? "fused" : "lines",
              fp.fused.tc, backward, bp.path == HcoPath::kFused ? "fused" : "lines", bp.fused.tc, long(bp.nchunks));
}

// Every vHeat classification plane (224 px: 56, 28, 14, 7) at the T/S/B channel counts,
// every dtype, the batch sizes of inference and training, both architectures' limits.
void count_classification_launches() {
  const std::pair<const char*, size_t> archs[] = {{"sm_80", 163 * 1024}, {"sm_90", 227 * 1024}};
  for (const auto& [arch, limit] : archs)
    for (int64_t side : {56, 28, 14, 7})
      for (int64_t C : {96, 128, 192, 256, 384, 512, 768, 1024})
        for (int64_t B : {1, 2, 3, 17, 64, 128}) {
          const HcoShape s{B, side, side, C};
          count_launches<float>("float", arch, limit, s);
          count_launches<HostBf16>("bf16", arch, limit, s);
          count_launches<HostFp16>("fp16", arch, limit, s);
          count_launches<double>("double", arch, limit, s);
        }
}

void check_plans() {
  const size_t h100 = 227 * 1024;
  HcoShape stage1{64, 56, 56, 96}, stage4{64, 7, 7, 768}, det{2, 200, 304, 96};
  const auto f1 = vheat::cuda::plan_forward(stage1, 4, false, h100);
  expect(f1.path == HcoPath::kFused && f1.fused.smem <= vheat::cuda::kSoftSmemBudget, "plan", stage1,
         "stage-1 forward should be fused within the soft budget");
  const auto f4 = vheat::cuda::plan_forward(stage4, 4, false, h100);
  expect(f4.path == HcoPath::kFused && f4.fused.tc == 32, "plan", stage4, "7x7 forward should use tc=32");
  const auto fd = vheat::cuda::plan_forward(det, 4, false, h100);
  expect(fd.path == HcoPath::kLines && fd.line_w.tc > 0 && fd.line_h.tc > 0, "plan", det,
         "200x304 planes should take the line path");
  const auto g1 = vheat::cuda::plan_backward(stage1, 4, false, h100, true, true);
  expect(g1.path == HcoPath::kFused && g1.nchunks * g1.bchunk >= stage1.B && (g1.nchunks - 1) * g1.bchunk < stage1.B,
         "plan", stage1, "backward chunks must cover the batch exactly");
  const auto g0 = vheat::cuda::plan_backward({0, 7, 7, 96}, 4, true, h100, true, true);
  expect(g0.path == HcoPath::kFused && g0.nchunks == 0 && g0.fused.blocks == 0 && g0.reduce.blocks > 0, "plan",
         {0, 7, 7, 96}, "B = 0: no backward block, the reduce writes dE = 0");
  const auto d8 = vheat::cuda::plan_forward({1, 8192, 8192, 1}, 8, false, h100);
  expect(d8.line_w.tc == 1 && d8.line_h.tc == 1, "plan", {1, 8192, 8192, 1}, "kMaxAxis fp64 lines must fit");
}

void run_small_shapes(size_t big, size_t tiny, std::mt19937& rng) {
  // {2, 6, 5, 24}, {2, 7, 7, 24}, {1, 14, 14, 16}: C and the channel tile multiples of 16
  // bytes (vectorised tile loads, in the chunk view too); 7 x 7 and 14 x 14 are vHeat
  // stage-3/4 planes; B = 0 must give dE = 0.
  const HcoShape shapes[] = {{2, 5, 7, 3}, {1, 1, 6, 5}, {3, 13, 1, 2}, {2, 8, 8, 37}, {1, 11, 17, 9}, {5, 3, 2, 1},
                             {2, 6, 5, 24}, {0, 5, 7, 3}, {2, 7, 7, 24}, {1, 14, 14, 16}};
  const Layout plain = Layout::kContiguous, view = Layout::kChunkView;
  // Threads per block: the planned count (64-256) for float, a prime cap for double so
  // block-stride loops wrap unevenly (and the emulation stays fast).
  for (const auto& s : shapes) {
    check_shape<float>(s, big, false, 0, rng, plain);  // fused: 3xTF32 tensor-core transforms
    check_shape<float>(s, big, false, 0, rng, view);
    check_shape<float>(s, big, true, 0, rng, view);
    check_shape<HostBf16>(s, big, false, 0, rng, view);   // fused: bf16 tensor-core transforms
    check_shape<HostBf16>(s, big, true, 0, rng, plain);   // lines: bf16 tensor-core transforms
    check_shape<HostFp16>(s, big, false, 0, rng, plain);  // fused: fp16 tensor-core transforms
    check_shape<HostFp16>(s, big, true, 0, rng, view);
    check_shape<double>(s, big, false, 7, rng, view);
    check_shape<double>(s, tiny, false, 7, rng, plain);  // 2 KiB: the larger planes take the line path
    check_shape<double>(s, big, true, 7, rng, view);
  }
}

}  // namespace

// No argument: the small awkward shapes. "vheat": the vHeat-size plans. "launches": the
// launch counts of every classification plane (no kernel runs).
int main(int argc, char** argv) {
  std::mt19937 rng(20240525u);
  const size_t big = 227 * 1024, tiny = 2 * 1024;
  if (argc > 1 && std::string(argv[1]) == "vheat") {
    // Stage planes of 56 x 56 and 28 x 28 (fused, tensor cores) and a 200 x 334 detection
    // plane (line path), in fp32 and bf16.
    // Inputs in Heat2D's chunk view, as the model passes them.
    for (const HcoShape& s : {HcoShape{1, 56, 56, 8}, HcoShape{2, 28, 28, 12}}) {
      check_shape<float>(s, big, false, 0, rng, Layout::kChunkView, false);
      check_shape<HostBf16>(s, big, false, 0, rng, Layout::kChunkView, false);
    }
    check_shape<float>({1, 200, 334, 2}, big, false, 32, rng);
    check_shape<HostBf16>({1, 200, 334, 2}, big, false, 32, rng);
  } else if (argc > 1 && std::string(argv[1]) == "launches") {
    count_classification_launches();
  } else {
    check_plans();
    run_small_shapes(big, tiny, rng);
  }
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all emulated CUDA kernel checks passed\n");
  return 0;
}
