// jaxadapt's XLA:CPU custom calls for decoding one token (built and loaded by jaxadapt/cpu_decode.py), for float32
// and bfloat16 arrays; the arithmetic is float32 throughout, and a bfloat16 result is rounded (to nearest even) once:
// - Matmul: y[M, N] = x[M, K] @ w for small M, with w packed as panels of 32 outputs, [N / 32, K, 32] (see
//   cpu_decode.pack). The step is bound by reading the weights, which XLA:CPU's dot does at about half the machine's
//   bandwidth once M reaches 8 (and far slower in bfloat16). Here the weights are read once, as one sequential
//   stream prefetched well ahead, and every row of x is a broadcast against two 16-lane vectors of a panel: no sums
//   across lanes.
// - DecodeAttention: the new token's attention over one layer of the stacked KV cache, read in place. XLA copies
//   the layer out of the stack and runs two tiny batched dots per layer, which cost more than the layer's weights
//   at batch 8.
// Both split their work over XLA's intra-op thread pool (ParallelFor).

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define JAXADAPT_AVX512 1  // the vector code below; other CPUs get the plain loops after each #else
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

using bf16 = uint16_t;  // bfloat16: the upper half of a float32 (XLA FFI's type for it)

constexpr int64_t kPanel = 32;  // outputs per weight panel (cpu_decode.PANEL)

// The first pass over the rows of x prefetches the weights this many bytes ahead into L2: the distance that read
// fastest on SmolLM2's matrices (README, Performance).
constexpr int64_t kPrefetchBytes = 16384;

inline float ToFloat(float v) { return v; }
inline float ToFloat(bf16 v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void Put(float* p, float v) { *p = v; }
inline void Put(bf16* p, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  *p = std::isnan(v) ? bf16(0x7FC0) : bf16((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

inline void PrefetchRow(const void* row, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(row) + kPrefetchBytes + b, 0, 2);
}

#ifdef JAXADAPT_AVX512
inline __mmask16 Tail(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

// 16 lanes (those in `mask`; the others 0) as float32.
inline __m512 Load16(const float* p, __mmask16 mask = 0xFFFF) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 Load16(const bf16* p, __mmask16 mask = 0xFFFF) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline void Store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void Store16(bf16* p, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
}

// Rows m0 .. m0+MB-1 of x against one panel w [K, 32] -> y[m, 0..31] (y points at the panel's first output).
template <int MB, typename T, typename W>
inline void Panel(const T* x, const W* w, T* y, int64_t K, int64_t N, int64_t m0, bool prefetch) {
  __m512 acc[MB][2];
  for (int i = 0; i < MB; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const W* wk = w + k * kPanel;
    if (prefetch) PrefetchRow(wk, kPanel * sizeof(W));
    const __m512 w0 = Load16(wk), w1 = Load16(wk + 16);
    for (int i = 0; i < MB; ++i) {
      const __m512 xb = _mm512_set1_ps(ToFloat(x[(m0 + i) * K + k]));
      acc[i][0] = _mm512_fmadd_ps(xb, w0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(xb, w1, acc[i][1]);
    }
  }
  for (int i = 0; i < MB; ++i) {
    Store16(y + (m0 + i) * N, acc[i][0]);
    Store16(y + (m0 + i) * N + 16, acc[i][1]);
  }
}
#else
template <int MB, typename T, typename W>
inline void Panel(const T* x, const W* w, T* y, int64_t K, int64_t N, int64_t m0, bool prefetch) {
  float acc[MB][kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    if (prefetch) PrefetchRow(w + k * kPanel, kPanel * sizeof(W));
    float wk[kPanel];
    for (int j = 0; j < kPanel; ++j) wk[j] = ToFloat(w[k * kPanel + j]);
    for (int i = 0; i < MB; ++i) {
      const float xv = ToFloat(x[(m0 + i) * K + k]);
#pragma omp simd
      for (int j = 0; j < kPanel; ++j) acc[i][j] += xv * wk[j];
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < kPanel; ++j) Put(y + (m0 + i) * N + j, acc[i][j]);
}
#endif

// Every row of x against panels p0 .. p1-1: eight rows at a time (only the first pass prefetches), then the rest.
template <typename T, typename W>
void Panels(const T* x, const W* w, T* y, int64_t M, int64_t K, int64_t N, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const W* wp = w + p * K * kPanel;
    T* yp = y + p * kPanel;
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) Panel<8>(x, wp, yp, K, N, m, m == 0);
    const bool first = m == 0;
    switch (M - m) {
      case 7: Panel<7>(x, wp, yp, K, N, m, first); break;
      case 6: Panel<6>(x, wp, yp, K, N, m, first); break;
      case 5: Panel<5>(x, wp, yp, K, N, m, first); break;
      case 4: Panel<4>(x, wp, yp, K, N, m, first); break;
      case 3: Panel<3>(x, wp, yp, K, N, m, first); break;
      case 2: Panel<2>(x, wp, yp, K, N, m, first); break;
      case 1: Panel<1>(x, wp, yp, K, N, m, first); break;
      default: break;
    }
  }
}

// fn(0) .. fn(parts - 1) on the calling thread and up to one helper per other pool thread. The caller and its helpers
// take parts from one counter, so the caller alone finishes the work when no pool thread is free (XLA may run several
// of these calls at once); a helper that starts after the last part was taken returns at once. The counters live on
// the heap: a late helper may run after the call returned.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t parts, Fn fn) {
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  auto work = [progress, fn, parts] {
    for (int64_t p; (p = progress->next.fetch_add(1, std::memory_order_relaxed)) < parts;) {
      fn(p);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(parts, std::max<int64_t>(1, pool.num_threads())) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work(); });
  work();
  while (progress->done.load(std::memory_order_acquire) < parts) std::this_thread::yield();
}

// Success when every buffer of a call has the first one's element type, float32 or bfloat16.
ffi::Error CheckTypes(const char* name, std::initializer_list<ffi::DataType> types) {
  const ffi::DataType first = *types.begin();
  if (first != ffi::DataType::F32 && first != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument(std::string(name) + ": expected float32 or bfloat16 arrays");
  }
  for (const ffi::DataType t : types) {
    if (t != first) return ffi::Error::InvalidArgument(std::string(name) + ": expected arrays of one element type");
  }
  return ffi::Error::Success();
}

template <typename T, typename W>
void RunMatmul(ffi::ThreadPool& pool, const T* x, const W* w, T* y, int64_t M, int64_t K, int64_t P) {
  // Parts of at least two panels, each a contiguous run of the weights.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), P / 2));
  ParallelFor(pool, parts, [=](int64_t i) { Panels(x, w, y, M, K, P * kPanel, P * i / parts, P * (i + 1) / parts); });
}

// x and y float32 or bfloat16; w of x's type, or bfloat16 under float32 x: weights that are exactly bfloat16 values
// (a bfloat16 checkpoint computed in float32) give the same float32 products from half the bytes.
ffi::Error Matmul(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 3 || xd[1] != wd[1] || wd[2] != kPanel) {
    return ffi::Error::InvalidArgument("jaxadapt_matmul: expected x [M, K] and w [N / 32, K, 32]");
  }
  const bool narrow = x.element_type() == ffi::DataType::F32 && w.element_type() == ffi::DataType::BF16;
  ffi::Error types = CheckTypes("jaxadapt_matmul", {x.element_type(), narrow ? x.element_type() : w.element_type(),
                                                    y->element_type()});
  if (types.failure()) return types;
  const int64_t M = xd[0], K = xd[1], P = wd[0];
  if (narrow) {
    RunMatmul(pool, x.typed_data<float>(), w.reinterpret_data<bf16>(), y->typed_data<float>(), M, K, P);
  } else if (x.element_type() == ffi::DataType::F32) {
    RunMatmul(pool, x.typed_data<float>(), w.typed_data<float>(), y->typed_data<float>(), M, K, P);
  } else {
    RunMatmul(pool, x.reinterpret_data<bf16>(), w.reinterpret_data<bf16>(), y->reinterpret_data<bf16>(), M, K, P);
  }
  return ffi::Error::Success();
}

#ifdef JAXADAPT_AVX512
// a . b over n elements.
template <typename T>
inline float Dot(const T* a, const T* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(Load16(a + i, Tail(n - i)), Load16(b + i, Tail(n - i)), acc);
  return _mm512_reduce_add_ps(acc);
}

// The permutation indices of one level of SumEach: pairs of vectors whose lanes form groups of G lanes (one per
// sum) become one vector of groups of G / 2: the first vector's groups, then the second's; `high` picks the upper
// halves of the groups.
template <int G>
inline __m512i SumLevelIndex(bool high) {
  alignas(64) int32_t index[16];
  for (int lane = 0; lane < 16; ++lane) {
    const int group = lane / (G / 2), groups = 16 / G;
    index[lane] = (group < groups ? 0 : 16) + group % groups * G + (high ? G / 2 : 0) + lane % (G / 2);
  }
  return _mm512_load_si512(index);
}

template <int G>
inline void SumLevel(__m512* v) {
  static const __m512i low = SumLevelIndex<G>(false), high = SumLevelIndex<G>(true);
  for (int i = 0; i < G / 2; ++i) {
    v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], low, v[2 * i + 1]),
                         _mm512_permutex2var_ps(v[2 * i], high, v[2 * i + 1]));
  }
}

// Lane j: the sum of the lanes of v[j], for 16 vectors (overwritten): 30 permutes and 15 adds, where 16 separate
// horizontal sums take about 130 instructions.
inline __m512 SumEach(__m512* v) {
  SumLevel<16>(v);
  SumLevel<8>(v);
  SumLevel<4>(v);
  SumLevel<2>(v);
  return v[0];
}

// q . keys[j] for 16 consecutive keys of n elements each -> lane j.
template <typename T>
inline __m512 Dot16(const T* q, const T* keys, int64_t n) {
  __m512 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = Tail(n - i);
    const __m512 qv = Load16(q + i, mask);
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(qv, Load16(keys + j * n + i, mask), acc[j]);
  }
  return SumEach(acc);
}

// scores[s] = q . keys[s] * scale where valid[s], else -FLT_MAX, for s < S; returns their maximum.
template <typename T>
inline float Scores(const T* q, const T* keys, const bool* valid, float scale, int64_t S, int64_t D, float* scores) {
  __m512 top = _mm512_set1_ps(-FLT_MAX);
  int64_t s = 0;
  for (; s + 16 <= S; s += 16) {
    const __mmask16 live = _mm_test_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(valid + s)),
                                              _mm_set1_epi8(1));
    __m512 v = _mm512_set1_ps(-FLT_MAX);
    if (live) v = _mm512_mask_mul_ps(v, live, Dot16(q, keys + s * D, D), _mm512_set1_ps(scale));
    _mm512_storeu_ps(scores + s, v);
    top = _mm512_max_ps(top, v);
  }
  float best = _mm512_reduce_max_ps(top);
  for (; s < S; ++s) {
    scores[s] = valid[s] ? Dot(q, keys + s * D, D) * scale : -FLT_MAX;
    best = std::max(best, scores[s]);
  }
  return best;
}

// exp(x) for 16 lanes of x <= 0 (scores minus their maximum): 2^n * e^r with n = round(x / ln 2), |r| <= ln 2 / 2,
// and Cephes' degree-7 polynomial for e^r (within 2 ulp of std::exp); lanes below -87.3, where float32's e^x
// underflows (masked slots among them), give 0.
inline __m512 ExpNonPositive(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts: r stays exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
  return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

// s[i] = exp(s[i] - top) for i < n; returns their sum.
inline float ExpShiftedSum(float* s, int64_t n, float top) {
  __m512 total = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = Tail(n - i);
    const __m512 e = _mm512_maskz_mov_ps(mask, ExpNonPositive(_mm512_sub_ps(Load16(s + i, mask), _mm512_set1_ps(top))));
    _mm512_mask_storeu_ps(s + i, mask, e);
    total = _mm512_add_ps(total, e);
  }
  return _mm512_reduce_add_ps(total);
}
#else
template <typename T>
inline float Dot(const T* a, const T* b, int64_t n) {
  float dot = 0.0f;
  for (int64_t i = 0; i < n; ++i) dot += ToFloat(a[i]) * ToFloat(b[i]);
  return dot;
}

template <typename T>
inline float Scores(const T* q, const T* keys, const bool* valid, float scale, int64_t S, int64_t D, float* scores) {
  float best = -FLT_MAX;
  for (int64_t s = 0; s < S; ++s) {
    scores[s] = valid[s] ? Dot(q, keys + s * D, D) * scale : -FLT_MAX;
    best = std::max(best, scores[s]);
  }
  return best;
}

inline float ExpShiftedSum(float* s, int64_t n, float top) {
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += s[i] = std::exp(s[i] - top);
  return total;
}
#endif

// out[b, h] = softmax over s of (q[b, h] . k[layer, b, h / G, s] * scale, -FLT_MAX where !valid[b, s]) @ v[...]:
// the masking and float32 softmax of jaxadapt.model.cached_attention, for one new token. q, out [B, H, D];
// k, v [L, B, KVH, S, D]; valid [B, S]. One part per (b, kv head) pair: its keys and values stay in cache for its
// G query heads.
template <typename T>
void RunAttention(ffi::ThreadPool& pool, const T* qp, const T* kp, const T* vp, const bool* valid_p, T* op,
                  int64_t B, int64_t H, int64_t KVH, int64_t S, int64_t D, float scale) {
  const int64_t G = H / KVH;
  auto pair = [=](int64_t p) {
    const int64_t b = p / KVH, kvh = p % KVH;
    const T* keys = kp + (b * KVH + kvh) * S * D;
    const T* values = vp + (b * KVH + kvh) * S * D;
    thread_local std::vector<float> scores, o;
    scores.resize(S);
    o.resize(D);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t head = b * H + kvh * G + g;
      const float top = Scores(qp + head * D, keys, valid_p + b * S, scale, S, D, scores.data());
      const float inv = 1.0f / ExpShiftedSum(scores.data(), S, top);
      std::fill(o.begin(), o.end(), 0.0f);
      for (int64_t s = 0; s < S; ++s) {
        if (!valid_p[b * S + s]) continue;  // weight 0: its values need not be read
        const float w = scores[s] * inv;
        const T* vs = values + s * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] += w * ToFloat(vs[d]);
      }
      for (int64_t d = 0; d < D; ++d) Put(op + head * D + d, o[d]);
    }
  };
  ParallelFor(pool, B * KVH, pair);
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                           ffi::Buffer<ffi::PRED> valid, ffi::Result<ffi::AnyBuffer> out, int64_t layer, float scale) {
  const auto qd = q.dimensions();
  const auto kd = k.dimensions();
  if (qd.size() != 3 || kd.size() != 5 || kd[1] != qd[0] || kd[4] != qd[2] || qd[1] % kd[2] || layer < 0 ||
      layer >= kd[0]) {
    return ffi::Error::InvalidArgument("jaxadapt_decode_attention: expected q [B, H, D], k/v [L, B, KVH, S, D]");
  }
  // A bfloat16 KV cache may come as its uint16 bit patterns (jaxadapt.model.KVCache).
  const auto cached = [&](ffi::DataType t) { return t == ffi::DataType::U16 ? ffi::DataType::BF16 : t; };
  ffi::Error types = CheckTypes("jaxadapt_decode_attention", {q.element_type(), cached(k.element_type()),
                                                              cached(v.element_type()), out->element_type()});
  if (types.failure()) return types;
  const int64_t B = qd[0], H = qd[1], D = qd[2], KVH = kd[2], S = kd[3], offset = layer * B * KVH * S * D;
  if (q.element_type() == ffi::DataType::F32) {
    RunAttention(pool, q.typed_data<float>(), k.typed_data<float>() + offset, v.typed_data<float>() + offset,
                 valid.typed_data(), out->typed_data<float>(), B, H, KVH, S, D, scale);
  } else {
    RunAttention(pool, q.reinterpret_data<bf16>(), k.reinterpret_data<bf16>() + offset, v.reinterpret_data<bf16>() + offset,
                 valid.typed_data(), out->reinterpret_data<bf16>(), B, H, KVH, S, D, scale);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxadaptMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxadaptDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("layer")
                                  .Attr<float>("scale"));
