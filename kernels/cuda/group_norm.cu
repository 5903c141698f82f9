// Group norm over the last dim: x (N, G*Dg) is normalised per (row, group) over its Dg channels —
// LayerNorm (mean and variance) or RMSNorm (`rms`: mean square only) — then y = xhat w + b with optional
// per-channel w, b (G*Dg). EG-MLA's gate norm uses it (G = 1 over d_c at the latent position; G = n_h
// over d_n or d_v at the kv position). Floor: forward 2 N C elements, backward 3 N C.
//
// Fast path (Dg <= 512): a "team" of L lanes (a power of two <= 32, L*8 >= Dg/2) owns one group g for
// good and walks rows slot, slot + S, ... (S teams per group); each lane holds up to 16 channels of the
// group in registers, so x (and dout) are read once, statistics come from shuffles inside the team, and
// in the backward the lane's share of dweight/dbias stays in registers across rows. Each team slot then
// writes one fp32 partial row that column_sum adds in order (deterministic, no atomics).
//   LN:  dx = rstd (g - mean(g) - xhat mean(g xhat)),  RMS: dx = rstd (g - xhat mean(g xhat)),  g = dout w.
// General path (wider groups): one warp per (row, group) re-reading the group from L1 per pass, and a
// separate column reduction for dweight/dbias (re-reads x and dout). v1 used the general path for every
// shape and measured 16% / 13% of copy bandwidth at G = 16, Dg = 128 (docs/performance.md).
#include <algorithm>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

struct Affine {
  const void* w;  // null: no weight
  int dtw;
  const void* b;  // null: no bias
  int dtb;
};

// One warp per (row n, group g); item = n * G + g.
__global__ void group_norm_forward_kernel(void* out, int dto, float* mean, float* rstd, const void* x, int dtx,
                                          Affine af, int64_t items, int64_t G, int64_t Dg, float eps, bool rms,
                                          bool vec) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (item >= items) return;
  const int64_t g = item % G;
  const int64_t base = item * Dg;  // element offset of this (row, group): (n*G + g) * Dg
  float mu = 0.f;
  if (!rms) {
    float s = 0.f;
    for (int64_t c = lane * 8; c < Dg; c += 256) {
      float v[8];
      load8_any(x, dtx, base + c, base + Dg, vec, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) s += v[k];
    }
    mu = warp_sum(s) / static_cast<float>(Dg);
  }
  float ss = 0.f;
  for (int64_t c = lane * 8; c < Dg; c += 256) {
    float v[8];
    load8_any(x, dtx, base + c, base + Dg, vec, v);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (c + k < Dg) ss += (v[k] - mu) * (v[k] - mu);
  }
  const float r = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(Dg) + eps);
  for (int64_t c = lane * 8; c < Dg; c += 256) {
    float v[8], w[8], b[8];
    load8_any(x, dtx, base + c, base + Dg, vec, v);
    const int64_t ch = g * Dg + c, C = G * Dg;  // channel index into w, b
    if (af.w) load8_any(af.w, af.dtw, ch, min(C, g * Dg + Dg), vec, w);
    if (af.b) load8_any(af.b, af.dtb, ch, min(C, g * Dg + Dg), vec, b);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = (v[k] - mu) * r;
      if (af.w) v[k] *= w[k];
      if (af.b) v[k] += b[k];
    }
    store8_any(out, dto, base + c, base + Dg, vec, v);
  }
  if (lane == 0) {
    if (mean) mean[item] = mu;
    rstd[item] = r;
  }
}

__global__ void group_norm_dx_kernel(void* dx, int dtdx, const void* dout, int dtd, const void* x, int dtx, Affine af,
                                     const float* mean, const float* rstd, int64_t items, int64_t G, int64_t Dg,
                                     bool rms, bool vec) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (item >= items) return;
  const int64_t g = item % G, base = item * Dg, C = G * Dg;
  const float mu = rms || !mean ? 0.f : mean[item], r = rstd[item];
  float sum_g = 0.f, sum_gx = 0.f;
  for (int pass = 0; pass < 2; ++pass) {
    const float mg = sum_g / static_cast<float>(Dg), mgx = sum_gx / static_cast<float>(Dg);
    for (int64_t c = lane * 8; c < Dg; c += 256) {
      float v[8], d[8], w[8];
      load8_any(x, dtx, base + c, base + Dg, vec, v);
      load8_any(dout, dtd, base + c, base + Dg, vec, d);
      if (af.w) load8_any(af.w, af.dtw, g * Dg + c, min(C, g * Dg + Dg), vec, w);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float xhat = (v[k] - mu) * r, gk = af.w ? d[k] * w[k] : d[k];
        if (pass == 0) {
          if (c + k < Dg) {
            sum_g += gk;
            sum_gx += gk * xhat;
          }
        } else {
          v[k] = r * (gk - (rms ? 0.f : mg) - xhat * mgx);
        }
      }
      if (pass == 1) store8_any(dx, dtdx, base + c, base + Dg, vec, v);
    }
    if (pass == 0) {
      sum_g = warp_sum(sum_g);
      sum_gx = warp_sum(sum_gx);
    }
  }
}

// Block (32, 8): channel c = blockIdx.x*32 + x; rows [chunk*rows_per_chunk, +rows_per_chunk) split over y.
// pw, pb: (chunks, C) partial sums of dout*xhat and dout.
__global__ void group_norm_dparams_kernel(float* pw, float* pb, const void* dout, int dtd, const void* x, int dtx,
                                          const float* mean, const float* rstd, int64_t N, int64_t G, int64_t Dg,
                                          int64_t rows_per_chunk) {
  __shared__ float tw[8][33], tb[8][33];
  const int64_t C = G * Dg, c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float aw = 0.f, ab = 0.f;
  if (c < C) {
    const int64_t g = c / Dg;
    for (int64_t n = r0 + threadIdx.y; n < r1; n += 8) {
      const float d = load1(dout, dtd, n * C + c);
      const float mu = mean ? mean[n * G + g] : 0.f;
      aw += d * (load1(x, dtx, n * C + c) - mu) * rstd[n * G + g];
      ab += d;
    }
  }
  tw[threadIdx.y][threadIdx.x] = aw;
  tb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sw = 0.f, sb = 0.f;
#pragma unroll
    for (int y = 0; y < 8; ++y) {
      sw += tw[y][threadIdx.x];
      sb += tb[y][threadIdx.x];
    }
    if (pw) pw[static_cast<int64_t>(blockIdx.y) * C + c] = sw;
    if (pb) pb[static_cast<int64_t>(blockIdx.y) * C + c] = sb;
  }
}

// ---- fast path: teams of L lanes ----------------------------------------------------------------------

constexpr int kTeamBlock = 256;
constexpr int kMaxTeamDg = 512;  // 2 chunks of 8 channels per lane, 32 lanes

// Channel (within the group) of slot (k, e) of lane `lane` in a team of L: coalesced over the team.
__device__ __forceinline__ int64_t team_channel(bool vec, int L, int lane, int k, int e) {
  return vec ? (static_cast<int64_t>(k) * L + lane) * 8 + e : (static_cast<int64_t>(k) * 8 + e) * L + lane;
}

template <int CPL>
__device__ __forceinline__ void team_load(const void* p, int dt, int64_t base, int64_t Dg, int L, int lane, bool vec,
                                          bool active, float (&v)[CPL * 8]) {
#pragma unroll
  for (int k = 0; k < CPL; ++k) {
    if (vec) {
      const int64_t c = team_channel(true, L, lane, k, 0);
      float t[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (active && c < Dg) load8(p, dt, base + c, t);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[k * 8 + e] = t[e];
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t c = team_channel(false, L, lane, k, e);
        v[k * 8 + e] = active && c < Dg ? load1(p, dt, base + c) : 0.f;
      }
    }
  }
}

template <int CPL>
__device__ __forceinline__ void team_store(void* p, int dt, int64_t base, int64_t Dg, int L, int lane, bool vec,
                                           bool active, const float (&v)[CPL * 8]) {
  if (!active) return;
#pragma unroll
  for (int k = 0; k < CPL; ++k) {
    if (vec) {
      const int64_t c = team_channel(true, L, lane, k, 0);
      float t[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) t[e] = v[k * 8 + e];
      if (c < Dg) store8(p, dt, base + c, t);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t c = team_channel(false, L, lane, k, e);
        if (c < Dg) store1(p, dt, base + c, v[k * 8 + e]);
      }
    }
  }
}

// Sum over the L lanes of a team (teams are aligned groups of L lanes of a warp; every lane calls this).
__device__ __forceinline__ float team_sum(float v, int L) {
  for (int o = L >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

struct TeamGrid {
  int64_t slots;  // teams per group; team = slot * G + g
  int64_t iters;  // rows per slot, rounded up (uniform loop count, so that every lane reaches every shuffle)
};

template <int CPL>
__global__ void __launch_bounds__(kTeamBlock, CPL == 1 ? 3 : 1) group_norm_forward_team_kernel(
    void* out, int dto, float* mean, float* rstd, const void* x, int dtx, Affine af, int64_t N, int64_t G, int64_t Dg,
    int L, TeamGrid tg, float eps, bool rms, bool vec) {
  const int64_t team = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / L;
  const int lane = threadIdx.x & (L - 1);
  const int64_t g = team % G, slot = team / G;
  const bool team_on = slot < tg.slots;
  float w[CPL * 8], b[CPL * 8];
  if (af.w) team_load<CPL>(af.w, af.dtw, g * Dg, Dg, L, lane, vec, team_on, w);
  if (af.b) team_load<CPL>(af.b, af.dtb, g * Dg, Dg, L, lane, vec, team_on, b);
  const float inv_dg = 1.f / static_cast<float>(Dg);
  for (int64_t it = 0; it < tg.iters; ++it) {
    const int64_t n = slot + it * tg.slots;
    const bool on = team_on && n < N;
    const int64_t base = (n * G + g) * Dg;
    float v[CPL * 8];
    team_load<CPL>(x, dtx, base, Dg, L, lane, vec, on, v);
    float mu = 0.f;
    if (!rms) {
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < CPL * 8; ++k) s += v[k];
      mu = team_sum(s, L) * inv_dg;
    }
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < CPL; ++k)
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (team_channel(vec, L, lane, k, e) < Dg) ss += (v[k * 8 + e] - mu) * (v[k * 8 + e] - mu);
    const float r = 1.0f / sqrtf(team_sum(ss, L) * inv_dg + eps);
#pragma unroll
    for (int k = 0; k < CPL * 8; ++k) {
      v[k] = (v[k] - mu) * r;
      if (af.w) v[k] *= w[k];
      if (af.b) v[k] += b[k];
    }
    team_store<CPL>(out, dto, base, Dg, L, lane, vec, on, v);
    if (on && lane == 0) {
      if (mean) mean[n * G + g] = mu;
      rstd[n * G + g] = r;
    }
  }
}

// pw, pb: (slots, C) partial sums of dout*xhat and dout (null when not wanted).
template <int CPL>
__global__ void __launch_bounds__(kTeamBlock, CPL == 1 ? 3 : 1) group_norm_backward_team_kernel(
    void* dx, int dtdx, float* pw, float* pb, const void* dout, int dtd, const void* x, int dtx, Affine af,
    const float* mean, const float* rstd, int64_t N, int64_t G, int64_t Dg, int L, TeamGrid tg, bool rms, bool vec) {
  const int64_t team = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / L;
  const int lane = threadIdx.x & (L - 1);
  const int64_t g = team % G, slot = team / G, C = G * Dg;
  const bool team_on = slot < tg.slots;
  float w[CPL * 8], accw[CPL * 8], accb[CPL * 8];
  if (af.w) team_load<CPL>(af.w, af.dtw, g * Dg, Dg, L, lane, vec, team_on, w);
#pragma unroll
  for (int k = 0; k < CPL * 8; ++k) accw[k] = accb[k] = 0.f;
  const float inv_dg = 1.f / static_cast<float>(Dg);
  for (int64_t it = 0; it < tg.iters; ++it) {
    const int64_t n = slot + it * tg.slots;
    const bool on = team_on && n < N;
    const int64_t base = (n * G + g) * Dg;
    float v[CPL * 8], d[CPL * 8];
    team_load<CPL>(x, dtx, base, Dg, L, lane, vec, on, v);
    team_load<CPL>(dout, dtd, base, Dg, L, lane, vec, on, d);
    const float mu = on && mean && !rms ? mean[n * G + g] : 0.f, r = on ? rstd[n * G + g] : 0.f;
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int k = 0; k < CPL * 8; ++k) {
      v[k] = (v[k] - mu) * r;  // xhat (garbage past Dg: d is 0 there)
      const float gk = af.w ? d[k] * w[k] : d[k];
      sg += gk;
      sgx += gk * v[k];
      accw[k] += d[k] * v[k];
      accb[k] += d[k];
    }
    const float mg = rms ? 0.f : team_sum(sg, L) * inv_dg, mgx = team_sum(sgx, L) * inv_dg;
#pragma unroll
    for (int k = 0; k < CPL * 8; ++k) {
      const float gk = af.w ? d[k] * w[k] : d[k];
      d[k] = r * (gk - mg - v[k] * mgx);
    }
    team_store<CPL>(dx, dtdx, base, Dg, L, lane, vec, on, d);
  }
  if (!team_on) return;
#pragma unroll
  for (int k = 0; k < CPL; ++k)
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t c = team_channel(vec, L, lane, k, e);
      if (c >= Dg) continue;
      if (pw) pw[slot * C + g * Dg + c] = accw[k * 8 + e];
      if (pb) pb[slot * C + g * Dg + c] = accb[k * 8 + e];
    }
}

// Team shape for Dg: L lanes (power of two) and CPL chunks of 8 per lane; false when Dg is too wide.
bool team_shape(int64_t Dg, int* L, int* cpl) {
  if (Dg > kMaxTeamDg) return false;
  int l = 1;
  while (l < 32 && static_cast<int64_t>(l) * 8 < Dg) l *= 2;
  *L = l;
  *cpl = static_cast<int64_t>(l) * 8 >= Dg ? 1 : 2;
  return true;
}

// Blocks so that the teams fill the GPU (or cover every (row, group)), with S = teams / G slots per group.
template <typename K>
TeamGrid team_grid(K kernel, int64_t N, int64_t G, int L, unsigned* blocks) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kTeamBlock, 0));
  const int64_t teams_per_block = kTeamBlock / L;
  const int64_t want = (N * G + teams_per_block - 1) / teams_per_block;
  const int64_t b = std::max<int64_t>(1, std::min<int64_t>(want, static_cast<int64_t>(std::max(per_sm, 1)) * sm_count()));
  *blocks = static_cast<unsigned>(b);
  TeamGrid tg;
  tg.slots = std::min<int64_t>(N, b * teams_per_block / G);
  tg.iters = tg.slots > 0 ? (N + tg.slots - 1) / tg.slots : 0;
  return tg;
}

Affine make_affine(const Tensor& w, const Tensor& b, int64_t C, const char* op) {
  Affine af{nullptr, kF32, nullptr, kF32};
  if (w.defined()) {
    LATTE_CHECK(w.numel() == C && w.is_contiguous(), op, ": weight ", w.shape().str(), " must have ", C, " elements");
    af.w = w.data_ptr();
    af.dtw = float_code(w, op);
  }
  if (b.defined()) {
    LATTE_CHECK(b.numel() == C && b.is_contiguous(), op, ": bias ", b.shape().str(), " must have ", C, " elements");
    af.b = b.data_ptr();
    af.dtb = float_code(b, op);
  }
  return af;
}

bool vec_ok(int64_t Dg, std::initializer_list<const Tensor*> ts) {
  if (Dg % 8 != 0) return false;
  for (const Tensor* t : ts)
    if (t->defined() && !aligned16(t->data_ptr())) return false;
  return true;
}

}  // namespace

void group_norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, int64_t groups, double eps, bool rms) {
  const char* op = "group_norm_forward";
  LATTE_CHECK(x.dim() >= 1 && out.shape() == x.shape() && groups > 0 && x.size(-1) % groups == 0, op, ": x ",
              x.shape().str(), " out ", out.shape().str(), " groups ", groups);
  const int64_t C = x.size(-1), N = C ? x.numel() / C : 0, Dg = C / groups;
  LATTE_CHECK(rstd.numel() == N * groups && rstd.dtype() == DType::F32, op, ": rstd ", rstd.shape().str(),
              " must be f32 with N*groups = ", N * groups, " elements");
  LATTE_CHECK(!mean.defined() || (mean.numel() == N * groups && mean.dtype() == DType::F32), op, ": mean ",
              mean.shape().str());
  for (const Tensor* t : {&out, &x, &rstd}) require_contiguous(*t, op, "operand");
  if (mean.defined()) require_contiguous(mean, op, "mean");
  Affine af = make_affine(weight, bias, C, op);
  const int64_t items = N * groups;
  if (items == 0 || Dg == 0) return;
  const bool vec = vec_ok(Dg, {&out, &x, &weight, &bias});
  int L, cpl;
  if (team_shape(Dg, &L, &cpl)) {
    unsigned blocks;
    float* pm = mean.defined() ? mean.data<float>() : nullptr;
    if (cpl == 1) {
      TeamGrid tg = team_grid(group_norm_forward_team_kernel<1>, N, groups, L, &blocks);
      if (tg.slots > 0) {
        group_norm_forward_team_kernel<1><<<blocks, kTeamBlock, 0, current_stream()>>>(
            out.data_ptr(), float_code(out, op), pm, rstd.data<float>(), x.data_ptr(), float_code(x, op), af, N, groups,
            Dg, L, tg, static_cast<float>(eps), rms, vec);
        CUDA_CHECK_LAUNCH("group_norm_forward_team_kernel");
        return;
      }
    } else {
      TeamGrid tg = team_grid(group_norm_forward_team_kernel<2>, N, groups, L, &blocks);
      if (tg.slots > 0) {
        group_norm_forward_team_kernel<2><<<blocks, kTeamBlock, 0, current_stream()>>>(
            out.data_ptr(), float_code(out, op), pm, rstd.data<float>(), x.data_ptr(), float_code(x, op), af, N, groups,
            Dg, L, tg, static_cast<float>(eps), rms, vec);
        CUDA_CHECK_LAUNCH("group_norm_forward_team_kernel");
        return;
      }
    }
  }
  group_norm_forward_kernel<<<blocks_for(items, 8), 256, 0, current_stream()>>>(
      out.data_ptr(), float_code(out, op), mean.defined() ? mean.data<float>() : nullptr, rstd.data<float>(),
      x.data_ptr(), float_code(x, op), af, items, groups, Dg, static_cast<float>(eps), rms, vec);
  CUDA_CHECK_LAUNCH("group_norm_forward_kernel");
}

void group_norm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                         const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd, int64_t groups,
                         bool rms) {
  const char* op = "group_norm_backward";
  LATTE_CHECK(x.dim() >= 1 && dx.shape() == x.shape() && dout.shape() == x.shape() && groups > 0 &&
                  x.size(-1) % groups == 0,
              op, ": x ", x.shape().str(), " dx ", dx.shape().str(), " dout ", dout.shape().str(), " groups ", groups);
  const int64_t C = x.size(-1), N = C ? x.numel() / C : 0, Dg = C / groups;
  LATTE_CHECK(rstd.numel() == N * groups && rstd.dtype() == DType::F32, op, ": rstd ", rstd.shape().str());
  for (const Tensor* t : {&dx, &dout, &x, &rstd}) require_contiguous(*t, op, "operand");
  const bool use_mean = !rms && mean.defined();
  if (use_mean) require_contiguous(mean, op, "mean");
  Affine af = make_affine(weight, Tensor(), C, op);
  const int64_t items = N * groups;
  if (items == 0 || Dg == 0) return;
  cudaStream_t stream = current_stream();
  const float* pmean = use_mean ? mean.data<float>() : nullptr;
  const bool vec = vec_ok(Dg, {&dx, &dout, &x, &weight});
  if (dweight.defined())
    LATTE_CHECK(dweight.numel() == C && dweight.is_contiguous(), op, ": dweight ", dweight.shape().str());
  if (dbias.defined()) LATTE_CHECK(dbias.numel() == C && dbias.is_contiguous(), op, ": dbias ", dbias.shape().str());
  int L, cpl;
  if (team_shape(Dg, &L, &cpl)) {
    unsigned blocks;
    TeamGrid tg = cpl == 1 ? team_grid(group_norm_backward_team_kernel<1>, N, groups, L, &blocks)
                           : team_grid(group_norm_backward_team_kernel<2>, N, groups, L, &blocks);
    if (tg.slots > 0) {
      Tensor pw, pb;
      if (dweight.defined()) pw = Tensor::empty({tg.slots, C}, DType::F32, x.device());
      if (dbias.defined()) pb = Tensor::empty({tg.slots, C}, DType::F32, x.device());
      float* ppw = pw.defined() ? pw.data<float>() : nullptr;
      float* ppb = pb.defined() ? pb.data<float>() : nullptr;
      if (cpl == 1)
        group_norm_backward_team_kernel<1><<<blocks, kTeamBlock, 0, stream>>>(
            dx.data_ptr(), float_code(dx, op), ppw, ppb, dout.data_ptr(), float_code(dout, op), x.data_ptr(),
            float_code(x, op), af, pmean, rstd.data<float>(), N, groups, Dg, L, tg, rms, vec);
      else
        group_norm_backward_team_kernel<2><<<blocks, kTeamBlock, 0, stream>>>(
            dx.data_ptr(), float_code(dx, op), ppw, ppb, dout.data_ptr(), float_code(dout, op), x.data_ptr(),
            float_code(x, op), af, pmean, rstd.data<float>(), N, groups, Dg, L, tg, rms, vec);
      CUDA_CHECK_LAUNCH("group_norm_backward_team_kernel");
      if (pw.defined()) column_sum(dweight.data_ptr(), float_code(dweight, op), ppw, tg.slots, C, true, stream);
      if (pb.defined()) column_sum(dbias.data_ptr(), float_code(dbias, op), ppb, tg.slots, C, true, stream);
      return;
    }
  }
  group_norm_dx_kernel<<<blocks_for(items, 8), 256, 0, stream>>>(dx.data_ptr(), float_code(dx, op), dout.data_ptr(),
                                                                 float_code(dout, op), x.data_ptr(), float_code(x, op), af,
                                                                 pmean, rstd.data<float>(), items, groups, Dg, rms, vec);
  CUDA_CHECK_LAUNCH("group_norm_dx_kernel");
  if (!dweight.defined() && !dbias.defined()) return;
  const int64_t col_blocks = (C + 31) / 32;
  int64_t chunks = (2 * static_cast<int64_t>(sm_count()) + col_blocks - 1) / col_blocks;
  chunks = std::max<int64_t>(1, std::min<int64_t>({chunks, (N + 7) / 8, 256}));
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  Tensor pw, pb;
  if (dweight.defined()) pw = Tensor::empty({chunks, C}, DType::F32, x.device());
  if (dbias.defined()) pb = Tensor::empty({chunks, C}, DType::F32, x.device());
  group_norm_dparams_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
                              stream>>>(pw.defined() ? pw.data<float>() : nullptr,
                                        pb.defined() ? pb.data<float>() : nullptr, dout.data_ptr(), float_code(dout, op),
                                        x.data_ptr(), float_code(x, op), pmean, rstd.data<float>(), N, groups, Dg,
                                        rows_per_chunk);
  CUDA_CHECK_LAUNCH("group_norm_dparams_kernel");
  if (pw.defined()) column_sum(dweight.data_ptr(), float_code(dweight, op), pw.data<float>(), chunks, C, true, stream);
  if (pb.defined()) column_sum(dbias.data_ptr(), float_code(dbias, op), pb.data<float>(), chunks, C, true, stream);
}

}  // namespace latte::cuda
