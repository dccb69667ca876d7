// Fused CPU kernels of the Heat Conduction Operator, registered as the CPU
// implementation of vheat::hco_forward / vheat::hco_backward (schema: csrc/ops.cpp).
//
// Work is split into (batch, block of kLanes channels) planes. Each plane is gathered
// once from the channels-last input into an fp32 (fp64 for double) (H, W, lanes)
// buffer that stays in cache, transformed (DCT over W then H), attenuated, transformed
// back and written once. Inputs (x, grad_y, a saved spectrum) are read at their own
// strides when their channels are adjacent (with_adjacent_channels): a view such as
// Heat2D's chunk of its linear output costs no copy. Outputs are contiguous. The readable
// reference is vheat_kernels/reference.py.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <malloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "../compute_dtype.h"
#include "fft_path.h"
#include "plane_kernels.h"

namespace vheat::cpu {
namespace {

// ---- instruction-set dispatch ---------------------------------------------------
template <typename T>
struct PlaneOps {
  void (*dct2)(const AxisTables<T>&, const AxisTables<T>&, const T*, int64_t, int64_t, T*, T*);
  void (*idct2)(const AxisTables<T>&, const AxisTables<T>&, T*, T*, int64_t, int64_t, T*);
  void (*small_run)(int, int, const SmallRunArgs<T>&);
};

bool cpu_has(const char* isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return std::strcmp(isa, "generic") == 0;
}

// The widest instruction set this CPU runs, or $VHEAT_CPU_ISA (generic, avx2, avx512) so that
// tests can exercise every build on one machine.
template <typename T>
PlaneOps<T> select_plane_ops() {
  const char* forced = std::getenv("VHEAT_CPU_ISA");
  std::string isa = forced && *forced ? forced : (cpu_has("avx512") ? "avx512" : cpu_has("avx2") ? "avx2" : "generic");
  TORCH_CHECK(isa == "generic" || isa == "avx2" || isa == "avx512", "VHEAT_CPU_ISA=", isa,
              " is not an instruction set of the CPU kernels; accepted: generic, avx2, avx512");
  TORCH_CHECK(cpu_has(isa.c_str()), "VHEAT_CPU_ISA=", isa, " but this CPU does not support it");
  if (isa == "avx512") return {avx512::dct2_plane<T>, avx512::idct2_plane<T>, avx512::small_run_hco<T>};
  if (isa == "avx2") return {avx2::dct2_plane<T>, avx2::idct2_plane<T>, avx2::small_run_hco<T>};
  return {generic::dct2_plane<T>, generic::idct2_plane<T>, generic::small_run_hco<T>};
}

template <typename T>
const PlaneOps<T>& plane_ops() {
  static const PlaneOps<T> ops = select_plane_ops<T>();
  return ops;
}

// ---- cosine tables, built in double once per (N, type) ----------------------------
template <typename T>
struct AxisStorage {
  std::vector<T> even, odd, even_t, odd_t, rot_cos, rot_sin, dense;
  std::shared_ptr<const AxisStorage<T>> half, quarter;
  AxisTables<T> tables;
};

template <typename T>
std::shared_ptr<const AxisStorage<T>> axis_tables(int n);

// Dense (r x r) block of the orthonormal DCT-II of length n, rows k = 2q + parity, and its
// transpose.
template <typename T>
void dense_block(int n, int r, int parity, std::vector<T>& m, std::vector<T>& m_t) {
  m.resize(size_t(r) * r);
  m_t.resize(size_t(r) * r);
  for (int q = 0; q < r; ++q)
    for (int i = 0; i < r; ++i) {
      const int k = 2 * q + parity;
      const double scale = k == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
      const T c = T(scale * std::cos(M_PI * (i + 0.5) * k / n));
      m[size_t(q) * r + i] = c;
      m_t[size_t(i) * r + q] = c;
    }
}

template <typename T>
std::shared_ptr<const AxisStorage<T>> build_axis(int n) {
  auto s = std::make_shared<AxisStorage<T>>();
  const int ne = (n + 1) / 2, no = n / 2;
  const bool recurse = n % 2 == 0 && n >= kRecurseMin;
  if (recurse) {
    s->half = axis_tables<T>(n / 2);
  } else {
    dense_block(n, ne, 0, s->even, s->even_t);
  }
  if (recurse && no % 2 == 0) {
    s->quarter = axis_tables<T>(no / 2);
    for (int i = 0; i < no / 2; ++i) {
      s->rot_cos.push_back(T(std::cos(M_PI * (2 * i + 1) / (2.0 * n))));
      s->rot_sin.push_back(T(std::sin(M_PI * (2 * i + 1) / (2.0 * n))));
    }
  } else {
    dense_block(n, no, 1, s->odd, s->odd_t);
  }
  if (n <= kDenseSideMax) {
    s->dense.resize(size_t(n) * n);
    for (int k = 0; k < n; ++k)
      for (int i = 0; i < n; ++i)
        s->dense[size_t(k) * n + i] = T((k == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n)) * std::cos(M_PI * (i + 0.5) * k / n));
  }
  auto ptr = [](const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); };
  s->tables = {n, ne, no, ptr(s->even), ptr(s->odd), ptr(s->even_t), ptr(s->odd_t),
               s->half ? &s->half->tables : nullptr, s->quarter ? &s->quarter->tables : nullptr,
               ptr(s->rot_cos), ptr(s->rot_sin), ptr(s->dense)};
  return s;
}

// ---- giving freed heap back -------------------------------------------------------
// glibc keeps what is freed in its arenas (one per allocating thread: the workers'
// workspaces, the tables), and after a large free it raises its mmap threshold, so later
// buffers up to 32 MB (this op's workspaces, torch's tensors around it) come from the arenas
// too. A process that meets many sizes crept: forward + backward over 200 sizes, three
// passes, 348 -> 382 -> 441 MB, of which malloc_trim gave back all but 59 MB. So an op that
// runs at a plane size none of the last kRecentSizes calls had (the holes left by earlier
// sizes are what creeps), or after kTrimAfterBytes have been freed here (a workspace
// outgrown or dropped after a large call, an evicted table), ends by asking glibc how much
// its arenas hold free, and gives it back with malloc_trim from kTrimAfterBytes on. Trimming
// at every new size doubled the time of a 100-size loop (the pages fault back in); this
// way a process holds at most about kTrimAfterBytes of free heap, and one that keeps meeting
// the same sizes (a classifier, a training run) never asks.
constexpr size_t kTrimAfterBytes = size_t(64) << 20;
constexpr size_t kRecentSizes = 16;
std::atomic<size_t> freed_bytes{0};

void note_freed(size_t bytes) { freed_bytes.fetch_add(bytes, std::memory_order_relaxed); }

// Whether (H, W) is new among the plane sizes of the last kRecentSizes calls (and remember it).
bool is_new_plane_size(int64_t H, int64_t W) {
  static std::mutex mutex;
  static std::list<std::pair<int64_t, int64_t>> recent;  // most recent first
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = recent.begin(); it != recent.end(); ++it)
    if (it->first == H && it->second == W) {
      recent.splice(recent.begin(), recent, it);
      return false;
    }
  recent.emplace_front(H, W);
  if (recent.size() > kRecentSizes) recent.pop_back();
  return true;
}

// Declared first in an op's body: checks when the op ends, whichever way it returns.
class GiveBackFreedHeapAtEnd {
 public:
  GiveBackFreedHeapAtEnd(int64_t H, int64_t W) : new_size_(is_new_plane_size(H, W)) {}
  ~GiveBackFreedHeapAtEnd() {
#if defined(__GLIBC__)
    const bool freed_enough = freed_bytes.load(std::memory_order_relaxed) >= kTrimAfterBytes;
    if (new_size_ || freed_enough) {
      freed_bytes.store(0, std::memory_order_relaxed);
      if (mallinfo2().fordblks >= kTrimAfterBytes) malloc_trim(0);
    }
#endif
  }

 private:
  bool new_size_;
};

// Bounded LRU cache of axis tables: a long-running process that sees many sizes (detection
// inputs of every aspect ratio) keeps the most recently used lengths up to kCachedTableBytes
// per dtype; an evicted table still in use by a running call stays alive through its
// shared_ptr. An entry is O(N) rotation cosines plus dense blocks of at most
// 4 kDenseBlockMax^2 values (2.4 MB in fp32), since larger blocks take the FFT path.
constexpr size_t kCachedTableBytes = size_t(32) << 20;

template <typename T>
size_t table_bytes(const AxisStorage<T>& s) {
  return sizeof(T) * (s.even.size() + s.odd.size() + s.even_t.size() + s.odd_t.size() + s.rot_cos.size() +
                      s.rot_sin.size() + s.dense.size());
}

template <typename T>
std::shared_ptr<const AxisStorage<T>> axis_tables(int n) {
  static std::recursive_mutex mutex;  // build_axis recurses into axis_tables(n / 2)
  static std::list<std::pair<int, std::shared_ptr<const AxisStorage<T>>>> lru;  // most recent first
  static size_t bytes = 0;
  std::lock_guard<std::recursive_mutex> lock(mutex);
  for (auto it = lru.begin(); it != lru.end(); ++it)
    if (it->first == n) {
      lru.splice(lru.begin(), lru, it);
      return lru.front().second;
    }
  auto tables = build_axis<T>(n);
  lru.emplace_front(n, tables);
  bytes += table_bytes(*tables);
  while (bytes > kCachedTableBytes && lru.size() > 1) {
    bytes -= table_bytes(*lru.back().second);
    note_freed(table_bytes(*lru.back().second));
    lru.pop_back();
  }
  return tables;
}

// Side of the largest dense DCT block build_axis would make for length n (the even/odd
// split recurses for even n >= kRecurseMin; what remains is dense).
int largest_dense_block(int n) {
  if (n % 2 != 0 || n < kRecurseMin) return (n + 1) / 2;
  const int no = n / 2;
  const int odd = no % 2 == 0 ? largest_dense_block(no / 2) : no;
  return std::max(largest_dense_block(n / 2), odd);
}

// Sides whose dense blocks exceed kDenseBlockMax (odd lengths above about 2 x that, or 2^k
// times one) run through ATen's FFT (fft_path.h): O(N log N) time, O(N) tables. A dense
// block costs O(side) per point but runs at full SIMD width across channels, so it stays
// ahead of the FFT up to blocks of a few hundred points. The limit keeps a margin below the
// one-thread crossover, near a block of 450 (the measurements are in CHANGELOG.md).
constexpr int kDenseBlockMax = 384;

bool uses_fft_path(int64_t H, int64_t W) {
  return largest_dense_block(int(H)) > kDenseBlockMax || largest_dense_block(int(W)) > kDenseBlockMax;
}

// ---- input checks ---------------------------------------------------------------
void check_inputs(const at::Tensor& x, const at::Tensor& E, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be channels-last (B, H, W, C), got shape ", x.sizes());
  TORCH_CHECK(E.dim() == 3, op, ": E must be (H, W, C), got shape ", E.sizes());
  TORCH_CHECK(E.size(0) == x.size(1) && E.size(1) == x.size(2) && E.size(2) == x.size(3), op,
              ": E shape ", E.sizes(), " does not match x's (H, W, C) of x shape ", x.sizes());
  TORCH_CHECK(x.device().is_cpu() && E.device().is_cpu(), op, ": CPU kernel got x on ", x.device(),
              " and E on ", E.device(), "; both must be CPU tensors");
  for (const auto* t : {&x, &E}) {
    const auto st = t->scalar_type();
    TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf, op,
                ": unsupported dtype ", st, "; accepted: float32, float64, bfloat16, float16");
  }
  TORCH_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op, ": H, W, C must be >= 1, got ", x.sizes());
}

// ---- per-thread workspace -----------------------------------------------------------
// The plane and line scratch of one thread, kept across calls up to kKeptWorkspace bytes
// (a 256 x 256 plane of 16 fp32 channels is 4.2 MB): no allocation, zero fill or page
// faults per call, which repeated calls of mid-sized planes would otherwise pay each time.
// A larger buffer (4096 x 4096 planes: about 1 GB per thread) is freed when the call ends.
// From 2 MB on the buffer is advised into transparent huge pages, since a column walk
// touches a new 4 KB page at every point. Every element a pass reads was written by an earlier pass of the same
// call; the padding column of a plane is never read.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kKeptWorkspace = size_t(16) << 20;

class Workspace {
 public:
  template <typename T>
  T* get(int64_t elems) {
    const size_t bytes = size_t(elems) * sizeof(T);
    if (bytes > cap_) {
      release();
      const size_t cap = bytes >= kHugePage ? (bytes + kHugePage - 1) / kHugePage * kHugePage : (bytes + 63) / 64 * 64;
      void* p = std::aligned_alloc(cap >= kHugePage ? kHugePage : 64, cap);
      TORCH_CHECK(p != nullptr, "vheat: could not allocate a ", cap, "-byte plane workspace");
#ifdef MADV_HUGEPAGE
      if (cap >= kHugePage) madvise(p, cap, MADV_HUGEPAGE);  // advisory: ignored where THP is off
#endif
      ptr_ = p;
      cap_ = cap;
    }
    return static_cast<T*>(ptr_);
  }
  // Called by a thread at the end of its share of a call.
  void trim() {
    if (cap_ > kKeptWorkspace) release();
  }
  ~Workspace() { release(); }

 private:
  void release() {
    note_freed(cap_);
    std::free(ptr_);
    ptr_ = nullptr;
    cap_ = 0;
  }
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

template <typename T>
T* thread_workspace(int64_t elems) {
  return thread_workspace().get<T>(elems);
}

// ---- per-plane helpers ------------------------------------------------------------
template <typename T>
struct Geometry {
  int64_t B, H, W, C, blocks, Wp;
  static constexpr int L = kLanes<T>;
  explicit Geometry(const at::Tensor& x)
      : B(x.size(0)), H(x.size(1)), W(x.size(2)), C(x.size(3)), blocks((x.size(3) + L - 1) / L),
        Wp(padded_width(int(x.size(2)))) {}
  int64_t plane_elems() const { return H * Wp * L; }  // (H, Wp, L), see padded_width
};

// Where the values of a channels-last (B, H, W, C) tensor with channel stride 1 lie:
// point (b, h, w) starts at data + b * batch + h * row + w * point. Inputs keep the strides
// they come with (Heat2D's chunk of a linear output has point stride 2C and row stride
// W * 2C); outputs are allocated contiguous.
struct ImageStrides {
  int64_t batch, row, point;
  explicit ImageStrides(const at::Tensor& t) : batch(t.stride(0)), row(t.stride(1)), point(t.stride(2)) {}
  // Channel c0 of point (0, 0) of image b.
  int64_t offset(int64_t b, int64_t c0) const { return b * batch + c0; }
};

// Channels-last plane (b, block) of src -> (H, Wp, L) buffer in T, zero-padded lanes.
template <typename T, typename S>
void gather(const Geometry<T>& g, const S* src, const ImageStrides& st, int64_t b, int64_t blk, T* plane) {
  constexpr int L = Geometry<T>::L;
  const int64_t c0 = blk * L, lanes = std::min<int64_t>(L, g.C - c0);
  const S* base = src + st.offset(b, c0);
  for (int64_t h = 0; h < g.H; ++h)
    for (int64_t w = 0; w < g.W; ++w) {
      const S* s = base + h * st.row + w * st.point;
      T* d = plane + (h * g.Wp + w) * L;
      if (lanes == L) {  // fixed trip count: vectorised
        for (int l = 0; l < L; ++l) d[l] = static_cast<T>(s[l]);
      } else {
        for (int64_t l = 0; l < lanes; ++l) d[l] = static_cast<T>(s[l]);
        for (int64_t l = lanes; l < L; ++l) d[l] = T(0);
      }
    }
}

template <typename T, typename S>
void scatter(const Geometry<T>& g, const T* plane, int64_t b, int64_t blk, S* dst, const ImageStrides& st) {
  constexpr int L = Geometry<T>::L;
  const int64_t c0 = blk * L, lanes = std::min<int64_t>(L, g.C - c0);
  S* base = dst + st.offset(b, c0);
  for (int64_t h = 0; h < g.H; ++h)
    for (int64_t w = 0; w < g.W; ++w) {
      const T* s = plane + (h * g.Wp + w) * L;
      S* d = base + h * st.row + w * st.point;
      if (lanes == L) {
        for (int l = 0; l < L; ++l) d[l] = static_cast<S>(s[l]);
      } else {
        for (int64_t l = 0; l < lanes; ++l) d[l] = static_cast<S>(s[l]);
      }
    }
}

// E (H, W, C) as a contiguous channels-last (H, W, blocks * L) tensor in T, zero-padded to
// whole channel blocks; E itself (no copy) when it already is one.
template <typename T>
at::Tensor lanes_of(const at::Tensor& E, int64_t blocks) {
  constexpr int L = kLanes<T>;
  const auto st = c10::CppTypeToScalarType<T>::value;
  if (E.scalar_type() == st && E.size(2) == blocks * L) return E.contiguous();
  auto padded = at::zeros({E.size(0), E.size(1), blocks * L}, E.options().dtype(st));
  padded.narrow(2, 0, E.size(2)).copy_(E);
  return padded;
}

// The 2-D transforms of one plane. A full channel block of a tensor already in T is read
// (written) by the first (last) pass directly from (to) the channels-last tensor, at its
// strides; other blocks go through gather / scatter.
template <typename T>
struct PlaneContext {
  const Geometry<T>& g;
  std::shared_ptr<const AxisStorage<T>> th, tw;
  const PlaneOps<T>& ops = plane_ops<T>();
  explicit PlaneContext(const Geometry<T>& geo)
      : g(geo), th(axis_tables<T>(int(geo.H))), tw(axis_tables<T>(int(geo.W))) {}
  bool full_block(int64_t blk) const { return (blk + 1) * Geometry<T>::L <= g.C; }
  static int64_t offset(const ImageStrides& st, int64_t b, int64_t blk) { return st.offset(b, blk * Geometry<T>::L); }

  // plane <- DCT2 of plane (b, blk) of the channels-last src.
  template <typename S>
  void dct2_from(const S* src, const ImageStrides& st, int64_t b, int64_t blk, T* plane, T* scratch) const {
    if constexpr (std::is_same_v<S, T>) {
      if (full_block(blk)) {
        ops.dct2(th->tables, tw->tables, src + offset(st, b, blk), st.row, st.point, plane, scratch);
        return;
      }
    }
    gather(g, src, st, b, blk, plane);
    ops.dct2(th->tables, tw->tables, plane, g.Wp * Geometry<T>::L, Geometry<T>::L, plane, scratch);
  }

  // Plane (b, blk) of the channels-last dst <- IDCT2 of plane (plane is overwritten).
  template <typename S>
  void idct2_to(T* plane, S* dst, const ImageStrides& st, int64_t b, int64_t blk, T* scratch) const {
    if constexpr (std::is_same_v<S, T>) {
      if (full_block(blk)) {
        ops.idct2(th->tables, tw->tables, plane, dst + offset(st, b, blk), st.row, st.point, scratch);
        return;
      }
    }
    ops.idct2(th->tables, tw->tables, plane, plane, g.Wp * Geometry<T>::L, Geometry<T>::L, scratch);
    scatter(g, plane, b, blk, dst, st);
  }
};

// plane *= E for channel block blk; e = E.data + blk * L, E (H, W, Cp) channels-last.
template <typename T>
void multiply(const Geometry<T>& g, T* plane, const T* e, int64_t Cp) {
  constexpr int L = Geometry<T>::L;
  for (int64_t h = 0; h < g.H; ++h) {
    if (h + 1 < g.H)  // E's block is strided by Cp: fetch the next row while this one is multiplied
      for (int64_t w = 0; w < g.W; ++w) __builtin_prefetch(e + ((h + 1) * g.W + w) * Cp, 0, 2);
    for (int64_t w = 0; w < g.W; ++w) {
      T* p = plane + (h * g.Wp + w) * L;
      const T* f = e + (h * g.W + w) * Cp;
      for (int l = 0; l < L; ++l) p[l] *= f[l];
    }
  }
}

// acc += xs * plane for channel block blk: acc = dE.data + blk * L (H, W, Cp) channels-last;
// xs (h, w) at xs + h * x_row + w * x_point (a plane, or a channels-last tensor).
template <typename T>
void accumulate(const Geometry<T>& g, T* acc, int64_t Cp, const T* xs, int64_t x_row, int64_t x_point,
                const T* plane) {
  constexpr int L = Geometry<T>::L;
  for (int64_t h = 0; h < g.H; ++h)
    for (int64_t w = 0; w < g.W; ++w) {
      T* a = acc + (h * g.W + w) * Cp;
      const T* x = xs + h * x_row + w * x_point;
      const T* p = plane + (h * g.Wp + w) * L;
      for (int l = 0; l < L; ++l) a[l] += x[l] * p[l];
    }
}

// ---- small planes: runs of channel blocks (plane_kernels.h, SmallRunArgs) ---------------
// A run's planes stay in the thread's workspace between the sweeps: at most kSmallRunBytes,
// well inside L2 (1-2 MB per core on current x86 server cores) beside the streams passing through.
// Runs are as long as that allows: each is streamed row by row, and a longer stream is
// one the prefetchers follow for longer.
constexpr int64_t kSmallRunBytes = int64_t(192) << 10;

struct SmallRuns {
  int64_t blocks = 0;  // full channel blocks covered (0: the small path does not apply)
  int64_t count = 0, length = 0;
  int64_t first(int64_t r) const { return r * length; }
  int size(int64_t r) const { return int(std::min(length, blocks - r * length)); }
};

// The full channel blocks of a small plane of T, cut into at least `min_count` runs (so
// that every thread gets one).
template <typename T, typename S>
SmallRuns small_runs(const Geometry<T>& g, int64_t min_count) {
  SmallRuns r;
  if (!std::is_same_v<S, T> || !small_plane_supported(int(g.H), int(g.W))) return r;
  r.blocks = g.C / Geometry<T>::L;
  if (r.blocks == 0) return r;
  const int64_t plane_bytes = g.H * g.W * Geometry<T>::L * int64_t(sizeof(T));
  const int64_t max_len = std::max<int64_t>(1, kSmallRunBytes / plane_bytes);
  r.count = std::min(r.blocks, std::max((r.blocks + max_len - 1) / max_len, min_count));
  r.length = (r.blocks + r.count - 1) / r.count;
  r.count = (r.blocks + r.length - 1) / r.length;
  return r;
}

// y = IDCT2(DCT2(x) * E), T = accumulation type, S = storage type of x / y. With `spectrum`,
// DCT2(x) is also written out (in T, channels-last) for the backward to reuse. x is read at
// its strides (channel stride 1); y and the spectrum are contiguous.
template <typename T, typename S>
void forward_impl(const at::Tensor& x, const at::Tensor& E_lanes, at::Tensor& y, at::Tensor* spectrum) {
  const Geometry<T> g(x);
  const PlaneContext<T> ctx(g);
  const ImageStrides xs(x), ys(y);
  const S* xp = x.const_data_ptr<S>();
  const T* ep = E_lanes.const_data_ptr<T>();
  const int64_t Cp = E_lanes.size(2);
  S* yp = y.mutable_data_ptr<S>();
  T* sp = spectrum ? spectrum->mutable_data_ptr<T>() : nullptr;
  constexpr int L = Geometry<T>::L;
  const int64_t threads = at::get_num_threads();
  const SmallRuns runs = small_runs<T, S>(g, (threads + g.B - 1) / g.B);
  if (runs.blocks > 0) {
    at::parallel_for(0, g.B * runs.count, 1, [&](int64_t begin, int64_t end) {
      T* work = thread_workspace<T>(small_run_work_elems(runs.length, int(g.H), int(g.W), L, false));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / runs.count, first = runs.first(task % runs.count);
        const int64_t in = ctx.offset(xs, b, first), out = ctx.offset(ys, b, first);
        if constexpr (std::is_same_v<S, T>)
          ctx.ops.small_run(int(g.H), int(g.W),
                            {.blocks = runs.size(task % runs.count), .src_row = xs.row, .src_point = xs.point,
                             .saved_row = 0, .saved_point = 0, .out_row = ys.row, .out_point = ys.point, .Ce = Cp,
                             .th = &ctx.th->tables, .tw = &ctx.tw->tables, .src = xp + in,
                             .e = ep + first * L, .dst = yp + out, .spectrum = sp ? sp + out : nullptr, .work = work});
      }
      thread_workspace().trim();
    });
  }
  // Other planes (and the partial block of a small plane): one plane at a time.
  const int64_t rest = g.blocks - runs.blocks;
  if (rest == 0) return;
  const int64_t scratch = plane_scratch_elems(int(g.H), int(g.W), L);
  at::parallel_for(0, g.B * rest, 1, [&](int64_t begin, int64_t end) {
    T* plane = thread_workspace<T>(g.plane_elems() + scratch);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / rest, blk = runs.blocks + task % rest;
      T* work = plane + g.plane_elems();
      ctx.dct2_from(xp, xs, b, blk, plane, work);
      if (sp) scatter(g, plane, b, blk, sp, ys);  // the spectrum is allocated like y
      multiply(g, plane, ep + blk * L, Cp);
      ctx.idct2_to(plane, yp, ys, b, blk, work);
    }
    thread_workspace().trim();
  });
}

// dE (lanes) = sum_b DCT2(x_b) * DCT2(dy_b); dx = IDCT2(DCT2(dy) * E).
// Parallel over channel blocks with the batch summed in order inside each block: the
// reduction order does not depend on the thread count, so results are deterministic.
// `saved` is what the forward kept: x itself (Saved = S), or with saved_is_spectrum its
// spectrum DCT2(x) in T (Saved = T), so the backward needs two 2-D transforms per plane
// instead of three. dy and saved are read at their own
// strides (channel stride 1); dx is contiguous.
template <typename T, typename S, typename Saved>
void backward_impl(const at::Tensor& dy, const at::Tensor& saved, const at::Tensor& E_lanes, at::Tensor* dx,
                   at::Tensor& dE_lanes, bool saved_is_spectrum) {
  const Geometry<T> g(saved);
  const PlaneContext<T> ctx(g);
  const ImageStrides ss(saved), gs(dy), ds = dx ? ImageStrides(*dx) : gs;
  const Saved* savedp = saved.const_data_ptr<Saved>();
  const S* gp = dy.const_data_ptr<S>();
  const T* ep = E_lanes.const_data_ptr<T>();
  T* dep = dE_lanes.mutable_data_ptr<T>();
  const int64_t Cp = E_lanes.size(2);
  constexpr int L = Geometry<T>::L;
  S* dxp = dx ? dx->mutable_data_ptr<S>() : nullptr;
  // Small planes: runs of channel blocks, each summing the batch in order (so the result
  // does not depend on the number of threads either). saved is the spectrum, or x, which is
  // transformed in the run's first sweeps.
  const SmallRuns runs = std::is_same_v<Saved, T> ? small_runs<T, S>(g, at::get_num_threads()) : SmallRuns{};
  if (runs.blocks > 0) {
    at::parallel_for(0, runs.count, 1, [&](int64_t begin, int64_t end) {
      T* work = thread_workspace<T>(small_run_work_elems(runs.length, int(g.H), int(g.W), L, !saved_is_spectrum));
      for (int64_t r = begin; r < end; ++r) {
        const int64_t first = runs.first(r);
        for (int64_t p = 0; p < g.H * g.W; ++p) std::fill_n(dep + p * Cp + first * L, runs.size(r) * L, T(0));
        for (int64_t b = 0; b < g.B; ++b) {
          if constexpr (std::is_same_v<S, T> && std::is_same_v<Saved, T>)
            ctx.ops.small_run(int(g.H), int(g.W),
                              {.blocks = runs.size(r), .src_row = gs.row, .src_point = gs.point, .saved_row = ss.row,
                               .saved_point = ss.point, .out_row = ds.row, .out_point = ds.point, .Ce = Cp,
                               .th = &ctx.th->tables, .tw = &ctx.tw->tables,
                               .src = gp + ctx.offset(gs, b, first), .e = ep + first * L,
                               .dst = dxp ? dxp + ctx.offset(ds, b, first) : nullptr,
                               .saved = savedp + ctx.offset(ss, b, first), .saved_is_spectrum = saved_is_spectrum,
                               .acc = dep + first * L, .work = work});
        }
      }
      thread_workspace().trim();
    });
  }
  const int64_t n = g.plane_elems();
  const int64_t scratch = plane_scratch_elems(int(g.H), int(g.W), Geometry<T>::L);
  at::parallel_for(runs.blocks, g.blocks, 1, [&](int64_t begin, int64_t end) {
    T* px = thread_workspace<T>(2 * n + scratch);
    T* pg = px + n;
    T* work = pg + n;
    for (int64_t blk = begin; blk < end; ++blk) {
      T* acc = dep + blk * L;
      const T* e = ep + blk * L;
      for (int64_t p = 0; p < g.H * g.W; ++p) std::fill(acc + p * Cp, acc + p * Cp + L, T(0));
      for (int64_t b = 0; b < g.B; ++b) {
        ctx.dct2_from(gp, gs, b, blk, pg, work);
        if (saved_is_spectrum && ctx.full_block(blk)) {  // the saved spectrum, read in place
          accumulate(g, acc, Cp, reinterpret_cast<const T*>(savedp) + ctx.offset(ss, b, blk), ss.row, ss.point, pg);
        } else {
          if (saved_is_spectrum)
            gather(g, savedp, ss, b, blk, px);
          else
            ctx.dct2_from(savedp, ss, b, blk, px, work);
          accumulate(g, acc, Cp, px, g.Wp * L, L, pg);
        }
        if (dxp) {
          multiply(g, pg, e, Cp);
          ctx.idct2_to(pg, dxp, ds, b, blk, work);
        }
      }
    }
    thread_workspace().trim();
  });
}

// A new contiguous CPU tensor, allocated straight from the CPU allocator rather than through
// the dispatcher: every hop costs microseconds when the caches are cold, as they are after
// another large op, and a training step makes four of these per HCO call.
at::Tensor new_cpu(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::detail::empty_cpu(sizes, dtype);
}

// fn(compute-type tag, storage-type tag) for the storage dtype st.
template <typename Fn>
void dispatch_storage(at::ScalarType st, Fn&& fn) {
  const auto with = [&](auto storage_tag) { fn(compute_type_t<decltype(storage_tag)>{}, storage_tag); };
  switch (st) {
    case at::kFloat: with(float{}); break;
    case at::kDouble: with(double{}); break;
    case at::kBFloat16: with(c10::BFloat16{}); break;
    case at::kHalf: with(c10::Half{}); break;
    default: TORCH_CHECK(false, "vheat: unsupported dtype ", st);
  }
}

// x (or grad_y, or a saved spectrum) as the kernels read it: the tensor itself when its
// channels are adjacent (stride 1), whatever its batch, row and point strides, so that
// Heat2D's chunk of a linear output or a spatially transposed view costs no copy. Any
// other layout (channels strided, e.g. an NCHW tensor permuted to channels-last) is copied
// once here: a plane kernel loads whole runs of adjacent channels.
at::Tensor with_adjacent_channels(const at::Tensor& t) {
  return t.size(3) == 1 || t.stride(3) == 1 ? t : t.contiguous();
}

// Shared body of hco_forward and hco_forward_spectrum (which also wants DCT2(x)).
at::Tensor run_forward(const at::Tensor& x_in, const at::Tensor& E_in, const char* op, at::Tensor* spectrum) {
  check_inputs(x_in, E_in, op);
  const GiveBackFreedHeapAtEnd give_back(x_in.size(1), x_in.size(2));
  const at::Tensor x = with_adjacent_channels(x_in);
  at::Tensor y = new_cpu(x.sizes(), x.scalar_type());
  const auto acc = compute_dtype(x.scalar_type());
  if (spectrum) *spectrum = new_cpu(x.sizes(), acc);
  if (x.numel() == 0) return y;
  if (uses_fft_path(x.size(1), x.size(2))) {
    hco_forward_fft(x, E_in, acc, y, spectrum);
    return y;
  }
  dispatch_storage(x.scalar_type(), [&](auto acc_tag, auto storage_tag) {
    using T = decltype(acc_tag);
    using S = decltype(storage_tag);
    const int64_t blocks = (x.size(3) + kLanes<T> - 1) / kLanes<T>;
    forward_impl<T, S>(x, lanes_of<T>(E_in, blocks), y, spectrum);
  });
  return y;
}

// Shared body of hco_backward (saved is x) and hco_backward_spectrum (saved is the spectrum,
// DCT2(x) in the accumulation type); inputs are validated by the callers.
std::tuple<at::Tensor, at::Tensor> run_backward(const at::Tensor& dy_in, const at::Tensor& saved_in,
                                                const at::Tensor& E_in, bool need_dx, bool need_dE,
                                                bool saved_is_spectrum) {
  const GiveBackFreedHeapAtEnd give_back(dy_in.size(1), dy_in.size(2));
  at::Tensor dx = dy_in.new_empty({0});
  at::Tensor dE = E_in.new_empty({0});
  if (!need_dE) {
    // The operator is self-adjoint in x.
    if (need_dx) dx = run_forward(dy_in, E_in, "vheat::hco_backward", nullptr);
    return {dx, dE};
  }
  const at::Tensor saved = with_adjacent_channels(saved_in), dy = with_adjacent_channels(dy_in);
  if (uses_fft_path(dy.size(1), dy.size(2))) {
    if (need_dx) dx = at::empty_like(dy, at::MemoryFormat::Contiguous);
    dE = hco_backward_fft(dy, saved, E_in, compute_dtype(dy.scalar_type()), saved_is_spectrum, need_dx ? &dx : nullptr);
    return {dx, dE};
  }
  if (need_dx) dx = new_cpu(dy.sizes(), dy.scalar_type());
  dispatch_storage(dy.scalar_type(), [&](auto acc_tag, auto storage_tag) {
    using T = decltype(acc_tag);
    using S = decltype(storage_tag);
    const int64_t blocks = (dy.size(3) + kLanes<T> - 1) / kLanes<T>;
    const at::Tensor E = lanes_of<T>(E_in, blocks);
    at::Tensor dE_lanes = new_cpu(E.sizes(), E.scalar_type());
    at::Tensor* dx_out = need_dx ? &dx : nullptr;
    if (dy.numel() == 0) {
      dE_lanes.zero_();
    } else if (saved_is_spectrum) {
      backward_impl<T, S, T>(dy, saved, E, dx_out, dE_lanes, true);
    } else {
      backward_impl<T, S, S>(dy, saved, E, dx_out, dE_lanes, false);
    }
    // No padding lanes and E's own dtype (vHeat's widths in fp32): dE_lanes is dE.
    const bool as_is = dE_lanes.size(2) == dy.size(3) && dE_lanes.scalar_type() == E_in.scalar_type();
    dE = as_is ? dE_lanes : dE_lanes.narrow(2, 0, dy.size(3)).to(E_in.scalar_type()).contiguous();
  });
  return {dx, dE};
}

at::Tensor hco_forward_cpu(const at::Tensor& x, const at::Tensor& E) {
  return run_forward(x, E, "vheat::hco_forward", nullptr);
}

std::tuple<at::Tensor, at::Tensor> hco_backward_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& E,
                                                    bool need_dx, bool need_dE) {
  check_inputs(x, E, "vheat::hco_backward");
  TORCH_CHECK(dy.sizes() == x.sizes(), "vheat::hco_backward: grad_y shape ", dy.sizes(), " must equal x shape ",
              x.sizes());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "vheat::hco_backward: grad_y dtype ", dy.scalar_type(),
              " must equal x dtype ", x.scalar_type());
  TORCH_CHECK(dy.device().is_cpu(), "vheat::hco_backward: grad_y must be a CPU tensor, got ", dy.device());
  return run_backward(dy, x, E, need_dx, need_dE, /*saved_is_spectrum=*/false);
}

// Forward that also returns DCT2(x) (fp32; fp64 for double) for hco_backward_spectrum.
std::tuple<at::Tensor, at::Tensor> hco_forward_spectrum_cpu(const at::Tensor& x, const at::Tensor& E) {
  at::Tensor spectrum;
  at::Tensor y = run_forward(x, E, "vheat::hco_forward_spectrum", &spectrum);
  return {y, spectrum};
}

std::tuple<at::Tensor, at::Tensor> hco_backward_spectrum_cpu(const at::Tensor& dy, const at::Tensor& spectrum,
                                                             const at::Tensor& E, bool need_dx, bool need_dE) {
  check_inputs(dy, E, "vheat::hco_backward_spectrum");
  TORCH_CHECK(spectrum.sizes() == dy.sizes(), "vheat::hco_backward_spectrum: spectrum shape ", spectrum.sizes(),
              " must equal grad_y shape ", dy.sizes());
  TORCH_CHECK(spectrum.device().is_cpu() && spectrum.scalar_type() == compute_dtype(dy.scalar_type()),
              "vheat::hco_backward_spectrum: spectrum must be the CPU ", compute_dtype(dy.scalar_type()),
              " spectrum returned by hco_forward_spectrum, got ", spectrum.scalar_type(), " on ", spectrum.device());
  return run_backward(dy, spectrum, E, need_dx, need_dE, /*saved_is_spectrum=*/true);
}

}  // namespace
}  // namespace vheat::cpu

TORCH_LIBRARY_IMPL(vheat, CPU, m) {
  m.impl("hco_forward", &vheat::cpu::hco_forward_cpu);
  m.impl("hco_backward", &vheat::cpu::hco_backward_cpu);
  m.impl("hco_forward_spectrum", &vheat::cpu::hco_forward_spectrum_cpu);
  m.impl("hco_backward_spectrum", &vheat::cpu::hco_backward_spectrum_cpu);
}
