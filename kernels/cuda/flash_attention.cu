// Host side of latte's flash attention (kernels/cuda/flash_attention.h): checks which tensors the kernels
// take, fills the parameter block and picks the instantiation for the head dims. The kernels themselves are in
// flash_attention_fwd.cu / flash_attention_fwd_sm90.cu (forward on mma.sync / wgmma), flash_attention_bwd.cu (D
// preprocessing, key-major dK/dV pass with atomic dQ; its wgmma version in flash_attention_bwd_sm90.cu) and
// flash_attention_bwd_dq.cu (deterministic query-major dQ pass; flash_attention_bwd_dq_sm90.cu on wgmma).
#include "kernels/cuda/flash_attention.h"

#include <cstdlib>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_impl.cuh"

namespace latte::cuda {

namespace {

bool head_dims_supported(int64_t dqk, int64_t dv) {
  return (dqk == 64 || dqk == 96 || dqk == 128 || dqk == 192) && (dv == 64 || dv == 128);
}

// A 4-D bf16 CUDA tensor whose rows (last dim) are contiguous and start on 16-byte boundaries.
bool rows_aligned(const Tensor& t) {
  if (!t.defined() || t.dim() != 4 || !t.device().is_cuda() || t.dtype() != DType::BF16) return false;
  if (t.stride(3) != 1 || !aligned16(t.data_ptr())) return false;
  for (int d = 0; d < 3; ++d)
    if (t.size(d) > 1 && t.stride(d) % 8 != 0) return false;
  return true;
}

struct Dims {
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
};

Dims check(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, int64_t branches,
           double scale, bool causal, const char* op) {
  LATTE_CHECK(flash_attention_supported(q, k, v, out), op, ": tensors not supported by the flash kernels (q ",
              q.str(), " k ", k.str(), " v ", v.str(), " out ", out.str(),
              "); check flash_attention_supported() and use cuda::attention_* otherwise");
  Dims d{q.size(0), q.size(1), k.size(1), q.size(2), 0, branches, q.size(3), v.size(3)};
  LATTE_CHECK(branches >= 1 && k.size(2) % branches == 0, op, ": ", k.size(2), " kv heads for ", branches, " branches");
  d.Hk = k.size(2) / branches;
  LATTE_CHECK(d.Hk >= 1 && d.Hq % d.Hk == 0, op, ": ", d.Hq, " query heads for ", d.Hk, " kv heads");
  LATTE_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(3) == d.Dqk && v.size(1) == d.S && v.size(2) == k.size(2),
              op, ": q ", q.shape().str(), " k ", k.shape().str(), " v ", v.shape().str());
  LATTE_CHECK(out.shape() == Shape({d.B, d.T, d.R * d.Hq, d.Dv}), op, ": out ", out.shape().str());
  LATTE_CHECK(lse.defined() && lse.shape() == Shape({d.B, d.R * d.Hq, d.T}) && lse.is_contiguous() &&
                  lse.dtype() == DType::F32 && lse.device() == q.device(),
              op, ": lse ", lse.str(), " must be contiguous f32 (B, R*Hq, T) on the device");
  LATTE_CHECK(!causal || d.S >= d.T, op, ": causal attention needs S >= T, got S=", d.S, " T=", d.T);
  LATTE_CHECK(d.T == 0 || d.S >= 1, op, ": no keys");
  LATTE_CHECK(scale > 0, op, ": softmax scale must be positive, got ", scale);
  LATTE_CHECK(d.T < (int64_t(1) << 30) && d.S < (int64_t(1) << 30), op, ": sequence too long");
  LATTE_CHECK(d.B * d.R * d.Hq <= 65535 && d.B * d.R * d.Hk <= 65535, op, ": more than 65535 (batch, head) pairs");
  return d;
}

flash::Params make_params(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal) {
  flash::Params p{};
  p.q = static_cast<const flash::bf16*>(q.data_ptr());
  p.k = static_cast<const flash::bf16*>(k.data_ptr());
  p.v = static_cast<const flash::bf16*>(v.data_ptr());
  p.q_sb = q.stride(0), p.q_st = q.stride(1), p.q_sh = q.stride(2);
  p.k_sb = k.stride(0), p.k_st = k.stride(1), p.k_sh = k.stride(2);
  p.v_sb = v.stride(0), p.v_st = v.stride(1), p.v_sh = v.stride(2);
  p.B = static_cast<int>(d.B), p.T = static_cast<int>(d.T), p.S = static_cast<int>(d.S);
  p.Hq = static_cast<int>(d.Hq), p.Hk = static_cast<int>(d.Hk), p.R = static_cast<int>(d.R);
  p.G = static_cast<int>(d.Hq / d.Hk);
  p.dqk = static_cast<int>(d.Dqk);
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.causal = causal;
  return p;
}

FlashKernel g_forward_kernel = FlashKernel::kAuto;
FlashKernel g_backward_kernel = FlashKernel::kAuto;
bool g_sm90_pingpong = true;
bool g_sm90_overlap = true;
bool g_sm90_persistent = true;

// The wgmma kernels' persistent blocks, forward and backward: the setter's choice unless LATTE_FLASH_PERSISTENT=0.
int sm90_persistent() {
  static const bool off = !switch_on("LATTE_FLASH_PERSISTENT");
  return g_sm90_persistent && !off ? 1 : 0;
}

}  // namespace

void flash_attention_set_forward_kernel(FlashKernel kernel) { g_forward_kernel = kernel; }
void flash_attention_set_backward_kernel(FlashKernel kernel) { g_backward_kernel = kernel; }
void flash_attention_set_sm90_pingpong(bool on) { g_sm90_pingpong = on; }
void flash_attention_set_sm90_overlap(bool on) { g_sm90_overlap = on; }
void flash_attention_set_sm90_persistent(bool on) { g_sm90_persistent = on; }

bool flash_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out) {
  if (!rows_aligned(q) || !rows_aligned(k) || !rows_aligned(v) || !rows_aligned(out)) return false;
  if (k.device() != q.device() || v.device() != q.device() || out.device() != q.device()) return false;
  if (!head_dims_supported(q.size(3), v.size(3)) || k.size(3) != q.size(3) || out.size(3) != v.size(3)) return false;
  return device_properties(q.device().index).major >= 8;
}

void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             int64_t branches, double softmax_scale, bool causal) {
  const Dims d = check(out, lse, q, k, v, branches, softmax_scale, causal, "flash_attention_forward");
  if (d.T == 0 || d.B == 0) return;
  DeviceGuard guard(q.device().index);
  flash::Params p = make_params(d, q, k, v, softmax_scale, causal);
  p.out = static_cast<flash::bf16*>(out.data_ptr());
  p.lse = lse.data<float>();
  p.o_sb = out.stride(0), p.o_st = out.stride(1), p.o_sh = out.stride(2);
  static const bool pingpong_off = std::getenv("LATTE_FLASH_NO_PINGPONG") != nullptr;  // escape hatch
  static const bool overlap_off = !switch_on("LATTE_FLASH_OVERLAP");  // S and P V one after the other (comparisons)
  static const bool lpt_off = !switch_on("LATTE_FLASH_LPT");
  const int dqk = static_cast<int>(d.Dqk), dv = static_cast<int>(d.Dv);
  // Overlapped, with ping-pong, at every head dim (session 21, persistent blocks, B=4 T=4096 16 heads causal, TFLOP/s):
  // (64,64) 380-398 against 354-359 in turn (session 20, one block per tile: overlapped -2%), (128,128) 538-566 and
  // (192,128) 592-613 with ping-pong against 539-540 and 553-573 without.
  p.sm90_overlap = g_sm90_overlap && !overlap_off ? 1 : 0;
  p.sm90_pingpong = g_sm90_pingpong && !pingpong_off && p.sm90_overlap ? 1 : 0;
  p.sm90_persistent = sm90_persistent();
  p.sm90_head_group = lpt_off ? 1 : 0;  // 0: sized by the launcher
  static const bool wgmma_off = std::getenv("LATTE_FLASH_NO_WGMMA") != nullptr;  // escape hatch
  if (g_forward_kernel != FlashKernel::kMmaSync && !wgmma_off && flash::fwd_sm90_supported(dqk, dv))
    flash::launch_fwd_sm90(p, dqk, dv, current_stream());
  else
    flash::launch_fwd(p, dqk, dv, current_stream());
}

void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              int64_t branches, double softmax_scale, bool causal, bool deterministic) {
  const char* op = "flash_attention_backward";
  const Dims d = check(out, lse, q, k, v, branches, softmax_scale, causal, op);
  LATTE_CHECK(rows_aligned(dout) && dout.shape() == out.shape(), op, ": dout ", dout.str(),
              " must be bf16 with out's shape and 16-byte aligned rows");
  for (const Tensor* t : {&dq, &dk, &dv})
    LATTE_CHECK(t->defined() && t->dtype() == DType::BF16 && t->is_contiguous() && t->device() == q.device() &&
                    aligned16(t->data_ptr()),
                op, ": gradients must be contiguous bf16 on the device, got ", t->defined() ? t->str() : "undefined");
  LATTE_CHECK(dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape(), op,
              ": gradient shapes dq ", dq.shape().str(), " dk ", dk.shape().str(), " dv ", dv.shape().str(),
              " must match q ", q.shape().str(), " k ", k.shape().str(), " v ", v.shape().str());
  if (d.B == 0 || d.S == 0) return;
  DeviceGuard guard(q.device().index);
  const Device dev = q.device();
  flash::Params p = make_params(d, q, k, v, softmax_scale, causal);
  Tensor delta = Tensor::empty({d.B, d.R * d.Hq, d.T}, DType::F32, dev);
  static const bool wgmma_off = std::getenv("LATTE_FLASH_NO_WGMMA") != nullptr ||
                                std::getenv("LATTE_FLASH_NO_WGMMA_BWD") != nullptr;  // escape hatches
  p.sm90_bwd = g_backward_kernel != FlashKernel::kMmaSync && !wgmma_off &&
               flash::bwd_sm90_supported(static_cast<int>(d.Dqk), static_cast<int>(d.Dv));
  Tensor dq_accum;  // rows padded to 64 (the wgmma pass's tiles), columns to 32 (flash::dq_accum_cols)
  Tensor dq_state;  // the wgmma pass: one int per 64-row dQ tile, a multiple of 4 (the D kernel zeroes float4s)
  if (!deterministic) {
    dq_accum = Tensor::empty({d.B, (d.T + 63) / 64 * 64, d.Hq, flash::dq_accum_cols(static_cast<int>(d.Dqk))},
                             DType::F32, dev);
    // LATTE_FLASH_DQ_ZERO=1: the accumulator zeroed and every contribution added (as before session 26; comparisons)
    static const bool zero_accum = std::getenv("LATTE_FLASH_DQ_ZERO") != nullptr;
    if (p.sm90_bwd && !zero_accum)
      dq_state = Tensor::empty({(d.B * d.Hq * ((d.T + 63) / 64) + 3) / 4 * 4}, DType::I32, dev);
  }
  p.o = static_cast<const flash::bf16*>(out.data_ptr());
  p.dout = static_cast<const flash::bf16*>(dout.data_ptr());
  p.o_sb = out.stride(0), p.o_st = out.stride(1), p.o_sh = out.stride(2);
  p.do_sb = dout.stride(0), p.do_st = dout.stride(1), p.do_sh = dout.stride(2);
  p.lse = lse.data<float>();
  p.delta = delta.data<float>();
  p.dq_accum = deterministic ? nullptr : dq_accum.data<float>();
  p.dq_state = dq_state.defined() ? dq_state.data<int32_t>() : nullptr;
  p.dq = static_cast<flash::bf16*>(dq.data_ptr());
  p.dk = static_cast<flash::bf16*>(dk.data_ptr());
  p.dv = static_cast<flash::bf16*>(dv.data_ptr());
  p.atomic_dq = !deterministic;
  // Persistent key tiles (session 24): +2-6% at Dqk 128 and 192, -1 to -2% at (64,64) (docs/attention_kernels.md).
  p.sm90_persistent = sm90_persistent();
  const cudaStream_t stream = current_stream();
  flash::launch_bwd_dkdv(p, static_cast<int>(d.Dqk), static_cast<int>(d.Dv), stream);
  if (deterministic && d.T > 0) {
    // The query-major dQ pass on wgmma wherever the key-major pass runs there (LATTE_FLASH_DQ_MMA=1: on mma.sync,
    // for comparisons).
    static const bool dq_mma = std::getenv("LATTE_FLASH_DQ_MMA") != nullptr;
    if (p.sm90_bwd && !dq_mma)
      flash::launch_bwd_dq_sm90(p, static_cast<int>(d.Dqk), static_cast<int>(d.Dv), stream);
    else
      flash::launch_bwd_dq(p, static_cast<int>(d.Dqk), static_cast<int>(d.Dv), stream);
  }
}

}  // namespace latte::cuda
