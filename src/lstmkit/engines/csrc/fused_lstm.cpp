// The fused LSTM engine's time loop: one layer, one direction, forward and backward (BPTT), in compiled code.
//
// The equations are the reference engine's (engines/reference.py), gate order [i, f, g, o] as in torch.nn:
//   gates = x_proj[t] + h_{t-1} W_hh^T + b      x_proj = x W_ih^T, all steps in one GEMM outside; b = b_ih + b_hh
//                                               in the step GEMM's epilogue (or, without `bias`, inside x_proj)
//   i, f, o = sigmoid(.), g = tanh(.)
//   c_t = f * c_{t-1} + i * g;  m_t = o * tanh(c_t);  h_t = m_t (or m_t W_hr^T with a projection)
//
// Per step this file does one GEMM (two with a projection) and one pass of pointwise code over the batch; the
// pointwise code is written out here (not a chain of ATen ops) because each ATen call costs microseconds and a
// memory round trip, and at batch 1 the step is all overhead. What backward needs is saved per step: the four gate
// activations (4H) and the cell state (H) per batch row; h_{t-1} is the layer's own output, kept by the caller.
// The weight gradients are one large GEMM each over all steps, after the loop.
//
// Zoneout (Krueger et al. 2016) comes last in a step: c_t = d_c c_{t-1} + (1 - d_c) c~_t and likewise for h, where
// c~_t and h~_t = o tanh(c~_t) are the plain step's values. The saved cells are then the zoned states c_t; backward
// recomputes c~_t = f c_{t-1} + i g from the saved gates, so zoneout saves nothing more.
//
// Layer norm (Ba et al. 2016): gates = x_proj + LN(h_{t-1} W_hh^T) a_hh (x_proj holds LN(x W_ih^T) a_ih + b_ih + b_hh,
// computed outside), and m_t = o tanh(LN(c~_t) w_c + b_c). Saved besides the gates and cells: the normalised
// recurrent product (4H) and (1/std of it, mean and 1/std of c~) per row and step; backward runs LN's chain rule
// (dz = rstd (dzhat - mean(dzhat) - zhat mean(dzhat zhat))) for both, W_hh gets the gradient before the LN, and the
// gains' gradients are summed per row inside the backward loop.
//
// Packed sequences arrive as a padded batch with `lengths`: a row whose sequence has ended keeps its state and
// outputs zero, exactly as the reference engine's masking. The reverse direction walks t from T-1 down to 0 with
// the same rule, which is "reverse each sequence within its own length" without moving any data.
//
// Structure: one forward time loop and one backward time loop (forward_loop, backward_loop) serve every cell. A
// cell (the LSTM with its variants; the sLSTM) is a struct of row functions and per-step hooks, passed as a
// template parameter; the LSTM's per-call choices (which gate functions, zoneout, projection) are template
// parameters of its cell, so the loops are compiled once per combination and test none of them inside a step.
//
// GEMMs: on x86 CPUs the recurrent products go through oneDNN with a weight prepacked once per call, or for an
// inference forward once while the weight keeps its values (PackedCache) (mkldnn::_linear_pointwise), measured 1.6x
// faster than torch.mm at these shapes on AMD Zen 4 (docs/benchmarks.md; on an AVX-512 Xeon the two are within 5% at
// B=64 H=256 and oneDNN is 1.4x at B=16 H=512); float64 and other builds use at::mm.

// Only ATen and torch/library.h (no pybind11, no torch/extension.h): the ops are registered with TORCH_LIBRARY and
// called as torch.ops.lstmkit_kernel.*, which also halves the first build's compile time.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using at::Tensor;

// exp, sigmoid and tanh in plain arithmetic so that the compiler vectorises the pointwise loops (libm's expf is
// a call per element). Cephes' expf: range reduction by ln 2, degree-6 polynomial, about 1 ulp in float32.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (std::floor would block vectorisation without -fno-trapping-math).
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}
inline double exp_approx(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_approx(-x));
}
template <typename T>
inline T tanh_(T x) {
  // tanh x = 1 - 2 / (e^{2x} + 1): exact at both ends, absolute error ~1e-7 near 0 in float32.
  return T(1) - T(2) / (exp_approx(T(2) * x) + T(1));
}
template <>
inline double tanh_(double x) {
  return std::tanh(x);
}

// ------------------------------------------------------------------------------------------------------------
// The recurrent GEMM: y = a @ w^T for a fixed weight w (out, in), many times.
// ------------------------------------------------------------------------------------------------------------

using LinearFn = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, std::string_view,
                        c10::List<std::optional<at::Scalar>>, std::optional<std::string_view>);
using ReorderFn = Tensor(const Tensor&, std::optional<int64_t>);

Tensor reorder_for_onednn(const Tensor& w, int64_t rows) {
  static auto reorder = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                            .typed<ReorderFn>();
  return reorder.call(w, rows);
}

// oneDNN's copy of a weight that outlives the call (a module's parameter), kept from one call to the next while the
// weight holds the same values: an inference forward then skips the reorder (0.2 ms at B=64 H=256, 0.5 ms at B=16
// H=512, one thread: 0.5-1.2% of the forward; training steps do not keep it). An entry keeps a plain copy of the
// weight and is used only when the weight still equals it byte for byte (a memcmp, 4-5x cheaper than the reorder), so
// every change is seen, including those through `.data`, which bypass the version counter. One entry per weight
// tensor, held by a weak reference (a weight that is gone matches nothing); at most kPackedCacheSize weights, the
// oldest dropped first.
class PackedCache {
 public:
  Tensor get(const Tensor& w, int64_t rows) {
    if (!w.is_contiguous()) return reorder_for_onednn(w, rows);
    const size_t bytes = size_t(w.numel()) * w.element_size();
    {
      std::lock_guard<std::mutex> guard(mutex_);
      for (auto& e : entries_) {
        if (e.weight._unsafe_get_target() != w.unsafeGetTensorImpl() || e.weight.expired()) continue;
        if (e.rows == rows && e.copy.sizes() == w.sizes() && e.copy.scalar_type() == w.scalar_type() &&
            std::memcmp(e.copy.data_ptr(), w.data_ptr(), bytes) == 0)
          return e.packed;
      }
    }
    Tensor packed = reorder_for_onednn(w, rows);
    Tensor copy = w.detach().clone();
    std::lock_guard<std::mutex> guard(mutex_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                  [&](const Entry& e) {
                                    return e.weight.expired() ||
                                           e.weight._unsafe_get_target() == w.unsafeGetTensorImpl();
                                  }),
                   entries_.end());
    if (entries_.size() >= kPackedCacheSize) entries_.erase(entries_.begin());
    entries_.push_back({c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(w.getIntrusivePtr()),
                        rows, copy, packed});
    return packed;
  }

 private:
  static constexpr size_t kPackedCacheSize = 64;  // 16 layers of two directions, W_ih and W_hh each
  struct Entry {
    c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> weight;
    int64_t rows;
    Tensor copy;    // the weight's values when packed
    Tensor packed;  // oneDNN's blocked copy
  };
  std::mutex mutex_;
  std::vector<Entry> entries_;
};

PackedCache& packed_cache() {
  static PackedCache* cache = new PackedCache();  // never destroyed: tensors outliving exit are not freed at exit
  return *cache;
}

struct StepGemm {
  Tensor w;       // (out, in), contiguous
  Tensor packed;  // oneDNN's blocked copy of w when that path is used
  bool onednn = false;

  int64_t rows = 0;  // the most rows a call passes
  std::optional<Tensor> bias;  // added to every row of the product (the forward's b_ih + b_hh), or none

  // `keep`: w is a weight that outlives the call (the forward's W_hh, W_hr), so its oneDNN copy is kept for later
  // calls (PackedCache); backward's transposed copies are made per call and are not.
  StepGemm(const Tensor& weight, int64_t rows_, bool use_onednn, bool keep = false,
           const std::optional<Tensor>& bias_ = std::nullopt)
      : w(weight.contiguous()), rows(rows_), bias(bias_) {
    // oneDNN's per-call overhead (~15 us) loses to torch.mm below about a million multiply-adds per step
    // (measured: B=1, H=256: 26 us mm vs 33 us oneDNN; B=16, H=512: 521 vs 361 us).
    onednn = use_onednn && w.scalar_type() == at::kFloat && rows * w.size(0) * w.size(1) > (int64_t(1) << 20);
    if (onednn) packed = keep ? packed_cache().get(weight, rows) : reorder_for_onednn(w, rows);
  }

  // a @ w^T (+ bias), (rows, out). The oneDNN op adds the bias in its GEMM's epilogue and allocates its result (it
  // has no out= form); torch.mm writes into a buffer kept across steps.
  Tensor run(const Tensor& a) {
    if (onednn) {
      static auto linear = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                               .typed<LinearFn>();
      return linear.call(a, packed, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
    }
    if (!buffer.defined()) buffer = at::empty({std::max(rows, a.size(0)), w.size(0)}, a.options());
    Tensor rows_out = buffer.narrow(0, 0, a.size(0));
    return bias ? at::addmm_out(rows_out, *bias, a, w.t()) : at::mm_out(rows_out, a, w.t());
  }

  // The first n rows of a @ w^T: with lengths sorted longest first the live rows of a step are a prefix of the
  // batch, so finished rows cost no multiply-adds (a shrinking batch, as packing gives, without its copies). Rows
  // from n on are undefined; with n = 0 nothing is computed.
  Tensor run_prefix(const Tensor& a, int64_t n) {
    if (n == 0) return Tensor();
    return run(n == a.size(0) ? a : a.narrow(0, 0, n));
  }
  Tensor buffer;
};

// How many rows lead the batch as live at step t: all of them without lengths or when the lengths are not sorted
// longest first (then every row goes through the GEMM and finished ones are skipped after it).
inline int64_t live_prefix(const int64_t* len, bool sorted, int64_t B, int64_t t) {
  if (len == nullptr || !sorted) return B;
  int64_t n = 0;
  while (n < B && t < len[n]) ++n;
  return n;
}

inline bool sorted_longest_first(const int64_t* len, int64_t B) {
  if (len == nullptr) return false;
  for (int64_t b = 1; b < B; ++b)
    if (len[b] > len[b - 1]) return false;
  return true;
}

inline int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width)); }

// Row functions are kept out of line, and each gate is a loop from 0 over its own pointers: inlined into the
// parallel loop, or written as `for (j = H; j < 2H; ...)`, gcc 12 leaves some of these loops scalar (measured:
// 93 vs 62 ms for a T=100, B=64, H=256 forward).
#define ROW_FN __attribute__((noinline)) static

template <typename T>
ROW_FN void sigmoid_block(const T* __restrict x, const T* __restrict gh, T* __restrict out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = sigmoid<T>(x[j] + gh[j]);
}
template <typename T>
ROW_FN void tanh_block(const T* __restrict x, const T* __restrict gh, T* __restrict out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = tanh_<T>(x[j] + gh[j]);
}
// sigmoid(x + gh + w * c): a gate with a peephole.
template <typename T>
ROW_FN void peep_block(const T* __restrict x, const T* __restrict gh, const T* __restrict w, const T* __restrict c,
                       T* __restrict out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = sigmoid<T>(x[j] + gh[j] + w[j] * c[j]);
}
// c = f c + i g (in place), m = o tanh(c).
template <typename T>
ROW_FN void cell_block(const T* __restrict i, const T* __restrict f, const T* __restrict g, const T* __restrict o,
                       T* __restrict c, T* __restrict m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T cn = f[j] * c[j] + i[j] * g[j];
    c[j] = cn;
    m[j] = o[j] * tanh_<T>(cn);
  }
}

// One batch row of one step, forward: act = [i, f, g, o] from the pre-activations x + gh, then c and m = o tanh(c)
// in place.
template <typename T>
inline void forward_row(const T* x, const T* gh, T* act, T* c, T* m, int64_t H) {
  sigmoid_block<T>(x, gh, act, 2 * H);                   // i, f
  tanh_block<T>(x + 2 * H, gh + 2 * H, act + 2 * H, H);  // g
  sigmoid_block<T>(x + 3 * H, gh + 3 * H, act + 3 * H, H);  // o
  cell_block<T>(act, act + H, act + 2 * H, act + 3 * H, c, m, H);  // c_t = f c_{t-1} + i g, m = o tanh(c_t)
}

// One batch row of one step, backward: from dm = dL/dm_t and dc = dL/dc_t (flowing back from step t+1) to the
// gradients of the four pre-activations (dg) and dL/dc_{t-1} (into dc, in place). The chain rule, gate by gate:
//   m = o tanh(c):  do = dm tanh(c),  dc += dm o (1 - tanh(c)^2)
//   c = f c_prev + i g:  di = dc g,  df = dc c_prev,  dg = dc i,  dc_prev = dc f
//   sigmoid' = s (1 - s),  tanh' = 1 - tanh^2
template <typename T>
ROW_FN void backward_row(const T* __restrict a, const T* __restrict c, const T* __restrict cprev,
                         const T* __restrict dm, T* __restrict dc, T* __restrict dg, int64_t H) {
  #pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    const T tc = tanh_<T>(c[j]);
    const T d_o = dm[j] * tc;
    const T d_c = dc[j] + dm[j] * o * (T(1) - tc * tc);
    dg[j] = d_c * g * i * (T(1) - i);
    dg[H + j] = d_c * cprev[j] * f * (T(1) - f);
    dg[2 * H + j] = d_c * i * (T(1) - g * g);
    dg[3 * H + j] = d_o * o * (T(1) - o);
    dc[j] = d_c * f;
  }
}

// The variants the kernel runs besides recurrent dropout (equations: lstm_variant_gated_step in reference.py):
// peepholes (Gers & Schmidhuber 2000; diagonal weights c_{t-1} -> i, f and c_t -> o) and coupled gates (CIFG,
// i = 1 - f, gate rows [f, g, o]). Absent peepholes point at zeros, so one loop serves every combination.
template <typename T>
struct Variant {
  bool coupled = false;
  const T* ci = nullptr;  // (H) each
  const T* cf = nullptr;
  const T* co = nullptr;
  const T* ln_c_w = nullptr;  // layer norm of c~ before tanh: gain and shift (H) each, or null
  const T* ln_c_b = nullptr;
};

// Layer normalisation (Ba et al. 2016), eps as torch.nn.LayerNorm's.
constexpr double kLayerNormEps = 1e-5;

// Mean and 1/sqrt(var + eps) of a row, summed in double: LN's backward divides by the std, so float32 rounding in
// the statistics would show in the gradients (measured: 2x the reference engine's own float32 error without it).
template <typename T>
inline std::pair<T, T> moments(const T* __restrict x, int64_t n) {
  double mean = 0, var = 0;
  // omp simd: lets gcc vectorise the sums (reordering them), which it may not do on its own without -ffast-math.
  #pragma omp simd reduction(+ : mean)
  for (int64_t j = 0; j < n; ++j) mean += double(x[j]);
  mean /= double(n);
  #pragma omp simd reduction(+ : var)
  for (int64_t j = 0; j < n; ++j) var += (double(x[j]) - mean) * (double(x[j]) - mean);
  return {T(mean), T(1.0 / std::sqrt(var / double(n) + kLayerNormEps))};
}

// The recurrent product's LN, one row: zhat = (gh - mean) / sqrt(var + eps), lnx = zhat * a. Returns 1/sqrt(var+eps).
template <typename T>
ROW_FN T ln_rows_forward(const T* __restrict gh, const T* __restrict a, T* __restrict zhat, T* __restrict lnx,
                         int64_t n) {
  const auto [mean, rstd] = moments<T>(gh, n);
  for (int64_t j = 0; j < n; ++j) {
    zhat[j] = (gh[j] - mean) * rstd;
    lnx[j] = zhat[j] * a[j];
  }
  return rstd;
}
// Its backward, one row: from dL/d(lnx) = dg to dL/dgh = rstd (dz - mean(dz) - zhat mean(dz zhat)), dz = dg a.
// The gain's gradient dg zhat is added to this row's accumulator d_a (summed over the rows after the loop).
template <typename T>
ROW_FN void ln_rows_backward(const T* __restrict dg, const T* __restrict a, const T* __restrict zhat, T rstd,
                             T* __restrict dgh, double* __restrict d_a, int64_t n) {
  double s1d = 0, s2d = 0;
  #pragma omp simd reduction(+ : s1d, s2d)
  for (int64_t j = 0; j < n; ++j) {
    s1d += double(dg[j] * a[j]);
    s2d += double(dg[j] * a[j] * zhat[j]);
    d_a[j] += double(dg[j] * zhat[j]);
  }
  const T s1 = T(s1d / double(n)), s2 = T(s2d / double(n));
  for (int64_t j = 0; j < n; ++j) dgh[j] = rstd * (dg[j] * a[j] - s1 - zhat[j] * s2);
}
// m = o tanh(LN(c~) w + b), one row; stats <- (mean, rstd) of c~.
template <typename T>
ROW_FN void ln_output_block(const T* __restrict o, const T* __restrict c, const T* __restrict w,
                            const T* __restrict b, T* __restrict m, T* __restrict stats, int64_t n) {
  const auto [mean, rstd] = moments<T>(c, n);
  stats[0] = mean;
  stats[1] = rstd;
  for (int64_t j = 0; j < n; ++j) m[j] = o[j] * tanh_<T>((c[j] - mean) * rstd * w[j] + b[j]);
}

template <typename T>
ROW_FN void coupled_cell(const T* __restrict f, const T* __restrict g, T* __restrict c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) c[j] = f[j] * c[j] + (T(1) - f[j]) * g[j];  // i = 1 - f
}
template <typename T>
ROW_FN void plain_cell(const T* __restrict i, const T* __restrict f, const T* __restrict g, T* __restrict c,
                       int64_t n) {
  for (int64_t j = 0; j < n; ++j) c[j] = f[j] * c[j] + i[j] * g[j];
}
template <typename T>
ROW_FN void output_block(const T* __restrict o, const T* __restrict c, T* __restrict m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) m[j] = o[j] * tanh_<T>(c[j]);
}

template <typename T>
inline void variant_forward_row(const T* x, const T* gh, T* act, T* c, T* m, int64_t H, const Variant<T>& v,
                                T* ln_stats) {
  const int64_t F = v.coupled ? 0 : H, Gg = F + H, O = Gg + H;  // offsets of f, g, o in the gate rows
  if (!v.coupled) peep_block<T>(x, gh, v.ci, c, act, H);      // i from c_{t-1}
  peep_block<T>(x + F, gh + F, v.cf, c, act + F, H);          // f from c_{t-1}
  tanh_block<T>(x + Gg, gh + Gg, act + Gg, H);                // g
  if (v.coupled)
    coupled_cell<T>(act, act + Gg, c, H);
  else
    plain_cell<T>(act, act + F, act + Gg, c, H);
  peep_block<T>(x + O, gh + O, v.co, c, act + O, H);          // o sees c_t
  if (v.ln_c_w)
    ln_output_block<T>(act + O, c, v.ln_c_w, v.ln_c_b, m, ln_stats, H);  // h = o tanh(LN(c_t))
  else
    output_block<T>(act + O, c, m, H);
}

// Backward of variant_forward_row. Beyond the plain rules: the peephole into o adds dzo w_co to dc_t; those into
// i and f add dzi w_ci + dzf w_cf to dc_{t-1}; with coupled gates c = f c_prev + (1 - f) g, so df = dc (c_prev - g).
template <typename T>
ROW_FN void coupled_backward_row(const T* __restrict a, const T* __restrict c, const T* __restrict cprev,
                                 const T* __restrict dm, T* __restrict dc, T* __restrict dg, int64_t H,
                                 const T* __restrict cf, const T* __restrict co) {
  const T* __restrict af = a;
  const T* __restrict ag = a + H;
  const T* __restrict ao = a + 2 * H;
  T* __restrict df_ = dg;
  T* __restrict dg_ = dg + H;
  T* __restrict do_ = dg + 2 * H;
  for (int64_t j = 0; j < H; ++j) {
    const T f = af[j], g = ag[j], o = ao[j];
    const T tc = tanh_<T>(c[j]);
    const T dzo = dm[j] * tc * o * (T(1) - o);
    const T d_c = dc[j] + dm[j] * o * (T(1) - tc * tc) + dzo * co[j];
    const T dzf = d_c * (cprev[j] - g) * f * (T(1) - f);
    df_[j] = dzf;
    dg_[j] = d_c * (T(1) - f) * (T(1) - g * g);
    do_[j] = dzo;
    dc[j] = d_c * f + dzf * cf[j];
  }
}

template <typename T>
ROW_FN void peephole_backward_row(const T* __restrict a, const T* __restrict c, const T* __restrict cprev,
                                  const T* __restrict dm, T* __restrict dc, T* __restrict dg, int64_t H,
                                  const T* __restrict ci, const T* __restrict cf, const T* __restrict co) {
  const T* __restrict ai = a;
  const T* __restrict af = a + H;
  const T* __restrict ag = a + 2 * H;
  const T* __restrict ao = a + 3 * H;
  T* __restrict di_ = dg;
  T* __restrict df_ = dg + H;
  T* __restrict dg_ = dg + 2 * H;
  T* __restrict do_ = dg + 3 * H;
  for (int64_t j = 0; j < H; ++j) {
    const T i = ai[j], f = af[j], g = ag[j], o = ao[j];
    const T tc = tanh_<T>(c[j]);
    const T dzo = dm[j] * tc * o * (T(1) - o);
    const T d_c = dc[j] + dm[j] * o * (T(1) - tc * tc) + dzo * co[j];
    const T dzi = d_c * g * i * (T(1) - i);
    const T dzf = d_c * cprev[j] * f * (T(1) - f);
    di_[j] = dzi;
    df_[j] = dzf;
    dg_[j] = d_c * i * (T(1) - g * g);
    do_[j] = dzo;
    dc[j] = d_c * f + dzi * ci[j] + dzf * cf[j];
  }
}

// Backward with layer norm of c~ (h = o tanh(s), s = chat w + b, chat = (c~ - mean) rstd): ds = dm o (1 - tanh(s)^2),
// dchat = ds w, and dc~ gains rstd (dchat - mean(dchat) - chat mean(dchat chat)). The gain's and shift's gradients,
// ds chat and ds, are added to this row's accumulators d_w and d_b; dshown is the row's scratch (2H: ds, tanh(s)).
template <typename T>
ROW_FN void ln_backward_row(const T* __restrict a, const T* __restrict c, const T* __restrict cprev,
                            const T* __restrict dm, T* __restrict dc, T* __restrict dg, int64_t H, const Variant<T>& v,
                            T mean, T rstd, T* __restrict dshown, double* __restrict d_w, double* __restrict d_b) {
  const int64_t F = v.coupled ? 0 : H, Gg = F + H, O = Gg + H;
  const T* __restrict w = v.ln_c_w;
  const T* __restrict bb = v.ln_c_b;
  double s1d = 0, s2d = 0;
  #pragma omp simd reduction(+ : s1d, s2d)
  for (int64_t j = 0; j < H; ++j) {
    const T o = a[O + j], chat = (c[j] - mean) * rstd;
    const T tc = tanh_<T>(chat * w[j] + bb[j]);
    const T ds = dm[j] * o * (T(1) - tc * tc);
    dshown[j] = ds;
    dshown[H + j] = tc;
    d_w[j] += double(ds * chat);
    d_b[j] += double(ds);
    s1d += double(ds * w[j]);
    s2d += double(ds * w[j] * chat);
  }
  const T s1 = T(s1d / double(H)), s2 = T(s2d / double(H));
  for (int64_t j = 0; j < H; ++j) {
    const T o = a[O + j], f = a[F + j], g = a[Gg + j], chat = (c[j] - mean) * rstd;
    const T tc = dshown[H + j];
    const T dzo = dm[j] * tc * o * (T(1) - o);
    const T d_c = dc[j] + dzo * v.co[j] + rstd * (dshown[j] * w[j] - s1 - chat * s2);
    if (v.coupled) {
      const T dzf = d_c * (cprev[j] - g) * f * (T(1) - f);
      dg[F + j] = dzf;
      dg[Gg + j] = d_c * (T(1) - f) * (T(1) - g * g);
      dg[O + j] = dzo;
      dc[j] = d_c * f + dzf * v.cf[j];
    } else {
      const T i = a[j];
      const T dzi = d_c * g * i * (T(1) - i);
      const T dzf = d_c * cprev[j] * f * (T(1) - f);
      dg[j] = dzi;
      dg[F + j] = dzf;
      dg[Gg + j] = d_c * i * (T(1) - g * g);
      dg[O + j] = dzo;
      dc[j] = d_c * f + dzi * v.ci[j] + dzf * v.cf[j];
    }
  }
}

template <typename T>
inline void variant_backward_row(const T* a, const T* c, const T* cprev, const T* dm, T* dc, T* dg, int64_t H,
                                 const Variant<T>& v) {
  if (v.coupled)
    coupled_backward_row<T>(a, c, cprev, dm, dc, dg, H, v.cf, v.co);
  else
    peephole_backward_row<T>(a, c, cprev, dm, dc, dg, H, v.ci, v.cf, v.co);
}

// The peephole weights as the kernel reads them: the tensors given, zeros for the others.
template <typename T>
Variant<T> make_variant(bool coupled, const std::optional<Tensor>& w_ci, const std::optional<Tensor>& w_cf,
                        const std::optional<Tensor>& w_co, const Tensor& zeros, std::vector<Tensor>& keep,
                        const std::optional<Tensor>& ln_c_w, const std::optional<Tensor>& ln_c_b) {
  Variant<T> v;
  v.coupled = coupled;
  auto pick = [&](const std::optional<Tensor>& w) -> const T* {
    if (!w.has_value()) return zeros.data_ptr<T>();
    keep.push_back(w->contiguous());
    return keep.back().data_ptr<T>();
  };
  v.ci = pick(w_ci);
  v.cf = pick(w_cf);
  v.co = pick(w_co);
  if (ln_c_w.has_value()) {
    v.ln_c_w = pick(ln_c_w);
    v.ln_c_b = pick(ln_c_b);
  }
  return v;
}

// Zoneout (Krueger et al. 2016): x = d old + (1 - d) x, where d = 1 keeps a unit's previous value (the masks, one row
// per step in time order, or the constant z in eval, come from the module).
template <typename T>
ROW_FN void zone_block(const T* __restrict d, const T* __restrict old, T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = d[j] * old[j] + (T(1) - d[j]) * x[j];
}
// c~ = f c_prev + i g, the cell before zoneout, recomputed in backward from the saved gates (i = 1 - f with coupled
// gates); a finished row's saved gates are zeros, which gives c~ = 0 there.
template <typename T>
ROW_FN void cell_tilde_row(const T* __restrict a, const T* __restrict cprev, T* __restrict ct, int64_t H,
                           bool coupled) {
  if (coupled) {
    for (int64_t j = 0; j < H; ++j) ct[j] = a[j] * cprev[j] + (T(1) - a[j]) * a[H + j];
  } else {
    for (int64_t j = 0; j < H; ++j) ct[j] = a[H + j] * cprev[j] + a[j] * a[2 * H + j];
  }
}
// The backward of zone_block for the gradient g flowing into x: the kept part d g goes to the old value (carry),
// the rest (1 - d) g to the new one (in place).
template <typename T>
ROW_FN void unzone_block(const T* __restrict d, T* __restrict g, T* __restrict carry, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    carry[j] = d[j] * g[j];
    g[j] = (T(1) - d[j]) * g[j];
  }
}

// ------------------------------------------------------------------------------------------------------------
// The time loops: one forward, one backward (BPTT), shared by every cell.
// ------------------------------------------------------------------------------------------------------------
//
// The loops own what all cells share: the step order (reverse walks t from T-1 down), the shrinking batch (rows
// sorted by length, the live prefix through the GEMM), the streaming resets, the recurrent GEMM with the recurrent
// dropout mask, the split of the batch rows over threads, and dL/dh's accumulation across steps. A cell (LstmForward
// / LstmBackward with the LSTM's variants, SlstmForward / SlstmBackward) supplies the pointwise work of one row and
// step and what it does before and after the rows of a step:
//   forward:  h (the state the GEMM reads, (B, S)), reset_row(b), begin_step(t), row(t, b, gh_row),
//             finished_row(t, b), end_step(t, n_live)
//   backward: begin_step(t, n_live), row(t, b, tprev, first), finished_row(t, b), rec_grad(t) (what the GEMM with
//             W_hh takes), take_dh(b, dr_row)
// and compile-time facts: scalar (its element type) and kResets (whether it can start a row afresh mid-sequence).
// Cells are plain structs reached through these templates, so every call inlines (no virtual call or std::function
// per row); the row functions they call stay out of line (ROW_FN), which keeps gcc vectorising each gate loop.

struct Walk {
  int64_t T_, B, G;
  const int64_t* len;  // lengths (B), or null
  bool sorted;         // lengths sorted longest first: the live rows of a step are a prefix of the batch
  const bool* rs;      // resets (T, B), or null
  bool reverse;
  const std::optional<Tensor>& h_mask;  // recurrent dropout mask (B, S), or none
  bool live(int64_t t, int64_t b) const { return len == nullptr || t < len[b]; }
};

template <typename Cell>
void forward_loop(Cell& cell, const Walk& w, StepGemm& rec) {
  using T = typename Cell::scalar;
  const int64_t T_ = w.T_, B = w.B, G = w.G;
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t t = w.reverse ? T_ - 1 - step : step;
    const int64_t n_live = live_prefix(w.len, w.sorted, B, t);
    if constexpr (Cell::kResets) {
      if (w.rs != nullptr) {  // where set, the row's state starts the step from 0
        for (int64_t b = 0; b < B; ++b)
          if (w.rs[t * B + b]) cell.reset_row(b);
      }
    }
    // (B, G) = h_{t-1} W_hh^T; recurrent dropout (Gal & Ghahramani) masks h_{t-1} on this path only.
    Tensor gh = rec.run_prefix(w.h_mask.has_value() ? cell.h * *w.h_mask : cell.h, n_live);
    const T* ghp = n_live > 0 ? gh.data_ptr<T>() : nullptr;
    cell.begin_step(t);
    at::parallel_for(0, B, grain_rows(G), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        if (w.live(t, b))
          cell.row(t, b, ghp + b * G);
        else  // the sequence has ended: state unchanged, output zero
          cell.finished_row(t, b);
      }
    });
    cell.end_step(t, n_live);
  }
}

// go: dL/d(output) (T, B, S); dhp: dL/dh (B, S), flowing back from later steps, updated in place.
template <typename Cell>
void backward_loop(Cell& cell, const Walk& w, StepGemm& rec, const typename Cell::scalar* go,
                   typename Cell::scalar* dhp, int64_t S) {
  using T = typename Cell::scalar;
  const int64_t T_ = w.T_, B = w.B, G = w.G;
  for (int64_t step = T_ - 1; step >= 0; --step) {
    const int64_t t = w.reverse ? T_ - 1 - step : step;
    const int64_t tprev = w.reverse ? t + 1 : t - 1;  // the step processed before t
    const bool first = step == 0;
    const int64_t n_live = live_prefix(w.len, w.sorted, B, t);
    // dh += grad of the output at t, for live rows (a finished row's output is a constant zero).
    const T* got = go + t * B * S;
    for (int64_t b = 0; b < B; ++b) {
      if (!w.live(t, b)) continue;
      T* d = dhp + b * S;
      const T* g = got + b * S;
      for (int64_t j = 0; j < S; ++j) d[j] += g[j];
    }
    cell.begin_step(t, n_live);
    at::parallel_for(0, B, grain_rows(G), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        if (w.live(t, b))
          cell.row(t, b, tprev, first);
        else  // a finished row: the step was the identity on its state
          cell.finished_row(t, b);
      }
    });
    Tensor dh_rec = rec.run_prefix(cell.rec_grad(t), n_live);  // (B, S) = d_gates_t W_hh, live rows first
    if (w.h_mask.has_value() && n_live > 0) dh_rec = (dh_rec * w.h_mask->narrow(0, 0, n_live)).contiguous();
    const T* dr = n_live > 0 ? dh_rec.data_ptr<T>() : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      if (!w.live(t, b)) continue;  // finished rows carry dh through unchanged
      if constexpr (Cell::kResets) {
        if (w.rs != nullptr && w.rs[t * B + b]) {  // no gradient flows past a reset
          std::memset(dhp + b * S, 0, sizeof(T) * S);
          continue;
        }
      }
      cell.take_dh(b, dr + b * S);
    }
  }
}

// ------------------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------------------

// Which row functions an LSTM cell runs: the plain LSTM's, the variants' (peepholes, coupled gates: absent
// peepholes read zeros), or the variants' with layer norm.
enum class Gates { Plain, Variant, LayerNorm };

// Calls f(cell) with a default-constructed Cell<T, K, Zoneout, Proj> for the flags of this call: the per-call
// choices are template parameters, so each combination is its own instantiation of the time loops, with no
// runtime test of them inside a step (12 combinations per cell and scalar type).
template <template <typename, Gates, bool, bool> class Cell, typename T, Gates K, bool Zoneout, typename F>
void with_proj(bool proj, F& f) {
  if (proj) {
    Cell<T, K, Zoneout, true> cell;
    f(cell);
  } else {
    Cell<T, K, Zoneout, false> cell;
    f(cell);
  }
}
template <template <typename, Gates, bool, bool> class Cell, typename T, Gates K, typename F>
void with_zoneout(bool zoneout, bool proj, F& f) {
  if (zoneout)
    with_proj<Cell, T, K, true>(proj, f);
  else
    with_proj<Cell, T, K, false>(proj, f);
}
template <template <typename, Gates, bool, bool> class Cell, typename T, typename F>
void with_lstm_cell(Gates kind, bool zoneout, bool proj, F&& f) {
  switch (kind) {
    case Gates::Plain: with_zoneout<Cell, T, Gates::Plain>(zoneout, proj, f); break;
    case Gates::Variant: with_zoneout<Cell, T, Gates::Variant>(zoneout, proj, f); break;
    case Gates::LayerNorm: with_zoneout<Cell, T, Gates::LayerNorm>(zoneout, proj, f); break;
  }
}

inline Gates gates_kind(bool coupled, bool ln, bool peephole) {
  return ln ? Gates::LayerNorm : (coupled || peephole) ? Gates::Variant : Gates::Plain;
}

// The LSTM cell in the forward loop, every variant: states h (B, P) and c (B, H). K, Zoneout (z_c or z_h given)
// and Proj (W_hr given) are fixed at compile time; save stays a pointer test, once per row.
template <typename T, Gates K, bool Zoneout, bool Proj>
struct LstmForward {
  using scalar = T;
  static constexpr bool kResets = true;
  static constexpr bool ln = K == Gates::LayerNorm, variant = K != Gates::Plain, proj = Proj;
  int64_t B = 0, G = 0, H = 0, P = 0;
  bool save = false;
  Variant<T> var;
  const int64_t* len = nullptr;
  Tensor h, m;                       // the state h (B, P), updated in place; m = o tanh(c) before the projection
  StepGemm* prj = nullptr;           // the projection W_hr, or null
  const T* xp = nullptr;             // x_proj (T, B, G)
  T *hs = nullptr, *cs = nullptr;    // h, c
  T* out_p = nullptr;                // (T, B, P)
  T *gates_p = nullptr, *cells_p = nullptr;  // saved for backward, when save
  T* scratch = nullptr;              // gate activations when nothing is saved (B, G)
  const T *zcp = nullptr, *zhp = nullptr;    // zoneout masks (T, B, H) and (T, B, P), or null
  T* cprev_buf = nullptr;            // c_{t-1} kept aside with zoneout of c (B, H)
  const T* ln_hh_p = nullptr;        // layer norm: the recurrent product's gain (G)
  T *ln_hat_p = nullptr, *ln_stats_p = nullptr, *lnx_buf = nullptr;
  int64_t ln_width = 0;
  // this step's rows
  T *gsave = nullptr, *csave = nullptr, *ot = nullptr, *mp = nullptr;

  void reset_row(int64_t b) {
    std::memset(hs + b * P, 0, sizeof(T) * P);
    std::memset(cs + b * H, 0, sizeof(T) * H);
  }
  void begin_step(int64_t t) {
    mp = proj ? m.data_ptr<T>() : nullptr;
    gsave = save ? gates_p + t * B * G : nullptr;
    csave = save ? cells_p + t * B * H : nullptr;
    ot = out_p + t * B * P;
  }
  void finished_row(int64_t, int64_t b) {
    if (gsave) std::memset(gsave + b * G, 0, sizeof(T) * G);
    if (csave) std::memcpy(csave + b * H, cs + b * H, sizeof(T) * H);
    if (!proj) std::memset(ot + b * P, 0, sizeof(T) * P);
  }
  void row(int64_t t, int64_t b, const T* ghrow) {
    T* crow = cs + b * H;
    T* act = gsave ? gsave + b * G : scratch + b * G;
    T* mrow = proj ? mp + b * H : ot + b * P;
    if (Zoneout && zcp) std::memcpy(cprev_buf + b * H, crow, sizeof(T) * H);
    T* stats = nullptr;
    if constexpr (ln) {  // Ba et al.: gates = x_proj + LN(h W_hh^T) a_hh (+ b_hh, already in x_proj)
      T* lrow = lnx_buf + b * ln_width;
      T* zhat = save ? ln_hat_p + (t * B + b) * G : lrow + G;
      stats = save ? ln_stats_p + (t * B + b) * 3 : lrow + 2 * G;
      stats[0] = ln_rows_forward<T>(ghrow, ln_hh_p, zhat, lrow, G);
      ghrow = lrow;
    }
    if constexpr (variant)
      variant_forward_row<T>(xp + (t * B + b) * G, ghrow, act, crow, mrow, H, var, stats ? stats + 1 : nullptr);
    else
      forward_row<T>(xp + (t * B + b) * G, ghrow, act, crow, mrow, H);
    // Zoneout last: h~ = o tanh(c~) above used the un-zoned c~ (the paper's equations).
    if (Zoneout && zcp) zone_block<T>(zcp + (t * B + b) * H, cprev_buf + b * H, crow, H);
    if (Zoneout && zhp && !proj) zone_block<T>(zhp + (t * B + b) * P, hs + b * P, mrow, P);
    if (csave) std::memcpy(csave + b * H, crow, sizeof(T) * H);
    if (!proj) std::memcpy(hs + b * P, mrow, sizeof(T) * P);
  }
  void end_step(int64_t t, int64_t n_live) {
    if constexpr (!proj) return;
    Tensor hp = prj->run_prefix(m, n_live);  // (B, P) = m W_hr^T
    const T* hpp = n_live > 0 ? hp.data_ptr<T>() : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const bool live = len == nullptr || t < len[b];
      if (live) {
        std::memcpy(ot + b * P, hpp + b * P, sizeof(T) * P);
        if (Zoneout && zhp) zone_block<T>(zhp + (t * B + b) * P, hs + b * P, ot + b * P, P);
        std::memcpy(hs + b * P, ot + b * P, sizeof(T) * P);
      } else {
        std::memset(ot + b * P, 0, sizeof(T) * P);
      }
    }
  }
};

template <typename T>
std::vector<Tensor> forward_impl(const Tensor& x_proj, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                                 const std::optional<Tensor>& w_hr, const std::optional<Tensor>& lengths,
                                 const std::optional<Tensor>& h_mask, const std::optional<Tensor>& w_ci,
                                 const std::optional<Tensor>& w_cf, const std::optional<Tensor>& w_co,
                                 const std::optional<Tensor>& z_c, const std::optional<Tensor>& z_h,
                                 const std::optional<Tensor>& ln_hh, const std::optional<Tensor>& ln_c_w,
                                 const std::optional<Tensor>& ln_c_b, bool coupled, bool reverse, bool save,
                                 const std::optional<Tensor>& reset, bool use_onednn,
                                 const std::optional<Tensor>& bias) {
  const int64_t T_ = x_proj.size(0), B = x_proj.size(1), G = x_proj.size(2), H = G / (coupled ? 3 : 4);
  const bool ln = ln_hh.has_value();
  const bool proj = w_hr.has_value();
  const int64_t P = proj ? w_hr->size(0) : H;
  auto opts = x_proj.options();

  const bool variant_given = w_ci.has_value() || w_cf.has_value() || w_co.has_value();
  Tensor out = at::empty({T_, B, P}, opts);
  Tensor gates = save ? at::empty({T_, B, G}, opts) : at::empty({0}, opts);
  Tensor cells = save ? at::empty({T_, B, H}, opts) : at::empty({0}, opts);
  Tensor h = h0.contiguous().clone();  // (B, P) the state, updated in place
  Tensor c = c0.contiguous().clone();  // (B, H)
  Tensor m = proj ? at::empty({B, H}, opts) : Tensor();  // o * tanh(c) before the projection
  Tensor scratch_t = save ? Tensor() : at::empty({B, G}, opts);  // gate activations when nothing is saved
  Tensor zeros = at::zeros({H}, opts);
  std::vector<Tensor> keep;
  const Variant<T> var = make_variant<T>(coupled, w_ci, w_cf, w_co, zeros, keep, ln_c_w, ln_c_b);
  // Layer norm: saved for backward, the normalised recurrent product zhat (T, B, G), read by backward for live
  // steps only (left unwritten where a finished row skips a step), and per row and step (1/std of the recurrent
  // product, mean and 1/std of c~) (T, B, 3), zeros where a finished row skips a step.
  Tensor ln_hat = ln && save ? at::empty({T_, B, G}, opts) : at::empty({0}, opts);
  Tensor ln_stats = ln && save ? at::zeros({T_, B, 3}, opts) : at::empty({0}, opts);
  const int64_t ln_width = save ? G : 2 * G + 3;
  Tensor ln_scratch = ln ? at::empty({B, ln_width}, opts) : Tensor();  // lnx (and zhat, stats)
  Tensor ln_hh_c = ln ? ln_hh->contiguous() : Tensor();

  // Kept between calls for inference only: a training step's optimiser changes the weights before the next call.
  // The biases (b_ih + b_hh), when given, join each step's recurrent product in the GEMM rather than x_proj: one
  // pass over (T, B, G) less than adding them to the input projection, whose GEMM would first copy them out.
  Tensor bias_c = bias.has_value() ? bias->contiguous() : Tensor();
  StepGemm rec(w_hh, B, use_onednn, /*keep=*/!save,
               bias.has_value() ? std::optional<Tensor>(bias_c) : std::nullopt);
  std::optional<StepGemm> prj;
  if (proj) prj.emplace(*w_hr, B, use_onednn, /*keep=*/!save);
  // Zoneout: the masks (T, B, H) and (T, B, P), and c_{t-1} kept aside while the row function updates c in place.
  Tensor zc_t = z_c.has_value() ? z_c->contiguous() : Tensor(), zh_t = z_h.has_value() ? z_h->contiguous() : Tensor();
  Tensor cprev_t = z_c.has_value() ? at::empty({B, H}, opts) : Tensor();

  const int64_t* len = lengths.has_value() ? lengths->data_ptr<int64_t>() : nullptr;
  // Streaming resets (T, B), forward in time only: where set, the row's h and c start the step from 0.
  Tensor reset_c = reset.has_value() ? reset->contiguous() : Tensor();
  const bool* rs = reset.has_value() ? reset_c.data_ptr<bool>() : nullptr;
  const Walk walk{T_, B, G, len, sorted_longest_first(len, B), rs, reverse, h_mask};

  auto run = [&](auto& cell) {
    cell.B = B, cell.G = G, cell.H = H, cell.P = P;
    cell.save = save;
    cell.var = var;
    cell.len = len;
    cell.h = h;
    cell.m = m;
    cell.prj = proj ? &*prj : nullptr;
    cell.xp = x_proj.data_ptr<T>();
    cell.hs = h.data_ptr<T>();
    cell.cs = c.data_ptr<T>();
    cell.out_p = out.data_ptr<T>();
    cell.gates_p = save ? gates.data_ptr<T>() : nullptr;
    cell.cells_p = save ? cells.data_ptr<T>() : nullptr;
    cell.scratch = save ? nullptr : scratch_t.data_ptr<T>();
    cell.zcp = z_c.has_value() ? zc_t.data_ptr<T>() : nullptr;
    cell.zhp = z_h.has_value() ? zh_t.data_ptr<T>() : nullptr;
    cell.cprev_buf = z_c.has_value() ? cprev_t.data_ptr<T>() : nullptr;
    if (ln) {
      cell.lnx_buf = ln_scratch.data_ptr<T>();
      cell.ln_hh_p = ln_hh_c.data_ptr<T>();
      cell.ln_hat_p = ln_hat.data_ptr<T>();
      cell.ln_stats_p = ln_stats.data_ptr<T>();
    }
    cell.ln_width = ln_width;
    forward_loop(cell, walk, rec);
  };
  with_lstm_cell<LstmForward, T>(gates_kind(coupled, ln, variant_given), z_c.has_value() || z_h.has_value(), proj,
                                 run);
  return {out, h, c, gates, cells, ln_hat, ln_stats};
}

// ------------------------------------------------------------------------------------------------------------
// Backward (BPTT): from the last step processed to the first.
// ------------------------------------------------------------------------------------------------------------

// The state each step started from, stacked: (T, B, S). For the forward direction h_{t-1} is out[t-1] (h0 at
// t = 0); a row that is live at step t was live at every step before it, so the output there is its state. In
// reverse, the step before t is t+1, where a row may not have started yet (its state then is still the initial one).
Tensor previous_states(const Tensor& seq, const Tensor& init, const std::optional<Tensor>& lengths, bool reverse) {
  const int64_t T_ = seq.size(0);
  Tensor prev = at::empty_like(seq);
  if (T_ == 0) return prev;
  if (!reverse) {
    prev[0].copy_(init);
    if (T_ > 1) prev.narrow(0, 1, T_ - 1).copy_(seq.narrow(0, 0, T_ - 1));
    return prev;
  }
  prev[T_ - 1].copy_(init);
  if (T_ > 1) prev.narrow(0, 0, T_ - 1).copy_(seq.narrow(0, 1, T_ - 1));
  if (lengths.has_value()) {
    // Rows not yet started at t+1 (t+1 >= length): their state before step t is the initial state.
    Tensor t1 = at::arange(1, T_ + 1, lengths->options()).unsqueeze(1);  // (T, 1)
    Tensor fresh = (t1 >= lengths->unsqueeze(0)).unsqueeze(2);           // (T, B, 1)
    prev = at::where(fresh, init.unsqueeze(0), prev);
  }
  return prev;
}

// The LSTM cell in the backward loop, every variant: dL/dh (B, P) and dL/dc (B, H) flow back through the steps.
template <typename T, Gates K, bool Zoneout, bool Proj>
struct LstmBackward {
  using scalar = T;
  static constexpr bool kResets = true;
  static constexpr bool ln = K == Gates::LayerNorm, variant = K != Gates::Plain, proj = Proj;
  int64_t B = 0, G = 0, H = 0, P = 0;
  bool coupled = false;
  Variant<T> var;
  const bool* rs = nullptr;
  StepGemm* prj = nullptr;  // W_hr^T, or null
  Tensor dh, dh_tilde, dm, d_gates, d_gh;
  const T *gp = nullptr, *cp = nullptr, *c0p = nullptr, *zero_row = nullptr;  // saved gates, cells; c0; zeros (H)
  T *dgp = nullptr, *dhp = nullptr, *dcp = nullptr, *d_h_all_p = nullptr;
  const T *zcp = nullptr, *zhp = nullptr;  // zoneout masks, or null
  T *ctp = nullptr, *dccp = nullptr, *dhtp = nullptr, *dhcp = nullptr;
  const T *ln_hh_p = nullptr, *ln_hat_p = nullptr, *ln_stats_p = nullptr;
  T *d_gh_p = nullptr, *d_shown_p = nullptr;   // d loss / d recurrent product (T, B, G); ds and tanh(s) scratch (B, 2H)
  double* d_ln_p = nullptr;                    // per row: the gains' and shift's gradients so far (B, G + 2H)
  double* d_bias_p = nullptr;                  // per row: the step GEMM's bias gradient so far (B, G), or null
  // this step
  const T* dmp = nullptr;
  T* dgt = nullptr;

  void begin_step(int64_t t, int64_t n_live) {
    // With zoneout of h, the step's own output h~_t gets (1 - d) dh; d dh goes to h_{t-1} directly.
    if (Zoneout && zhp) {
      std::memcpy(dhtp, dhp, sizeof(T) * B * P);
      unzone_block<T>(zhp + t * B * P, dhtp, dhcp, B * P);
    }
    T* dhs = zhp ? dhtp : dhp;  // dL/dh~_t
    if constexpr (proj) {
      std::memcpy(d_h_all_p + t * B * P, dhs, sizeof(T) * B * P);
      dm = prj->run_prefix(zhp ? dh_tilde : dh, n_live);  // (B, H) = dh~ W_hr
    }
    dmp = proj ? (n_live > 0 ? dm.data_ptr<T>() : nullptr) : dhs;
    dgt = dgp + t * B * G;
  }
  void finished_row(int64_t t, int64_t b) {
    std::memset(dgt + b * G, 0, sizeof(T) * G);
    if constexpr (ln) std::memset(d_gh_p + (t * B + b) * G, 0, sizeof(T) * G);
  }
  void row(int64_t t, int64_t b, int64_t tprev, bool first) {
    T* dg = dgt + b * G;
    // A reset row started its step from h = c = 0: c_{t-1} reads as zeros, and no gradient flows past the reset.
    const bool reset = rs != nullptr && rs[t * B + b];
    const T* cprev = reset ? zero_row : first ? c0p + b * H : cp + (tprev * B + b) * H;
    const T* a = gp + (t * B + b) * G;
    const T* cell = cp + (t * B + b) * H;  // c_t, which is c~_t without zoneout
    if (Zoneout && zcp) {
      T* ct = ctp + (t * B + b) * H;
      cell_tilde_row<T>(a, cprev, ct, H, coupled);
      cell = ct;
      unzone_block<T>(zcp + (t * B + b) * H, dcp + b * H, dccp + b * H, H);  // dc -> dc~, carry d dc
    }
    if constexpr (ln) {
      const T* st = ln_stats_p + (t * B + b) * 3;
      double* acc = d_ln_p + b * (G + 2 * H);  // d ln_hh (G), d ln_c_w (H), d ln_c_b (H): this row's only
      ln_backward_row<T>(a, cell, cprev, dmp + b * (proj ? H : P), dcp + b * H, dg, H, var, st[1], st[2],
                         d_shown_p + b * 2 * H, acc + G, acc + G + H);
      ln_rows_backward<T>(dg, ln_hh_p, ln_hat_p + (t * B + b) * G, st[0], d_gh_p + (t * B + b) * G, acc, G);
    } else if constexpr (variant) {
      variant_backward_row<T>(a, cell, cprev, dmp + b * (proj ? H : P), dcp + b * H, dg, H, var);
    } else {
      backward_row<T>(a, cell, cprev, dmp + b * (proj ? H : P), dcp + b * H, dg, H);
    }
    if (Zoneout && zcp) {
      T* d = dcp + b * H;
      const T* k = dccp + b * H;
      for (int64_t j = 0; j < H; ++j) d[j] += k[j];
    }
    if (d_bias_p) {
      double* acc = d_bias_p + b * G;
      #pragma omp simd
      for (int64_t j = 0; j < G; ++j) acc[j] += double(dg[j]);
    }
    if (reset) std::memset(dcp + b * H, 0, sizeof(T) * H);
  }
  Tensor rec_grad(int64_t t) const { return ln ? d_gh[t] : d_gates[t]; }  // W_hh's gradient is before the LN
  void take_dh(int64_t b, const T* dr) {
    if (Zoneout && zhp) {
      T* d = dhp + b * P;
      const T* k = dhcp + b * P;
      for (int64_t j = 0; j < P; ++j) d[j] = dr[j] + k[j];
    } else {
      std::memcpy(dhp + b * P, dr, sizeof(T) * P);
    }
  }
};

template <typename T>
std::vector<Tensor> backward_impl(const Tensor& grad_out_in, const Tensor& grad_hn, const Tensor& grad_cn,
                                  const Tensor& out, const Tensor& h0, const Tensor& c0, const Tensor& gates,
                                  const Tensor& cells, const Tensor& w_hh, const std::optional<Tensor>& w_hr,
                                  const std::optional<Tensor>& lengths, const std::optional<Tensor>& h_mask,
                                  const std::optional<Tensor>& w_ci, const std::optional<Tensor>& w_cf,
                                  const std::optional<Tensor>& w_co, const std::optional<Tensor>& z_c,
                                  const std::optional<Tensor>& z_h, const Tensor& ln_hat, const Tensor& ln_stats,
                                  const std::optional<Tensor>& ln_hh, const std::optional<Tensor>& ln_c_w,
                                  const std::optional<Tensor>& ln_c_b, bool coupled, bool reverse,
                                  const std::optional<Tensor>& reset, bool use_onednn, bool bias) {
  const int64_t T_ = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / (coupled ? 3 : 4);
  const bool ln = ln_hh.has_value();
  const bool variant = coupled || ln || w_ci.has_value() || w_cf.has_value() || w_co.has_value();
  const bool proj = w_hr.has_value();
  const int64_t P = proj ? w_hr->size(0) : H;
  auto opts = gates.options();
  Tensor grad_out = grad_out_in.contiguous();

  Tensor d_gates = at::empty({T_, B, G}, opts);         // d loss / d gate pre-activations, every step
  Tensor d_h_all = proj ? at::empty({T_, B, P}, opts) : Tensor();  // d loss / d h_t, for dW_hr
  Tensor dh = grad_hn.contiguous().clone();               // (B, P) gradient flowing into h_t from later steps
  Tensor dc = grad_cn.contiguous().clone();               // (B, H)
  Tensor c0c = c0.contiguous();
  Tensor zeros = at::zeros({H}, opts);
  std::vector<Tensor> keep;
  const Variant<T> var = make_variant<T>(coupled, w_ci, w_cf, w_co, zeros, keep, ln_c_w, ln_c_b);
  // Layer norm: the gradient of the recurrent product before its LN (what W_hh and h_{t-1} get), every step; the
  // gains' and shift's gradients accumulated per row in double (each row belongs to one thread within a step, so
  // the sums need no locks and do not depend on the thread count), summed over the rows after the loop.
  Tensor d_gh = ln ? at::empty({T_, B, G}, opts) : Tensor();
  Tensor d_shown = ln ? at::empty({B, 2 * H}, opts) : Tensor();
  Tensor d_ln = ln ? at::zeros({B, G + 2 * H}, opts.dtype(at::kDouble)) : Tensor();
  // The step GEMM's bias, when it has one: its gradient, the gates' summed over steps and rows, accumulated the same
  // way (finished rows add nothing).
  Tensor d_bias = bias ? at::zeros({B, G}, opts.dtype(at::kDouble)) : Tensor();
  Tensor ln_hh_c = ln ? ln_hh->contiguous() : Tensor();
  Tensor ln_hat_c = ln ? ln_hat.contiguous() : Tensor(), ln_stats_c = ln ? ln_stats.contiguous() : Tensor();

  // Backward multiplies by W_hh (not its transpose): a GEMM with weight W_hh^T (P, 4H).
  StepGemm rec(w_hh.t().contiguous(), B, use_onednn);
  std::optional<StepGemm> prj;
  if (proj) prj.emplace(w_hr->t().contiguous(), B, use_onednn);

  // Zoneout: with z_c, backward needs c~_t (what tanh and the o peephole saw), recomputed from the saved gates and
  // c_{t-1}, and the part of dL/dc_t that the mask carries straight to c_{t-1}; with z_h, dL/dh~_t.
  Tensor zc_t = z_c.has_value() ? z_c->contiguous() : Tensor(), zh_t = z_h.has_value() ? z_h->contiguous() : Tensor();
  const T* zcp = z_c.has_value() ? zc_t.data_ptr<T>() : nullptr;
  const T* zhp = z_h.has_value() ? zh_t.data_ptr<T>() : nullptr;
  Tensor c_tilde = zcp ? at::zeros({T_, B, H}, opts) : Tensor();  // zeros: finished rows are never written
  Tensor dc_carry = zcp ? at::empty({B, H}, opts) : Tensor();
  Tensor dh_tilde = zhp ? at::empty({B, P}, opts) : Tensor();
  Tensor dh_carry = zhp ? at::empty({B, P}, opts) : Tensor();
  T* ctp = zcp ? c_tilde.data_ptr<T>() : nullptr;
  T* dccp = zcp ? dc_carry.data_ptr<T>() : nullptr;
  T* dhtp = zhp ? dh_tilde.data_ptr<T>() : nullptr;
  T* dhcp = zhp ? dh_carry.data_ptr<T>() : nullptr;

  const int64_t* len = lengths.has_value() ? lengths->data_ptr<int64_t>() : nullptr;
  Tensor reset_c = reset.has_value() ? reset->contiguous() : Tensor();
  const bool* rs = reset.has_value() ? reset_c.data_ptr<bool>() : nullptr;

  const Walk walk{T_, B, G, len, sorted_longest_first(len, B), rs, reverse, h_mask};
  auto run = [&](auto& cell) {
    cell.B = B, cell.G = G, cell.H = H, cell.P = P;
    cell.coupled = coupled;
    cell.var = var;
    cell.rs = rs;
    cell.prj = proj ? &*prj : nullptr;
    cell.dh = dh, cell.dh_tilde = dh_tilde, cell.d_gates = d_gates, cell.d_gh = d_gh;
    cell.gp = gates.data_ptr<T>();
    cell.cp = cells.data_ptr<T>();
    cell.c0p = c0c.data_ptr<T>();
    cell.zero_row = zeros.data_ptr<T>();
    cell.dgp = d_gates.data_ptr<T>();
    cell.dhp = dh.data_ptr<T>();
    cell.dcp = dc.data_ptr<T>();
    cell.d_h_all_p = proj ? d_h_all.data_ptr<T>() : nullptr;
    cell.zcp = zcp, cell.zhp = zhp, cell.ctp = ctp, cell.dccp = dccp, cell.dhtp = dhtp, cell.dhcp = dhcp;
    if (ln) {
      cell.ln_hh_p = ln_hh_c.data_ptr<T>();
      cell.ln_hat_p = ln_hat_c.data_ptr<T>();
      cell.ln_stats_p = ln_stats_c.data_ptr<T>();
      cell.d_gh_p = d_gh.data_ptr<T>();
      cell.d_shown_p = d_shown.data_ptr<T>();
      cell.d_ln_p = d_ln.data_ptr<double>();
    }
    cell.d_bias_p = bias ? d_bias.data_ptr<double>() : nullptr;
    backward_loop(cell, walk, rec, grad_out.data_ptr<T>(), dh.data_ptr<T>(), P);
  };
  with_lstm_cell<LstmBackward, T>(gates_kind(coupled, ln, variant), zcp != nullptr || zhp != nullptr, proj, run);
  // Weight gradients: one GEMM each over all T*B rows.
  Tensor dg2 = (ln ? d_gh : d_gates).view({T_ * B, G});
  Tensor h_prev = previous_states(out, h0, lengths, reverse);
  if (reset.has_value()) h_prev = h_prev.masked_fill(reset_c.unsqueeze(2), 0);
  if (h_mask.has_value()) h_prev = h_prev * *h_mask;
  h_prev = h_prev.reshape({T_ * B, P});
  Tensor grad_w_hh = at::mm(dg2.t(), h_prev);  // (4H, P)
  Tensor grad_w_hr;
  if (proj) {
    // m_t = o_t * tanh(c_t), recomputed rather than saved.
    Tensor shown = zcp ? c_tilde : cells;
    if (ln) shown = (shown - ln_stats_c.narrow(2, 1, 1)) * ln_stats_c.narrow(2, 2, 1) * *ln_c_w + *ln_c_b;
    Tensor mseq = gates.narrow(2, G - H, H) * at::tanh(shown);  // (T, B, H); o is the last gate
    grad_w_hr = at::mm(d_h_all.view({T_ * B, P}).t(), mseq.view({T_ * B, H}));  // (P, H)
  }
  // Peephole weights: sums over all steps and rows of (d pre-activation) * (the cell it looked at). The cells are
  // saved as states (a finished row keeps its last one), so c_{t-1} is the previous step's entry, or c0.
  Tensor grad_ci, grad_cf, grad_co;
  if (w_ci.has_value() || w_cf.has_value() || w_co.has_value()) {
    Tensor c_prev = at::empty_like(cells);
    if (T_ > 0) {
      const int64_t first_t = reverse ? T_ - 1 : 0;
      c_prev[first_t].copy_(c0);
      if (T_ > 1) {
        if (reverse) c_prev.narrow(0, 0, T_ - 1).copy_(cells.narrow(0, 1, T_ - 1));
        else c_prev.narrow(0, 1, T_ - 1).copy_(cells.narrow(0, 0, T_ - 1));
      }
    }
    if (reset.has_value()) c_prev.masked_fill_(reset_c.unsqueeze(2), 0);
    const int64_t F = coupled ? 0 : H;
    if (w_cf.has_value()) grad_cf = (d_gates.narrow(2, F, H) * c_prev).sum({0, 1});
    if (w_co.has_value()) grad_co = (d_gates.narrow(2, G - H, H) * (zcp ? c_tilde : cells)).sum({0, 1});
    if (w_ci.has_value() && !coupled) grad_ci = (d_gates.narrow(2, 0, H) * c_prev).sum({0, 1});
  }
  // Layer norm's gains and shift: sums over all steps and rows, as for the peepholes.
  Tensor grad_ln_hh, grad_ln_c_w, grad_ln_c_b;
  if (ln) {
    auto total = [&](int64_t from, int64_t n) { return d_ln.narrow(1, from, n).sum(0).to(opts.dtype()); };
    grad_ln_hh = total(0, G);
    grad_ln_c_w = total(G, H);
    grad_ln_c_b = total(G + H, H);
  }
  Tensor grad_bias = bias ? d_bias.sum(0).to(opts.dtype()) : Tensor();
  auto or_empty = [&](const Tensor& t) { return t.defined() ? t : at::empty({0}, opts); };
  return {d_gates, dh, dc, grad_w_hh, or_empty(grad_w_hr), or_empty(grad_ci), or_empty(grad_cf), or_empty(grad_co),
          or_empty(grad_ln_hh), or_empty(grad_ln_c_w), or_empty(grad_ln_c_b), or_empty(grad_bias)};
}

// One layer and direction as the ops take it: its weights and masks in one list (engines/fused.py: LSTM_LAYER,
// in this order; absent ones are None) and its flags in another.
enum LstmField {
  W_HH, W_HR, W_CI, W_CF, W_CO, LN_HH, LN_C_W, LN_C_B, BIAS, H_MASK, Z_C, Z_H, RESET, LENGTHS, LSTM_FIELDS
};
using Layer = c10::List<std::optional<Tensor>>;

std::optional<Tensor> field(const Layer& layer, int64_t k) { return layer.get(k); }

// The input projection of an inference forward, x (rows, in) @ w^T + bias through oneDNN, with w's packed copy
// kept between calls while w holds the same bits (PackedCache).
Tensor project(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) && x.scalar_type() == at::kFloat &&
                  w.scalar_type() == at::kFloat,
              "project takes float32 x (rows, in) and w (out, in)");
  static auto linear = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                           .typed<LinearFn>();
  return linear.call(x, packed_cache().get(w, x.size(0)), bias, "none", c10::List<std::optional<at::Scalar>>(),
                     std::nullopt);
}

// flags: [coupled, reverse, save, onednn]
std::vector<Tensor> lstm_forward(const Tensor& x_proj, const Tensor& h0, const Tensor& c0, const Layer& layer,
                                 at::IntArrayRef flags) {
  TORCH_CHECK(layer.size() == LSTM_FIELDS && flags.size() == 4, "forward takes 14 layer fields and 4 flags");
  const bool coupled = flags[0], reverse = flags[1], save = flags[2], onednn = flags[3];
  const auto reset = field(layer, RESET);
  TORCH_CHECK(!(reset.has_value() && reverse), "reset runs forward in time only");
  TORCH_CHECK(x_proj.dim() == 3 && x_proj.size(2) % (coupled ? 3 : 4) == 0, "x_proj must be (T, B, 4H or 3H)");
  TORCH_CHECK(field(layer, W_HH).has_value(), "w_hh is required");
  Tensor xp = x_proj.contiguous();
  return AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstmkit_fused_forward", [&] {
    return forward_impl<scalar_t>(xp, h0, c0, *field(layer, W_HH), field(layer, W_HR), field(layer, LENGTHS),
                                  field(layer, H_MASK), field(layer, W_CI), field(layer, W_CF), field(layer, W_CO),
                                  field(layer, Z_C), field(layer, Z_H), field(layer, LN_HH), field(layer, LN_C_W),
                                  field(layer, LN_C_B), coupled, reverse, save, reset, onednn, field(layer, BIAS));
  });
}

// grads: [grad_out, grad_hn, grad_cn]; saved: [out, h0, c0, gates, cells, ln_hat, ln_stats]; flags: [coupled,
// reverse, onednn]. Returns the gradients of x_proj, h0, c0 and of the layer's weights W_HH .. BIAS in order.
std::vector<Tensor> lstm_backward(at::TensorList grads, at::TensorList saved, const Layer& layer,
                                  at::IntArrayRef flags) {
  TORCH_CHECK(grads.size() == 3 && saved.size() == 7 && layer.size() == LSTM_FIELDS && flags.size() == 3,
              "backward takes 3 gradients, 7 saved tensors, 14 layer fields and 3 flags");
  const bool coupled = flags[0], reverse = flags[1], onednn = flags[2];
  const Tensor& gates = saved[3];
  return AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstmkit_fused_backward", [&] {
    return backward_impl<scalar_t>(grads[0], grads[1], grads[2], saved[0], saved[1], saved[2], gates, saved[4],
                                   *field(layer, W_HH), field(layer, W_HR), field(layer, LENGTHS),
                                   field(layer, H_MASK), field(layer, W_CI), field(layer, W_CF), field(layer, W_CO),
                                   field(layer, Z_C), field(layer, Z_H), saved[5], saved[6], field(layer, LN_HH),
                                   field(layer, LN_C_W), field(layer, LN_C_B), coupled, reverse,
                                   field(layer, RESET), onednn, field(layer, BIAS).has_value());
  });
}

// ------------------------------------------------------------------------------------------------------------
// sLSTM (Beck et al. 2024, xLSTM, eqs. 8-17; reference.slstm_gated_step): exponential input and forget gates with
// a normaliser n and a stabiliser m, gate rows [i, f, z, o]:
//   m_t = max(~f + m_{t-1}, ~i),  i' = exp(~i - m_t),  f' = exp(~f + m_{t-1} - m_t),  z = tanh(~z),  o = sig(~o)
//   c_t = f' c_{t-1} + i' z,  n_t = f' n_{t-1} + i',  h_t = o c_t / n_t
// Saved per step: [i', f', z, o] (4H), c_t and n_t (H each). Backward differentiates through m_t as autograd does
// through the reference (the final c, n and m depend on it); which argument of the max won is read off the saved
// gates: the winner's exponent is exactly 0, so its gate is exactly 1 (both on a tie, where torch.maximum's
// gradient is split in half).
// ------------------------------------------------------------------------------------------------------------

template <typename T>
ROW_FN void slstm_forward_row(const T* __restrict x, const T* __restrict gh, T* __restrict act, T* __restrict c,
                              T* __restrict n, T* __restrict m, T* __restrict h, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T zi = x[j] + gh[j], a = x[H + j] + gh[H + j] + m[j];  // log i, log f + m_{t-1}
    const T mn = std::max(a, zi);                                 // a is -inf on a fresh state (m_0 = -inf)
    const T ip = exp_approx(zi - mn), fp = exp_approx(a - mn);
    const T z = tanh_<T>(x[2 * H + j] + gh[2 * H + j]), o = sigmoid<T>(x[3 * H + j] + gh[3 * H + j]);
    c[j] = fp * c[j] + ip * z;
    n[j] = fp * n[j] + ip;
    m[j] = mn;
    h[j] = o * (c[j] / n[j]);
    act[j] = ip;
    act[H + j] = fp;
    act[2 * H + j] = z;
    act[3 * H + j] = o;
  }
}

// One row backward: dh = dL/dh_t; dc, dn, dm = dL/d(c_t, n_t, m_t) in, dL/d(c, n, m)_{t-1} out (in place).
template <typename T>
ROW_FN void slstm_backward_row(const T* __restrict a, const T* __restrict c, const T* __restrict n,
                               const T* __restrict cprev, const T* __restrict nprev, const T* __restrict dh,
                               T* __restrict dc, T* __restrict dn, T* __restrict dm, T* __restrict dg, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T ip = a[j], fp = a[H + j], z = a[2 * H + j], o = a[3 * H + j];
    const T inv = T(1) / n[j];
    const T d_c = dc[j] + dh[j] * o * inv;           // h = o c / n
    const T d_n = dn[j] - dh[j] * o * c[j] * inv * inv;
    const T d_o = dh[j] * c[j] * inv;
    const T d_fp = d_c * cprev[j] + d_n * nprev[j];  // c = f' c_prev + i' z, n = f' n_prev + i'
    const T d_ip = d_c * z + d_n;
    const T da = d_fp * fp, db = d_ip * ip;          // f' = exp(a - m_t), i' = exp(~i - m_t)
    const T d_m = dm[j] - da - db;                   // everything that reached m_t
    const T to_a = fp == T(1) ? (ip == T(1) ? T(0.5) : T(1)) : T(0);  // m_t = max(a, ~i)
    const T d_a = da + to_a * d_m;
    dg[j] = db + (T(1) - to_a) * d_m;                // d ~i
    dg[H + j] = d_a;                                 // d ~f (a = ~f + m_{t-1})
    dg[2 * H + j] = d_c * ip * (T(1) - z * z);
    dg[3 * H + j] = d_o * o * (T(1) - o);
    dc[j] = d_c * fp;
    dn[j] = d_n * fp;
    dm[j] = d_a;
  }
}

// The sLSTM cell in the forward loop: states h, c, n, m (B, H) each. No resets (kResets false: the loop leaves them
// out at compile time).
template <typename T>
struct SlstmForward {
  using scalar = T;
  static constexpr bool kResets = false;
  int64_t B = 0, G = 0, H = 0;
  Tensor h;
  const T* xp = nullptr;
  T *hs = nullptr, *cs = nullptr, *ns = nullptr, *ms = nullptr, *out_p = nullptr, *scratch = nullptr;
  T *gates_p = nullptr, *cells_p = nullptr, *norms_p = nullptr;  // saved for backward, when saving
  // this step's rows
  T *gsave = nullptr, *csave = nullptr, *nsave = nullptr, *ot = nullptr;

  void reset_row(int64_t) {}
  void begin_step(int64_t t) {
    gsave = gates_p ? gates_p + t * B * G : nullptr;
    csave = cells_p ? cells_p + t * B * H : nullptr;
    nsave = norms_p ? norms_p + t * B * H : nullptr;
    ot = out_p + t * B * H;
  }
  void save_states(int64_t b) {
    if (csave) std::memcpy(csave + b * H, cs + b * H, sizeof(T) * H);
    if (nsave) std::memcpy(nsave + b * H, ns + b * H, sizeof(T) * H);
  }
  void row(int64_t t, int64_t b, const T* ghrow) {
    T* act = gsave ? gsave + b * G : scratch + b * G;
    slstm_forward_row<T>(xp + (t * B + b) * G, ghrow, act, cs + b * H, ns + b * H, ms + b * H, hs + b * H, H);
    std::memcpy(ot + b * H, hs + b * H, sizeof(T) * H);
    save_states(b);
  }
  void finished_row(int64_t, int64_t b) {
    if (gsave) std::memset(gsave + b * G, 0, sizeof(T) * G);
    std::memset(ot + b * H, 0, sizeof(T) * H);
    save_states(b);
  }
  void end_step(int64_t, int64_t) {}
};

template <typename T>
std::vector<Tensor> slstm_forward_impl(const Tensor& x_proj, const Tensor& h0, const Tensor& c0, const Tensor& n0,
                                       const Tensor& m0, const Tensor& w_hh, const std::optional<Tensor>& lengths,
                                       const std::optional<Tensor>& h_mask, bool reverse, bool save,
                                       bool use_onednn) {
  const int64_t T_ = x_proj.size(0), B = x_proj.size(1), G = x_proj.size(2), H = G / 4;
  auto opts = x_proj.options();
  Tensor out = at::empty({T_, B, H}, opts);
  Tensor gates = save ? at::empty({T_, B, G}, opts) : at::empty({0}, opts);
  Tensor cells = save ? at::empty({T_, B, H}, opts) : at::empty({0}, opts);
  Tensor norms = save ? at::empty({T_, B, H}, opts) : at::empty({0}, opts);
  Tensor h = h0.contiguous().clone(), c = c0.contiguous().clone(), n = n0.contiguous().clone();
  Tensor m = m0.contiguous().clone();
  Tensor scratch_t = save ? Tensor() : at::empty({B, G}, opts);
  StepGemm rec(w_hh, B, use_onednn, /*keep=*/!save);
  const int64_t* len = lengths.has_value() ? lengths->data_ptr<int64_t>() : nullptr;
  SlstmForward<T> cell;
  cell.B = B, cell.G = G, cell.H = H;
  cell.h = h;
  cell.xp = x_proj.data_ptr<T>();
  cell.hs = h.data_ptr<T>(), cell.cs = c.data_ptr<T>(), cell.ns = n.data_ptr<T>(), cell.ms = m.data_ptr<T>();
  cell.out_p = out.data_ptr<T>();
  cell.scratch = save ? nullptr : scratch_t.data_ptr<T>();
  if (save) {
    cell.gates_p = gates.data_ptr<T>();
    cell.cells_p = cells.data_ptr<T>();
    cell.norms_p = norms.data_ptr<T>();
  }
  const Walk walk{T_, B, G, len, sorted_longest_first(len, B), nullptr, reverse, h_mask};
  forward_loop(cell, walk, rec);
  return {out, h, c, n, m, gates, cells, norms};
}

// The sLSTM cell in the backward loop: dL/dh flows through the loop, dL/d(c, n, m) through the cell.
template <typename T>
struct SlstmBackward {
  using scalar = T;
  static constexpr bool kResets = false;
  int64_t B = 0, G = 0, H = 0;
  Tensor d_gates;
  const T *gp = nullptr, *cp = nullptr, *np = nullptr, *c0p = nullptr, *n0p = nullptr;
  T *dgp = nullptr, *dhp = nullptr, *dcp = nullptr, *dnp = nullptr, *dmp = nullptr;
  T* dgt = nullptr;  // this step

  void begin_step(int64_t t, int64_t) { dgt = dgp + t * B * G; }
  void finished_row(int64_t, int64_t b) { std::memset(dgt + b * G, 0, sizeof(T) * G); }
  void row(int64_t t, int64_t b, int64_t tprev, bool first) {
    const T* cprev = first ? c0p + b * H : cp + (tprev * B + b) * H;
    const T* nprev = first ? n0p + b * H : np + (tprev * B + b) * H;
    slstm_backward_row<T>(gp + (t * B + b) * G, cp + (t * B + b) * H, np + (t * B + b) * H, cprev, nprev,
                          dhp + b * H, dcp + b * H, dnp + b * H, dmp + b * H, dgt + b * G, H);
  }
  Tensor rec_grad(int64_t t) const { return d_gates[t]; }
  void take_dh(int64_t b, const T* dr) { std::memcpy(dhp + b * H, dr, sizeof(T) * H); }
};

template <typename T>
std::vector<Tensor> slstm_backward_impl(const Tensor& grad_out_in, const Tensor& grad_hn, const Tensor& grad_cn,
                                        const Tensor& grad_nn, const Tensor& grad_mn, const Tensor& out,
                                        const Tensor& h0, const Tensor& c0, const Tensor& n0, const Tensor& gates,
                                        const Tensor& cells, const Tensor& norms, const Tensor& w_hh,
                                        const std::optional<Tensor>& lengths, const std::optional<Tensor>& h_mask,
                                        bool reverse, bool use_onednn) {
  const int64_t T_ = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4;
  auto opts = gates.options();
  Tensor grad_out = grad_out_in.contiguous();
  Tensor d_gates = at::empty({T_, B, G}, opts);
  Tensor dh = grad_hn.contiguous().clone(), dc = grad_cn.contiguous().clone();
  Tensor dn = grad_nn.contiguous().clone(), dm = grad_mn.contiguous().clone();
  Tensor c0c = c0.contiguous(), n0c = n0.contiguous();
  StepGemm rec(w_hh.t().contiguous(), B, use_onednn);
  const int64_t* len = lengths.has_value() ? lengths->data_ptr<int64_t>() : nullptr;
  SlstmBackward<T> cell;
  cell.B = B, cell.G = G, cell.H = H;
  cell.d_gates = d_gates;
  cell.gp = gates.data_ptr<T>(), cell.cp = cells.data_ptr<T>(), cell.np = norms.data_ptr<T>();
  cell.c0p = c0c.data_ptr<T>(), cell.n0p = n0c.data_ptr<T>();
  cell.dgp = d_gates.data_ptr<T>(), cell.dhp = dh.data_ptr<T>(), cell.dcp = dc.data_ptr<T>();
  cell.dnp = dn.data_ptr<T>(), cell.dmp = dm.data_ptr<T>();
  const Walk walk{T_, B, G, len, sorted_longest_first(len, B), nullptr, reverse, h_mask};
  backward_loop(cell, walk, rec, grad_out.data_ptr<T>(), dh.data_ptr<T>(), H);
  Tensor h_prev = previous_states(out, h0, lengths, reverse);
  if (h_mask.has_value()) h_prev = h_prev * *h_mask;
  Tensor grad_w_hh = at::mm(d_gates.view({T_ * B, G}).t(), h_prev.reshape({T_ * B, H}));
  return {d_gates, dh, dc, dn, dm, grad_w_hh};
}

// The sLSTM's layer: [w_hh, h_mask, lengths] (engines/fused.py: SLSTM_LAYER); states [h0, c0, n0, m0].
enum SlstmField { S_W_HH, S_H_MASK, S_LENGTHS, SLSTM_FIELDS };

// flags: [reverse, save, onednn]
std::vector<Tensor> slstm_forward(const Tensor& x_proj, at::TensorList states, const Layer& layer,
                                  at::IntArrayRef flags) {
  TORCH_CHECK(states.size() == 4 && layer.size() == SLSTM_FIELDS && flags.size() == 3,
              "slstm_forward takes 4 states, 3 layer fields and 3 flags");
  TORCH_CHECK(x_proj.dim() == 3 && x_proj.size(2) % 4 == 0, "x_proj must be (T, B, 4H)");
  Tensor xp = x_proj.contiguous();
  return AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstmkit_fused_slstm_forward", [&] {
    return slstm_forward_impl<scalar_t>(xp, states[0], states[1], states[2], states[3], *field(layer, S_W_HH),
                                        field(layer, S_LENGTHS), field(layer, S_H_MASK), flags[0], flags[1],
                                        flags[2]);
  });
}

// grads: [grad_out, grad_hn, grad_cn, grad_nn, grad_mn]; saved: [out, h0, c0, n0, gates, cells, norms];
// flags: [reverse, onednn]. Returns the gradients of x_proj, h0, c0, n0, m0 and w_hh.
std::vector<Tensor> slstm_backward(at::TensorList grads, at::TensorList saved, const Layer& layer,
                                   at::IntArrayRef flags) {
  TORCH_CHECK(grads.size() == 5 && saved.size() == 7 && layer.size() == SLSTM_FIELDS && flags.size() == 2,
              "slstm_backward takes 5 gradients, 7 saved tensors, 3 layer fields and 2 flags");
  const Tensor& gates = saved[4];
  return AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstmkit_fused_slstm_backward", [&] {
    return slstm_backward_impl<scalar_t>(grads[0], grads[1], grads[2], grads[3], grads[4], saved[0], saved[1],
                                         saved[2], saved[3], gates, saved[5], saved[6], *field(layer, S_W_HH),
                                         field(layer, S_LENGTHS), field(layer, S_H_MASK), flags[0], flags[1]);
  });
}

}  // namespace

TORCH_LIBRARY(lstmkit_kernel, m) {
  m.def("forward(Tensor x_proj, Tensor h0, Tensor c0, Tensor?[] layer, int[] flags) -> Tensor[]");
  m.def("backward(Tensor[] grads, Tensor[] saved, Tensor?[] layer, int[] flags) -> Tensor[]");
  m.def("slstm_forward(Tensor x_proj, Tensor[] states, Tensor?[] layer, int[] flags) -> Tensor[]");
  m.def("slstm_backward(Tensor[] grads, Tensor[] saved, Tensor?[] layer, int[] flags) -> Tensor[]");
  m.def("project(Tensor x, Tensor w, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(lstmkit_kernel, CPU, m) {
  m.impl("forward", &lstm_forward);
  m.impl("backward", &lstm_backward);
  m.impl("slstm_forward", &slstm_forward);
  m.impl("slstm_backward", &slstm_backward);
  m.impl("project", &project);
}
