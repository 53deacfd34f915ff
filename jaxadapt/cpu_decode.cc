// jaxadapt's XLA:CPU custom calls for decoding one token, in float32 (built and loaded by jaxadapt/cpu_decode.py):
// - MatmulNT: y[M, N] = x[M, K] @ w[N, K]^T for small M. The step is bound by reading the weights, which XLA:CPU's
//   dot does at about half the machine's bandwidth once M reaches 8. Here each weight row (one output) is read once,
//   as one sequential stream, and multiplied with up to four input rows held in the L1 cache.
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

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// While one block of outputs is computed, the weight rows this many outputs ahead are prefetched. Without it the
// multiplies and the reads of the weights took turns: on SmolLM2's 576 x 1536 matrices, 8 rows of x went 10.6 -> 16.9
// GB/s on two cores, one row 18.7 -> 23.9 GB/s (4 and 8 outputs ahead gave 13-14 and 22-24 GB/s).
constexpr int64_t kPrefetchAhead = 16;

// How many of the NB weight rows kPrefetchAhead after output n (and before n_end) a block prefetches: all of them on
// the first pass over the rows of x (m0 == 0), none on the later passes, which find them cached.
inline int64_t PrefetchRows(int64_t n, int64_t NB, int64_t n_end, int64_t m0) {
  return m0 ? 0 : std::max<int64_t>(0, std::min<int64_t>(NB, n_end - (n + kPrefetchAhead)));
}

#ifdef __AVX512F__
// Outputs n .. n+NB-1 of rows m0 .. m0+MB-1: MB x NB accumulators of 16 lanes, summed across lanes at the end.
template <int NB, int MB>
inline void Block(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t n, int64_t m0,
                  int64_t n_end) {
  __m512 acc[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t prefetch = PrefetchRows(n, NB, n_end, m0);
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    for (int64_t j = 0; j < prefetch; ++j) __builtin_prefetch(w + (n + kPrefetchAhead + j) * K + k);
    __m512 wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = _mm512_maskz_loadu_ps(mask, w + (n + j) * K + k);
    for (int i = 0; i < MB; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + (m0 + i) * K + k);
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) y[(m0 + i) * N + n + j] = _mm512_reduce_add_ps(acc[i][j]);
}
#else
template <int NB, int MB>
inline void Block(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t n, int64_t m0,
                  int64_t n_end) {
  const int64_t prefetch = PrefetchRows(n, NB, n_end, m0);
  for (int64_t j = 0; j < prefetch; ++j)
    for (int64_t k = 0; k < K; k += 16) __builtin_prefetch(w + (n + kPrefetchAhead + j) * K + k);
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) {
      const float* xr = x + (m0 + i) * K;
      const float* wr = w + (n + j) * K;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) s += xr[k] * wr[k];
      y[(m0 + i) * N + n + j] = s;
    }
}
#endif

// Every row of x against outputs n .. n+NB-1: four rows at a time, then the remainder.
template <int NB>
inline void AllRows(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n,
                    int64_t n_end) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) Block<NB, 4>(x, w, y, K, N, n, m, n_end);
  switch (M - m) {
    case 3: Block<NB, 3>(x, w, y, K, N, n, m, n_end); break;
    case 2: Block<NB, 2>(x, w, y, K, N, n, m, n_end); break;
    case 1: Block<NB, 1>(x, w, y, K, N, n, m, n_end); break;
    default: break;
  }
}

void Outputs(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) AllRows<4>(x, w, y, M, K, N, n, n1);
  for (; n < n1; ++n) AllRows<1>(x, w, y, M, K, N, n, n1);
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

ffi::Error MatmulNT(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                    ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[1]) {
    return ffi::Error::InvalidArgument("jaxadapt_matmul_nt: expected x [M, K] and w [N, K]");
  }
  const int64_t M = xd[0], K = xd[1], N = wd[0];
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  // Parts of at least 64 outputs, split at multiples of 4 so that every part but the last runs 4-wide blocks.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), N / 64));
  auto run = [=](int64_t p) {
    const int64_t n0 = N * p / parts / 4 * 4;
    const int64_t n1 = p + 1 == parts ? N : N * (p + 1) / parts / 4 * 4;
    Outputs(xp, wp, yp, M, K, N, n0, n1);
  };
  ParallelFor(pool, parts, run);
  return ffi::Error::Success();
}

// out[b, h] = softmax over s of (q[b, h] . k[layer, b, h / G, s] * scale, -FLT_MAX where !valid[b, s]) @ v[...]:
// the masking and float32 softmax of jaxadapt.model.cached_attention, for one new token. q, out [B, H, D];
// k, v [L, B, KVH, S, D]; valid [B, S]. One part per (b, kv head) pair: its keys and values are read once.
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
    std::vector<float> scores(S);
    for (int64_t g = 0; g < G; ++g) {
      const float* qv = qp + (b * H + kvh * G + g) * D;
      float top = -FLT_MAX;
      for (int64_t s = 0; s < S; ++s) {
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < D; ++d) dot += qv[d] * keys[s * D + d];
        scores[s] = valid_p[b * S + s] ? dot * scale : -FLT_MAX;
        top = std::max(top, scores[s]);
      }
      float total = 0.0f;
      for (int64_t s = 0; s < S; ++s) total += scores[s] = std::exp(scores[s] - top);
      float* o = op + (b * H + kvh * G + g) * D;
      std::fill(o, o + D, 0.0f);
      for (int64_t s = 0; s < S; ++s) {
        const float w = scores[s] / total;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] += w * values[s * D + d];
      }
    }
  };
  ParallelFor(pool, B * KVH, pair);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxadaptMatmulNT, MatmulNT,
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
