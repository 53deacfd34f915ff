// jaxadapt's XLA:CPU custom calls for decoding one token, in float32 (built and loaded by jaxadapt/cpu_decode.py):
// - Matmul: y[M, N] = x[M, K] @ w for small M, with w packed as panels of 32 outputs, [N / 32, K, 32] (see
//   cpu_decode.pack). The step is bound by reading the weights, which XLA:CPU's dot does at about half the machine's
//   bandwidth once M reaches 8. Here the weights are read once, as one sequential stream prefetched well ahead, and
//   every row of x is a broadcast against two 16-lane vectors of a panel: no sums across lanes.
// - DecodeAttention: the new token's attention over one layer of the stacked KV cache, read in place. XLA copies
//   the layer out of the stack and runs two tiny batched dots per layer, which cost more than the layer's weights
//   at batch 8.
// Both split their work over XLA's intra-op thread pool (ParallelFor).

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define JAXADAPT_AVX512 1  // the vector code below; other CPUs get the plain loops after each #else
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 32;  // outputs per weight panel (cpu_decode.PANEL)

// The first pass over the rows of x prefetches the weights this many floats (16 KB) ahead into L2. On SmolLM2's
// 576 x 1536 matrices at 8 rows of x, two cores read 12 GB/s without it and 17-19 GB/s with it (8 KB: 17, 32 KB: 16).
constexpr int64_t kPrefetchAhead = 4096;

#ifdef JAXADAPT_AVX512
// Rows m0 .. m0+MB-1 of x against one panel w [K, 32] -> y[m, 0..31] (y points at the panel's first output).
template <int MB>
inline void Panel(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t m0, bool prefetch) {
  __m512 acc[MB][2];
  for (int i = 0; i < MB; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = w + k * kPanel;
    if (prefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchAhead), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchAhead + 16), _MM_HINT_T1);
    }
    const __m512 w0 = _mm512_loadu_ps(wk), w1 = _mm512_loadu_ps(wk + 16);
    for (int i = 0; i < MB; ++i) {
      const __m512 xb = _mm512_set1_ps(x[(m0 + i) * K + k]);
      acc[i][0] = _mm512_fmadd_ps(xb, w0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(xb, w1, acc[i][1]);
    }
  }
  for (int i = 0; i < MB; ++i) {
    _mm512_storeu_ps(y + (m0 + i) * N, acc[i][0]);
    _mm512_storeu_ps(y + (m0 + i) * N + 16, acc[i][1]);
  }
}
#else
template <int MB>
inline void Panel(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t m0, bool prefetch) {
  float acc[MB][kPanel] = {};
  for (int64_t k = 0; k < K; ++k) {
    if (prefetch) __builtin_prefetch(w + k * kPanel + kPrefetchAhead, 0, 2);
    for (int i = 0; i < MB; ++i) {
      const float xv = x[(m0 + i) * K + k];
#pragma omp simd
      for (int j = 0; j < kPanel; ++j) acc[i][j] += xv * w[k * kPanel + j];
    }
  }
  for (int i = 0; i < MB; ++i) std::copy(acc[i], acc[i] + kPanel, y + (m0 + i) * N);
}
#endif

// Every row of x against panels p0 .. p1-1: eight rows at a time (only the first pass prefetches), then the rest.
void Panels(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* wp = w + p * K * kPanel;
    float* yp = y + p * kPanel;
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

ffi::Error Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                  ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 3 || xd[1] != wd[1] || wd[2] != kPanel) {
    return ffi::Error::InvalidArgument("jaxadapt_matmul: expected x [M, K] and w [N / 32, K, 32]");
  }
  const int64_t M = xd[0], K = xd[1], P = wd[0];
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  // Parts of at least two panels, each a contiguous run of the weights.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), P / 2));
  ParallelFor(pool, parts, [=](int64_t i) { Panels(xp, wp, yp, M, K, P * kPanel, P * i / parts, P * (i + 1) / parts); });
  return ffi::Error::Success();
}

#ifdef JAXADAPT_AVX512
// a . b over n floats.
inline float Dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i), acc);
  }
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

// q . keys[j] for 16 consecutive keys of n floats each -> lane j.
inline __m512 Dot16(const float* q, const float* keys, int64_t n) {
  __m512 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 qv = _mm512_maskz_loadu_ps(mask, q + i);
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mask, keys + j * n + i), acc[j]);
  }
  return SumEach(acc);
}

// scores[s] = q . keys[s] * scale where valid[s], else -FLT_MAX, for s < S; returns their maximum.
inline float Scores(const float* q, const float* keys, const bool* valid, float scale, int64_t S, int64_t D,
                    float* scores) {
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
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(mask, ExpNonPositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, s + i),
                                                                            _mm512_set1_ps(top))));
    _mm512_mask_storeu_ps(s + i, mask, e);
    total = _mm512_add_ps(total, e);
  }
  return _mm512_reduce_add_ps(total);
}
#else
inline float Dot(const float* a, const float* b, int64_t n) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < n; ++i) dot += a[i] * b[i];
  return dot;
}

inline float Scores(const float* q, const float* keys, const bool* valid, float scale, int64_t S, int64_t D,
                    float* scores) {
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
ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                           ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> valid, ffi::ResultBuffer<ffi::F32> out,
                           int64_t layer, float scale) {
  const auto qd = q.dimensions();
  const auto kd = k.dimensions();
  if (qd.size() != 3 || kd.size() != 5 || kd[1] != qd[0] || kd[4] != qd[2] || qd[1] % kd[2] || layer < 0 ||
      layer >= kd[0]) {
    return ffi::Error::InvalidArgument("jaxadapt_decode_attention: expected q [B, H, D], k/v [L, B, KVH, S, D]");
  }
  const int64_t B = qd[0], H = qd[1], D = qd[2], KVH = kd[2], S = kd[3], G = H / KVH;
  const float* qp = q.typed_data();
  const float* kp = k.typed_data() + layer * B * KVH * S * D;
  const float* vp = v.typed_data() + layer * B * KVH * S * D;
  const bool* valid_p = valid.typed_data();
  float* op = out->typed_data();
  auto pair = [=](int64_t p) {
    const int64_t b = p / KVH, kvh = p % KVH;
    const float* keys = kp + (b * KVH + kvh) * S * D;
    const float* values = vp + (b * KVH + kvh) * S * D;
    thread_local std::vector<float> scores;
    scores.resize(S);
    for (int64_t g = 0; g < G; ++g) {
      const float* qv = qp + (b * H + kvh * G + g) * D;
      const float top = Scores(qv, keys, valid_p + b * S, scale, S, D, scores.data());
      const float inv = 1.0f / ExpShiftedSum(scores.data(), S, top);
      float* o = op + (b * H + kvh * G + g) * D;
      std::fill(o, o + D, 0.0f);
      for (int64_t s = 0; s < S; ++s) {
        if (!valid_p[b * S + s]) continue;  // weight 0: its values need not be read
        const float w = scores[s] * inv;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] += w * values[s * D + d];
      }
    }
  };
  ParallelFor(pool, B * KVH, pair);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxadaptMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxadaptDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("layer")
                                  .Attr<float>("scale"));
