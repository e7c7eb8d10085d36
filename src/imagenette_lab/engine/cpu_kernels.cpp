// CPU training kernels over channels-last activations (an N x C x H x W tensor as [N*H*W][C]), fp32 or
// bf16 in memory, fp32 arithmetic, fp32 parameters; the compiler vectorizes the loops over C. Built and
// called by engine/cpu_kernels.py.
//
// silu(batch_norm(x)) in training mode and its backward: two passes each way; statistics are shifted
// sums in fp32 per block of 64 rows, added into doubles. The same followed by a squeeze-excitation: three
// passes each way, with the excitation's small network run by the caller in between.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>
#include <omp.h>

static inline float load(const float* p, int64_t i) { return p[i]; }
static inline float load(const uint16_t* p, int64_t i) { return __builtin_bit_cast(float, uint32_t(p[i]) << 16); }
static inline void store(float* p, int64_t i, float v) { p[i] = v; }
static inline void store(uint16_t* p, int64_t i, float v) {  // bf16, round to nearest even; NaN stays NaN
  uint32_t u = __builtin_bit_cast(uint32_t, v);
  p[i] = v != v ? uint16_t(0x7fc0) : uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// 1 / (1 + exp(-z)): exp(-z) = 2^n * p(f), n = round(-z*log2(e)), p of degree 6 (relative error ~2e-7).
// Written so that the compiler vectorizes it (no libm call).
static inline float sigmoid(float z) {
  float t = -z * 1.44269504088896341f;
  t = t < -126.f ? -126.f : (t > 126.f ? 126.f : t);
  float r = t + 12582912.f;  // 1.5 * 2^23: round(t) lands in r's low mantissa bits
  float n = r - 12582912.f, f = t - n;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  uint32_t bits = (__builtin_bit_cast(uint32_t, r) - 0x4B400000u + 127u) << 23;
  return 1.0f / (1.0f + p * __builtin_bit_cast(float, bits));
}

static const int64_t kBlock = 64;  // rows summed in fp32 before they are added into doubles

// Per-channel sums of a(r, c) and b(r, c) over all rows, in parallel; sums[0:C], sums[C:2C].
template <typename F>
static void channel_sums(int threads, int64_t M, int64_t C, std::vector<double>& sums, F row) {
  std::vector<double> acc(std::size_t(threads) * 2 * C, 0.0);
  #pragma omp parallel num_threads(threads)
  {
    double* s = &acc[std::size_t(omp_get_thread_num()) * 2 * C];
    std::vector<float> f(2 * C);
    #pragma omp for schedule(static)
    for (int64_t r0 = 0; r0 < M; r0 += kBlock) {
      std::fill(f.begin(), f.end(), 0.f);
      for (int64_t r = r0; r < (r0 + kBlock < M ? r0 + kBlock : M); ++r) row(r, f.data(), f.data() + C);
      for (int64_t c = 0; c < 2 * C; ++c) s[c] += f[c];
    }
  }
  sums.assign(2 * C, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int64_t c = 0; c < 2 * C; ++c) sums[c] += acc[std::size_t(t) * 2 * C + c];
}

// BatchNorm folded into z = x * scale + bias.
static void folded(int64_t C, const float* w, const float* b, const float* mean, const float* var, float eps,
                   float* scale, float* bias) {
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = w[c] / __builtin_sqrtf(var[c] + eps);
    bias[c] = b[c] - mean[c] * scale[c];
  }
}

// Pass 1: the channels' batch mean and (biased) variance, and the folded scale and bias of x.
template <typename T>
static void stats(int threads, const T* x, int64_t M, int64_t C, const float* w, const float* b, float eps,
                  float* mean, float* var, float* scale, float* bias) {
  std::vector<float> shift(C);
  for (int64_t c = 0; c < C; ++c) shift[c] = load(x, c);  // shifted sums: no cancellation
  std::vector<double> sums;
  channel_sums(threads, M, C, sums, [&](int64_t r, float* f1, float* f2) {
    const T* xr = x + r * C;
    #pragma omp simd
    for (int64_t c = 0; c < C; ++c) { float d = load(xr, c) - shift[c]; f1[c] += d; f2[c] += d * d; }
  });
  for (int64_t c = 0; c < C; ++c) {
    double m = sums[c] / M, v = sums[C + c] / M - m * m;
    mean[c] = float(m + shift[c]);
    var[c] = float(v > 0 ? v : 0);
  }
  folded(C, w, b, mean, var, eps, scale, bias);
}

template <typename T>
static void forward(int threads, const T* x, int64_t M, int64_t C, const float* w, const float* b, float eps,
                    float* mean, float* var, T* y) {
  std::vector<float> scale(C), bias(C);
  stats(threads, x, M, C, w, b, eps, mean, var, scale.data(), bias.data());
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    #pragma omp simd
    for (int64_t c = 0; c < C; ++c) { float z = load(xr, c) * scale[c] + bias[c]; store(yr, c, z * sigmoid(z)); }
  }
}

// Squeeze-excitation on y = silu(batch_norm(x)) (EfficientNet's depthwise stage; the rows of image n are
// [n*HW, (n+1)*HW)), per image and channel: without a, the pool, out[n, c] = mean of y over the image's
// rows, writing y as it goes; with a (the incoming gradient), the excitation's scale gradient, the sum of
// y * a, y recomputed from x.
template <typename T>
static void image_sums(int threads, const T* x, const T* a, int64_t N, int64_t HW, int64_t C, const float* scale,
                       const float* bias, float* out, T* y = nullptr) {
  #pragma omp parallel num_threads(threads)
  {
    std::vector<double> s(C);
    std::vector<float> f(C);
    #pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      std::fill(s.begin(), s.end(), 0.0);
      for (int64_t r0 = 0; r0 < HW; r0 += kBlock) {
        std::fill(f.begin(), f.end(), 0.f);
        for (int64_t r = n * HW + r0; r < n * HW + (r0 + kBlock < HW ? r0 + kBlock : HW); ++r) {
          const T* xr = x + r * C;
          const T* ar = a ? a + r * C : nullptr;
          if (ar) {
            #pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              float z = load(xr, c) * scale[c] + bias[c];
              f[c] += z * sigmoid(z) * load(ar, c);
            }
          } else {
            T* yr = y + r * C;
            #pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              float z = load(xr, c) * scale[c] + bias[c], v = z * sigmoid(z);
              f[c] += v;
              store(yr, c, v);
            }
          }
        }
        for (int64_t c = 0; c < C; ++c) s[c] += f[c];
      }
      for (int64_t c = 0; c < C; ++c) out[n * C + c] = float(a ? s[c] : s[c] / HW);
    }
  }
}

// y = y * e[n, c] in place, e being the excitation's per-image channel scale.
template <typename T>
static void excite_forward(int threads, int64_t N, int64_t HW, int64_t C, const float* e, T* y) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < N * HW; ++r) {
    const float* er = e + (r / HW) * C;
    T* yr = y + r * C;
    #pragma omp simd
    for (int64_t c = 0; c < C; ++c) store(yr, c, load(yr, c) * er[c]);
  }
}

// gz = g * silu'(z) is written into gx by the first pass (rounded to gx's dtype, as autograd's separate
// SiLU backward would) and turned into BatchNorm's input gradient in place by the second. With SE, y's
// gradient is g * e[n, c] + gp[n, c] (the excitation's scale and its pooled input's gradient / HW).
template <bool SE, typename T>
static void backward(int threads, const T* x, const T* g, int64_t M, int64_t C, const float* w, const float* b,
                     const float* mean, const float* var, float eps, T* gx, float* gw, float* gb,
                     int64_t HW = 1, const float* e = nullptr, const float* gp = nullptr) {
  std::vector<float> invstd(C), scale(C), bias(C), k1(C), k2(C);
  for (int64_t c = 0; c < C; ++c) {
    invstd[c] = 1.f / __builtin_sqrtf(var[c] + eps);
    scale[c] = invstd[c] * w[c];
    bias[c] = b[c] - mean[c] * scale[c];
  }
  std::vector<double> sums;
  channel_sums(threads, M, C, sums, [&](int64_t r, float* f1, float* f2) {
    const T* xr = x + r * C;
    const T* gr = g + r * C;
    T* dr = gx + r * C;
    const float* er = SE ? e + (r / HW) * C : nullptr;
    const float* pr = SE ? gp + (r / HW) * C : nullptr;
    #pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float xv = load(xr, c), z = xv * scale[c] + bias[c], s = sigmoid(z);
      float gy = SE ? load(gr, c) * er[c] + pr[c] : load(gr, c);
      float gz = gy * s * (1.f + z * (1.f - s));
      store(dr, c, gz);
      f1[c] += gz;
      f2[c] += gz * (xv - mean[c]);
    }
  });
  for (int64_t c = 0; c < C; ++c) {  // gx = w*invstd * (gz - mean(gz) - xhat * mean(gz*xhat))
    gb[c] = float(sums[c]);
    gw[c] = float(sums[C + c] * invstd[c]);
    k1[c] = float(sums[c] / M);
    k2[c] = float(sums[C + c] / M * invstd[c] * invstd[c]);
  }
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    const T* xr = x + r * C;
    T* out = gx + r * C;
    #pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      store(out, c, scale[c] * (load(out, c) - k1[c] - (load(xr, c) - mean[c]) * k2[c]));
  }
}

// Depthwise KxK convolution, stride S, zero padding P, no bias; weights as [K*K][C]. Channels go in
// blocks of U x 16 held in registers (GCC vector types: AVX-512 or 2 x AVX2), over the taps that fall
// inside the image. Every C in EfficientNet-B0 is a multiple of 16; other channels take a scalar loop.
typedef float vf __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));
static inline vf vload(const float* p) { vf v; __builtin_memcpy(&v, p, 64); return v; }
static inline vf vload(const uint16_t* p) {
  vh h; __builtin_memcpy(&h, p, 32);
  return (vf)(__builtin_convertvector(h, vu) << 16);
}
static inline void vstore(float* p, vf v) { __builtin_memcpy(p, &v, 64); }
static inline void vstore(uint16_t* p, vf v) {
  vu u = (vu)v;
  u = v != v ? vu{} + 0x7fc00000u : u + 0x7fffu + ((u >> 16) & 1u);
  vh h = __builtin_convertvector(u >> 16, vh);
  __builtin_memcpy(p, &h, 32);
}

// out[c] = sum over taps t in [0, nt) of a[t][c] * b[t][c] for c in [0, C) (a: T, b: T or fp32).
template <int U, typename A, typename B>
static inline void dot_block(int nt, const A* const* a, const B* const* b, int64_t c0, vf* out) {
  vf acc[U] = {};
  for (int t = 0; t < nt; ++t)
    for (int u = 0; u < U; ++u) acc[u] += vload(a[t] + c0 + 16 * u) * vload(b[t] + c0 + 16 * u);
  for (int u = 0; u < U; ++u) out[u] = acc[u];
}

template <typename A, typename B, typename F>
static inline void taps_dot(int nt, const A* const* a, const B* const* b, int64_t C, F put) {
  int64_t c0 = 0;
  vf out[4];
  for (; c0 + 64 <= C; c0 += 64) {
    dot_block<4>(nt, a, b, c0, out);
    for (int u = 0; u < 4; ++u) put(c0 + 16 * u, out[u]);
  }
  for (; c0 + 16 <= C; c0 += 16) { dot_block<1>(nt, a, b, c0, out); put(c0, out[0]); }
  for (; c0 < C; ++c0) {  // scalar tail
    float v = 0.f;
    for (int t = 0; t < nt; ++t) v += load(a[t], c0) * load(b[t], c0);
    put(c0, v);
  }
}

// One row r of out[r, col] = sum over taps (kh, kw) of src[r*S + d*(kh-P), col*S + d*(kw-P)] * w[kh*K+kw]
// (d = 1: the convolution; d = -1, S = 1: its input gradient), src being one SR x SC image. Columns
// whose taps are all inside go four at a time (four independent sums per weight load); the others
// one at a time over the taps inside.
template <typename T>
static void correlate_row(const T* src, int64_t SR, int64_t SC, int64_t C, int K, int S, int P, int d,
                          const float* w, int64_t r, int64_t OC, T* out) {
  int khs[16], nkh = 0;
  for (int kh = 0; kh < K; ++kh) {
    int64_t sr = r * S + d * (kh - P);
    if (sr >= 0 && sr < SR) khs[nkh++] = kh;
  }
  const T* xs[256];
  const float* ws[256];
  for (int64_t col = 0; col < OC;) {
    if (col + 4 <= OC && col * S - P >= 0 && (col + 3) * S + P < SC) {
      int64_t c0 = 0;
      for (; c0 + 16 <= C; c0 += 16) {
        vf a[4] = {};
        for (int i = 0; i < nkh; ++i) {
          int kh = khs[i];
          const T* sr = src + (r * S + d * (kh - P)) * SC * C + c0;
          for (int kw = 0; kw < K; ++kw) {
            vf wv = vload(w + (kh * K + kw) * C + c0);
            for (int p = 0; p < 4; ++p) a[p] += vload(sr + ((col + p) * S + d * (kw - P)) * C) * wv;
          }
        }
        for (int p = 0; p < 4; ++p) vstore(out + (col + p) * C + c0, a[p]);
      }
      for (; c0 < C; ++c0)  // scalar tail
        for (int p = 0; p < 4; ++p) {
          float v = 0.f;
          for (int i = 0; i < nkh; ++i)
            for (int kw = 0; kw < K; ++kw)
              v += load(src, (r * S + d * (khs[i] - P)) * SC * C + ((col + p) * S + d * (kw - P)) * C + c0) *
                   w[(khs[i] * K + kw) * C + c0];
          store(out, (col + p) * C + c0, v);
        }
      col += 4;
      continue;
    }
    int nt = 0;
    for (int i = 0; i < nkh; ++i)
      for (int kw = 0; kw < K; ++kw) {
        int64_t sc = col * S + d * (kw - P);
        if (sc < 0 || sc >= SC) continue;
        xs[nt] = src + ((r * S + d * (khs[i] - P)) * SC + sc) * C;
        ws[nt++] = w + (khs[i] * K + kw) * C;
      }
    T* o = out + col * C;
    taps_dot(nt, xs, ws, C, [&](int64_t c, auto v) {
      if constexpr (sizeof(v) == 64) vstore(o + c, v); else store(o, c, v);
    });
    ++col;
  }
}

template <typename T>
static void dw_forward(int threads, const T* x, int64_t N, int64_t H, int64_t W, int64_t C, int K, int S, int P,
                       const float* w, T* y, int64_t OH, int64_t OW) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < N * OH; ++row) {
    int64_t n = row / OH, oh = row % OH;
    correlate_row(x + n * H * W * C, H, W, C, K, S, P, 1, w, oh, OW, y + (n * OH + oh) * OW * C);
  }
}

// One output row's weight-gradient contributions, 16 channels at a time with all K*K tap sums in
// registers; returns the first channel not done (the scalar tail's).
template <int K, typename T>
static int64_t wgrad_row(const T* x, const T* g, int64_t n, int64_t oh, int64_t H, int64_t W, int64_t C, int S,
                         int P, int64_t OH, int64_t OW, float* part) {
  int64_t c0 = 0;
  for (; c0 + 16 <= C; c0 += 16) {
    vf acc[K * K] = {};
    #pragma GCC unroll 8
    for (int kh = 0; kh < K; ++kh) {
      int64_t ih = oh * S - P + kh;
      if (ih < 0 || ih >= H) continue;
      const T* xr = x + (n * H + ih) * W * C + c0;
      for (int64_t ow = 0; ow < OW; ++ow) {
        vf gv = vload(g + ((n * OH + oh) * OW + ow) * C + c0);
        int64_t iw0 = ow * S - P;
        #pragma GCC unroll 8
        for (int kw = 0; kw < K; ++kw)
          if (iw0 + kw >= 0 && iw0 + kw < W) acc[kh * K + kw] += vload(xr + (iw0 + kw) * C) * gv;
      }
    }
    for (int t = 0; t < K * K; ++t) vstore(part + t * C + c0, vload(part + t * C + c0) + acc[t]);
  }
  return c0;
}

template <typename T>
static void dw_backward(int threads, const T* x, const T* g, int64_t N, int64_t H, int64_t W, int64_t C, int K,
                        int S, int P, const float* w, int64_t OH, int64_t OW, T* gx, float* gw) {
  const int64_t KKC = int64_t(K) * K * C;
  std::vector<double> acc(std::size_t(threads) * KKC, 0.0);
  #pragma omp parallel num_threads(threads)
  {
    double* s = &acc[std::size_t(omp_get_thread_num()) * KKC];
    std::vector<float> part(KKC, 0.f);
    int rows = 0;
    #pragma omp for schedule(static)
    for (int64_t row = 0; row < N * OH; ++row) {  // weight gradient: per tap, sum over the row of x * g
      int64_t n = row / OH, oh = row % OH;
      int64_t c0 = 0;
      if (K == 3) c0 = wgrad_row<3>(x, g, n, oh, H, W, C, S, P, OH, OW, part.data());
      else if (K == 5) c0 = wgrad_row<5>(x, g, n, oh, H, W, C, S, P, OH, OW, part.data());
      for (int kh = 0; kh < K && c0 < C; ++kh) {  // other kernels, and channels past the last block of 16
        int64_t ih = oh * S - P + kh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < K; ++kw) {
          float* pr = part.data() + (kh * K + kw) * C;
          for (int64_t ow = 0; ow < OW; ++ow) {
            int64_t iw = ow * S - P + kw;
            if (iw < 0 || iw >= W) continue;
            const T* xr = x + ((n * H + ih) * W + iw) * C;
            const T* gr = g + ((n * OH + oh) * OW + ow) * C;
            for (int64_t c = c0; c < C; ++c) pr[c] += load(xr, c) * load(gr, c);
          }
        }
      }
      if (++rows == 16) {  // fp32 sums of at most 16 rows, then into doubles
        for (int64_t i = 0; i < KKC; ++i) { s[i] += part[i]; part[i] = 0.f; }
        rows = 0;
      }
    }
    for (int64_t i = 0; i < KKC; ++i) s[i] += part[i];
    const T* gt[64];
    const float* wt[64];
    #pragma omp for schedule(static)
    for (int64_t row = 0; row < N * H; ++row) {  // input gradient: gather over the taps that reach it
      int64_t n = row / H, ih = row % H;
      if (S == 1) {
        correlate_row(g + n * OH * OW * C, OH, OW, C, K, 1, P, -1, w, ih, W, gx + (n * H + ih) * W * C);
        continue;
      }
      for (int64_t iw = 0; iw < W; ++iw) {
        int nt = 0;
        for (int kh = 0; kh < K; ++kh) {
          int64_t t = ih + P - kh;
          if (t < 0 || t % S || t / S >= OH) continue;
          for (int kw = 0; kw < K; ++kw) {
            int64_t u = iw + P - kw;
            if (u < 0 || u % S || u / S >= OW) continue;
            gt[nt] = g + ((n * OH + t / S) * OW + u / S) * C;
            wt[nt++] = w + (kh * K + kw) * C;
          }
        }
        T* out = gx + ((n * H + ih) * W + iw) * C;
        taps_dot(nt, gt, wt, C, [&](int64_t c, auto v) {
          if constexpr (sizeof(v) == 64) vstore(out + c, v); else store(out, c, v);
        });
      }
    }
  }
  for (int64_t i = 0; i < KKC; ++i) {
    double v = 0;
    for (int t = 0; t < threads; ++t) v += acc[std::size_t(t) * KKC + i];
    gw[i] = float(v);
  }
}

extern "C" {
void bn_silu_forward(int bf16, int threads, const void* x, int64_t M, int64_t C, const float* w, const float* b,
                     float eps, float* mean, float* var, void* y) {
  if (bf16) forward(threads, (const uint16_t*)x, M, C, w, b, eps, mean, var, (uint16_t*)y);
  else forward(threads, (const float*)x, M, C, w, b, eps, mean, var, (float*)y);
}
void bn_silu_backward(int bf16, int threads, const void* x, const void* g, int64_t M, int64_t C, const float* w,
                      const float* b, const float* mean, const float* var, float eps, void* gx, float* gw,
                      float* gb) {
  if (bf16)
    backward<false>(threads, (const uint16_t*)x, (const uint16_t*)g, M, C, w, b, mean, var, eps, (uint16_t*)gx, gw,
                    gb);
  else backward<false>(threads, (const float*)x, (const float*)g, M, C, w, b, mean, var, eps, (float*)gx, gw, gb);
}
// silu(batch_norm(x)) followed by squeeze-excitation (e: the excitation's N x C scale). Forward: the
// statistics and the pooled y (N x C), then out = y * e. Backward: ge = sum over rows of g * y, then the
// input gradient from g, e and gp = the pooled input's gradient / HW.
void bn_silu_pool(int bf16, int threads, const void* x, int64_t N, int64_t HW, int64_t C, const float* w,
                  const float* b, float eps, float* mean, float* var, float* pooled, void* y) {
  std::vector<float> scale(C), bias(C);
  if (bf16) {
    stats(threads, (const uint16_t*)x, N * HW, C, w, b, eps, mean, var, scale.data(), bias.data());
    image_sums(threads, (const uint16_t*)x, (const uint16_t*)nullptr, N, HW, C, scale.data(), bias.data(), pooled,
               (uint16_t*)y);
  } else {
    stats(threads, (const float*)x, N * HW, C, w, b, eps, mean, var, scale.data(), bias.data());
    image_sums(threads, (const float*)x, (const float*)nullptr, N, HW, C, scale.data(), bias.data(), pooled,
               (float*)y);
  }
}
void bn_silu_excite(int bf16, int threads, int64_t N, int64_t HW, int64_t C, const float* e, void* y) {
  if (bf16) excite_forward(threads, N, HW, C, e, (uint16_t*)y);
  else excite_forward(threads, N, HW, C, e, (float*)y);
}
void bn_silu_excite_grad(int bf16, int threads, const void* x, const void* g, int64_t N, int64_t HW, int64_t C,
                         const float* w, const float* b, const float* mean, const float* var, float eps, float* ge) {
  std::vector<float> scale(C), bias(C);
  folded(C, w, b, mean, var, eps, scale.data(), bias.data());
  if (bf16) image_sums(threads, (const uint16_t*)x, (const uint16_t*)g, N, HW, C, scale.data(), bias.data(), ge);
  else image_sums(threads, (const float*)x, (const float*)g, N, HW, C, scale.data(), bias.data(), ge);
}
void bn_silu_excite_backward(int bf16, int threads, const void* x, const void* g, int64_t N, int64_t HW, int64_t C,
                             const float* w, const float* b, const float* mean, const float* var, float eps,
                             const float* e, const float* gp, void* gx, float* gw, float* gb) {
  if (bf16)
    backward<true>(threads, (const uint16_t*)x, (const uint16_t*)g, N * HW, C, w, b, mean, var, eps, (uint16_t*)gx,
                   gw, gb, HW, e, gp);
  else backward<true>(threads, (const float*)x, (const float*)g, N * HW, C, w, b, mean, var, eps, (float*)gx, gw,
                      gb, HW, e, gp);
}
void dw_conv_forward(int bf16, int threads, const void* x, int64_t N, int64_t H, int64_t W, int64_t C, int K, int S,
                     int P, const float* w, void* y, int64_t OH, int64_t OW) {
  if (bf16) dw_forward(threads, (const uint16_t*)x, N, H, W, C, K, S, P, w, (uint16_t*)y, OH, OW);
  else dw_forward(threads, (const float*)x, N, H, W, C, K, S, P, w, (float*)y, OH, OW);
}
void dw_conv_backward(int bf16, int threads, const void* x, const void* g, int64_t N, int64_t H, int64_t W, int64_t C,
                      int K, int S, int P, const float* w, int64_t OH, int64_t OW, void* gx, float* gw) {
  if (bf16)
    dw_backward(threads, (const uint16_t*)x, (const uint16_t*)g, N, H, W, C, K, S, P, w, OH, OW, (uint16_t*)gx, gw);
  else dw_backward(threads, (const float*)x, (const float*)g, N, H, W, C, K, S, P, w, OH, OW, (float*)gx, gw);
}
}
