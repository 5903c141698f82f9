// Attention kernel benchmark (GPU only): latte's flash forward/backward at the training shape and the decode
// kernels at a 32k context, each against its ceiling measured in the same run.
//   training: B=4, T=S=4096, 16 heads (MHA), causal, (Dqk, Dv) in {(64,64), (128,128), (192,128)}
//     FLOPs counted causal, as FlashAttention's benchmarks do: forward 2 B H T T (Dqk + Dv) / 2 (QK^T and PV,
//     2 FLOPs a multiply-add, half the score matrix); backward 2.5x the forward (5 GEMMs instead of 2; the
//     recomputed QK^T is not counted). TFLOP/s = FLOPs / median time.
//   decode: one query token against S = 32768 cached positions; bytes = the cache read once (K and V, or the
//     latent c and rope key kr) plus q and out; GB/s over the device-to-device copy bandwidth (bytes read +
//     written) measured here. Caches are rotated so repeats do not hit L2. Read-floor rows: a kernel that only
//     reads as many bytes, timed the same way (what any decode call of that size can reach).
// Timing: CUDA events on latte's stream, warm-up, median of repeats; at the training shape every implementation
// of an op is timed in interleaved rounds in shuffled orders, the backward after an untimed forward (see
// interleaved_median_ms). Prints "RESULT name value" lines (read by scripts/attention_check.sh) and a table last.
// PyTorch's numbers come from scripts/reference/attention_bench.py. `--decode` runs the decode rows alone,
// `--decode-models` the decode shapes of latte's own model configs (configs/models), `--forward` the wgmma forward
// persistent and per query tile against cuDNN (forward_only). LATTE_BENCH_ROWS=A|B|...
// keeps only the decode and read-floor rows, and the `--backward` / `--forward` shapes ("bwd B4 T4096 H16 (64,64)"),
// whose name and shape contain one of the texts (A/B runs of a few shapes in less device time: scripts/bench_ab.py
// --rows).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_context.h"
#include "core/device.h"
#include "core/tensor.h"
#include "kernels/attention_backend.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cudnn_attention.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/delayed_copy.h"
#include "kernels/cuda/flash_attention.h"

using namespace latte;

namespace {

// Two CUDA events on latte's stream: the time of one call between them, each call synchronised.
class CallTimer {
 public:
  CallTimer() {
    CUDA_CHECK(cudaEventCreate(&a_));
    CUDA_CHECK(cudaEventCreate(&b_));
  }
  ~CallTimer() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;
  template <class F>
  float ms(F&& f) {
    cudaStream_t s = cuda::current_stream();
    CUDA_CHECK(cudaEventRecord(a_, s));
    f();
    CUDA_CHECK(cudaEventRecord(b_, s));
    CUDA_CHECK(cudaEventSynchronize(b_));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a_, b_));
    return t;
  }

 private:
  cudaEvent_t a_, b_;
};

double median_of(std::vector<float> ts) {
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

template <class F>
double median_ms(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f(i);
  CallTimer timer;
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) ts.push_back(timer.ms([&] { f(i); }));
  return median_of(std::move(ts));
}

struct Row {
  std::string name, shape;
  double ms, rate;
  std::string unit;
  double ratio;
  std::string ratio_of;
};
std::vector<Row> rows;

void result(const std::string& key, double v) { std::printf("RESULT %s %.4f\n", key.c_str(), v); }

double copy_bandwidth_gbs() {
  const size_t bytes = size_t(1) << 30;
  Tensor a = Tensor::randn({int64_t(bytes / 2)}, 1, 0, 1.0, DType::BF16, Device::cuda());
  Tensor b = Tensor::empty({int64_t(bytes / 2)}, DType::BF16, Device::cuda());
  const double ms = median_ms(
      [&](int) {
        CUDA_CHECK(cudaMemcpyAsync(b.data_ptr(), a.data_ptr(), bytes, cudaMemcpyDeviceToDevice, cuda::current_stream()));
      },
      3, 20);
  const double gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  rows.push_back({"copy (d2d, read+write)", "1 GiB", ms, gbs, "GB/s", 1.0, "copy"});
  result("copy_gbs", gbs);
  return gbs;
}

// The first batch of a (B, ...) output on the host, and ||out[0] - ref|| / ||ref|| against such a copy.
std::vector<double> first_batch(const Tensor& out) {
  return out.narrow(0, 0, 1).contiguous().to(DType::F32).cpu().to_vector();
}
double rel_diff_first_batch(const Tensor& out, const std::vector<double>& ref) {
  const std::vector<double> o = first_batch(out);
  double num = 0, den = 0;
  for (size_t x = 0; x < o.size(); ++x) num += (o[x] - ref[x]) * (o[x] - ref[x]), den += ref[x] * ref[x];
  return std::sqrt(num / den);
}

// The tensors of one flash-attention call (forward and backward) at (B, T, H, Dqk / Dv), bf16 on the GPU, inputs
// random with fixed seeds.
struct FlashTensors {
  Tensor q, k, v, dout, out, lse, dq, dk, dv;
};
FlashTensors flash_tensors(int64_t B, int64_t T, int64_t H, int64_t dqk, int64_t dv) {
  const Device dev = Device::cuda();
  FlashTensors t;
  t.q = Tensor::randn({B, T, H, dqk}, 11, 0, 1.0, DType::BF16, dev);
  t.k = Tensor::randn({B, T, H, dqk}, 12, 0, 1.0, DType::BF16, dev);
  t.v = Tensor::randn({B, T, H, dv}, 13, 0, 1.0, DType::BF16, dev);
  t.dout = Tensor::randn({B, T, H, dv}, 14, 0, 1.0, DType::BF16, dev);
  t.out = Tensor::empty({B, T, H, dv}, DType::BF16, dev);
  t.lse = Tensor::empty({B, H, T}, DType::F32, dev);
  t.dq = Tensor::empty(t.q.shape(), DType::BF16, dev);
  t.dk = Tensor::empty(t.k.shape(), DType::BF16, dev);
  t.dv = Tensor::empty(t.v.shape(), DType::BF16, dev);
  return t;
}

// Implementations of one op timed in interleaved rounds, each round in a new shuffled order: per round one
// warm-up call and `reps` timed calls (one call between two events each) of every implementation; each one's
// median over all its timed calls. Why: the same cuDNN backward timed in a fixed order within one run moved by up
// to 9% (2.09-2.29 ms at (192,128); SM clock 1725-1980 MHz), whichever was timed right after a slower kernel
// gaining; PyTorch's reference (scripts/reference/attention_bench.py) times its backends the same way. `pre`, when
// set, is launched untimed right before each call (the backward's forward, as PyTorch's reference times its
// backward: the host work of the timed call then overlaps that forward on the GPU, as it does in training).
struct Timed {
  std::string name, key;  // table row, RESULT key ("" for none)
  std::function<void()> call, pre;
};
std::vector<double> interleaved_median_ms(const std::vector<Timed>& impls, int rounds = 6, int reps = 8) {
  CallTimer timer;
  std::vector<std::vector<float>> ts(impls.size());
  std::vector<size_t> order(impls.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::mt19937 rng(12345);
  for (int r = 0; r < rounds; ++r) {
    std::shuffle(order.begin(), order.end(), rng);  // a new order each round: no fixed predecessor
    for (const size_t i : order) {
      if (impls[i].pre) impls[i].pre();
      impls[i].call();
      for (int j = 0; j < reps; ++j) {
        if (impls[i].pre) impls[i].pre();
        ts[i].push_back(timer.ms(impls[i].call));
      }
    }
  }
  std::vector<double> med;
  for (auto& t : ts) med.push_back(median_of(std::move(t)));
  return med;
}

void bench_flash(int64_t dqk, int64_t dv) {
  const int64_t B = 4, T = 4096, H = 16;
  FlashTensors ft = flash_tensors(B, T, H, dqk, dv);
  auto& [q, k, v, dout, out, lse, dq, dk, dvv] = ft;
  const double scale = 1.0 / std::sqrt(double(dqk));
  const double fwd_flops = 2.0 * B * H * double(T) * T * double(dqk + dv) / 2.0, bwd_flops = 2.5 * fwd_flops;
  const std::string shape = "B4 T4096 H16 (" + std::to_string(dqk) + "," + std::to_string(dv) + ") causal";
  const std::string tag = std::to_string(dqk) + "_" + std::to_string(dv);
  set_attention_backend(AttentionBackend::Auto);
  // Each timed call sets the kernel choice it needs (the implementations are interleaved); `auto` runs with the
  // defaults (kAuto, ping-pong on), as training does.
  auto flash_fwd = [&](cuda::FlashKernel kernel, bool pingpong) {
    return [&, kernel, pingpong] {
      cuda::flash_attention_set_forward_kernel(kernel);
      cuda::flash_attention_set_sm90_pingpong(pingpong);
      cuda::flash_attention_forward(out, lse, q, k, v, 1, scale, true);
      cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kAuto);
      cuda::flash_attention_set_sm90_pingpong(true);
    };
  };
  auto flash_bwd = [&](cuda::FlashKernel kernel, bool deterministic) {
    return [&, kernel, deterministic] {
      cuda::flash_attention_set_backward_kernel(kernel);
      cuda::flash_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true, deterministic);
      cuda::flash_attention_set_backward_kernel(cuda::FlashKernel::kAuto);
    };
  };
  auto add_rows = [&](const std::vector<Timed>& impls, double flops) {
    const std::vector<double> ms = interleaved_median_ms(impls);
    std::vector<double> tf;
    for (size_t i = 0; i < impls.size(); ++i) {
      tf.push_back(flops / (ms[i] * 1e-3) / 1e12);
      rows.push_back({impls[i].name, shape, ms[i], tf[i], "TFLOP/s", tf[i] / 989.0, "dense peak"});
      if (!impls[i].key.empty()) result(impls[i].key, tf[i]);
    }
    return tf;
  };

  // Forward. Correctness first: the wgmma kernels (sm_90a), with and without warpgroup ping-pong, and cuDNN against
  // the mma.sync output on the first batch; the fastest correct flash kernel is the "latte fwd" result.
  flash_fwd(cuda::FlashKernel::kMmaSync, false)();
  const std::vector<double> ref_out = first_batch(out);
  std::vector<Timed> fwd{
      {"latte flash fwd (mma.sync)", "latte_fwd_mma_" + tag, flash_fwd(cuda::FlashKernel::kMmaSync, false)}};
  const bool wgmma_off = std::getenv("LATTE_FLASH_NO_WGMMA") != nullptr;
  const bool pingpong_off = std::getenv("LATTE_FLASH_NO_PINGPONG") != nullptr;
  for (int pp = pingpong_off ? 1 : 0; pp < (wgmma_off ? 0 : 2); ++pp) {
    const bool pingpong = pp == 0;
    out.fill_(0.0);
    flash_fwd(cuda::FlashKernel::kWgmma, pingpong)();
    const double err = rel_diff_first_batch(out, ref_out);
    const std::string name = std::string("latte flash fwd (wgmma") + (pingpong ? ", ping-pong)" : ")");
    std::printf("%s %s: rel. diff vs mma.sync %.3g\n", name.c_str(), shape.c_str(), err);
    if (err < 1e-2)
      fwd.push_back({name, std::string("latte_fwd_wgmma") + (pingpong ? "_pp_" : "_") + tag,
                     flash_fwd(cuda::FlashKernel::kWgmma, pingpong)});
  }
  const size_t n_flash_fwd = fwd.size();
  const std::string why = cuda::cudnn_attention_forward_unsupported(q, k, v, out, lse, 1, true);
  if (!why.empty()) {
    std::printf("latte cudnn %s: not supported: %s\n", shape.c_str(), why.c_str());
  } else {
    out.fill_(0.0);
    cuda::cudnn_attention_forward(out, lse, q, k, v, 1, scale, true);
    std::printf("latte cudnn fwd %s: rel. diff vs flash %.3g\n", shape.c_str(), rel_diff_first_batch(out, ref_out));
    fwd.push_back({"latte cudnn fwd", "latte_cudnn_fwd_" + tag,
                   [&] { cuda::cudnn_attention_forward(out, lse, q, k, v, 1, scale, true); }});
  }
  fwd.push_back({"latte auto fwd", "latte_auto_fwd_" + tag,
                 [&] { cuda::attention_forward(out, lse, q, k, v, 1, scale, true); }});
  const std::vector<double> fwd_tf = add_rows(fwd, fwd_flops);
  result("latte_fwd_" + tag, *std::max_element(fwd_tf.begin(), fwd_tf.begin() + n_flash_fwd));

  // Backward, on the reference kernel's forward: the mma.sync key-major pass, the default (wgmma on sm_90a; checked
  // against mma.sync on the first batch of dq, dk and dv), deterministic mode, cuDNN and `auto`.
  flash_fwd(cuda::FlashKernel::kMmaSync, false)();
  flash_bwd(cuda::FlashKernel::kMmaSync, false)();
  const std::vector<double> ref_dq = first_batch(dq), ref_dk = first_batch(dk), ref_dv = first_batch(dvv);
  dq.fill_(0.0), dk.fill_(0.0), dvv.fill_(0.0);
  flash_bwd(cuda::FlashKernel::kAuto, false)();
  std::printf("latte flash bwd (default) %s: rel. diff vs mma.sync dq %.3g dk %.3g dv %.3g\n", shape.c_str(),
              rel_diff_first_batch(dq, ref_dq), rel_diff_first_batch(dk, ref_dk), rel_diff_first_batch(dvv, ref_dv));
  // Each timed backward follows a forward launched untimed (`auto`, which writes the same out and lse up to
  // rounding), as PyTorch's reference times its backward.
  auto forward = [&] { cuda::attention_forward(out, lse, q, k, v, 1, scale, true); };
  std::vector<Timed> bwd{
      {"latte flash bwd (mma.sync)", "latte_bwd_mma_" + tag, flash_bwd(cuda::FlashKernel::kMmaSync, false), forward},
      {"latte flash bwd", "latte_bwd_" + tag, flash_bwd(cuda::FlashKernel::kAuto, false), forward},
      {"latte flash bwd (deterministic)", "latte_bwd_det_" + tag, flash_bwd(cuda::FlashKernel::kAuto, true), forward}};
  const std::string bwhy = cuda::cudnn_attention_backward_unsupported(dq, dk, dvv, dout, q, k, v, out, lse, 1, true);
  if (!bwhy.empty())
    std::printf("latte cudnn bwd %s: not supported: %s\n", shape.c_str(), bwhy.c_str());
  else
    bwd.push_back({"latte cudnn bwd", "latte_cudnn_bwd_" + tag,
                   [&] { cuda::cudnn_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true); },
                   forward});
  bwd.push_back({"latte auto bwd", "latte_auto_bwd_" + tag,
                 [&] { cuda::attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true); }, forward});
  add_rows(bwd, bwd_flops);
}

// The host's time per call (checks, descriptors, allocations, launches): 64 calls enqueued behind a 5 ms busy
// kernel, timed on the CPU clock; the device starts on them only after the CPU is done.
template <typename F>
double host_ms_per_call(F&& call) {
  call(0);  // warm: the host-side caches and the allocator's blocks
  CUDA_CHECK(cudaStreamSynchronize(cuda::current_stream()));
  cuda::busy_wait(5'000'000);  // the calls never wait for the device
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 64; ++i) call(i);
  const auto t1 = std::chrono::steady_clock::now();
  CUDA_CHECK(cudaStreamSynchronize(cuda::current_stream()));
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / 64;
}

// A decode kernel's rows: one call between two events on an idle stream (its host-side work and launch counted,
// as PyTorch's numbers are timed), and 8 calls on 8 different caches back to back / 8 (the steady state of a
// decode step that runs one call per layer: the host runs ahead, so only the device time counts), and the host's
// time per call against that device time (above 1, a loop of such calls waits for the CPU).
template <typename F>
void decode_rows(const std::string& name, const std::string& shape, const std::string& key, double bytes,
                 double copy_gbs, F&& call) {
  const double ms = median_ms(call, 5, 50);
  const double ms8 = median_ms(
                         [&](int i) {
                           for (int j = 0; j < 8; ++j) call(8 * i + j);
                         },
                         2, 20) /
                     8;
  for (const auto& [label, t, suffix] : {std::tuple{name, ms, std::string("_gbs")},
                                         std::tuple{name + " (8 back to back)", ms8, std::string("_b2b_gbs")}}) {
    const double gbs = bytes / (t * 1e-3) / 1e9;
    rows.push_back({label, shape, t, gbs, "GB/s", gbs / copy_gbs, "copy bw"});
    result(key + suffix, gbs);
  }
  const double host = host_ms_per_call(call);
  rows.push_back({name + " (host per call)", shape, host, host * 1e3, "us", host / ms8, "b2b call"});
  result(key + "_host_us", host * 1e3);
}

// True when LATTE_BENCH_ROWS is unset or empty, or `name shape` contains one of its '|'-separated texts.
bool row_wanted(const std::string& name, const std::string& shape) {
  static const std::string only = [] {
    const char* v = std::getenv("LATTE_BENCH_ROWS");
    return std::string(v ? v : "");
  }();
  if (only.empty()) return true;
  const std::string row = name + " " + shape;
  for (size_t at = 0; at <= only.size();) {
    const size_t bar = std::min(only.find('|', at), only.size());
    const std::string text = only.substr(at, bar - at);
    if (!text.empty() && row.find(text) != std::string::npos) return true;
    at = bar + 1;
  }
  return false;
}

// Decode: GQA over (B, S, Hk, D) caches, or latent over (B, S, Dc) + (B, S, Dr). Each call is a decode step's: the
// rows before the newest (S - 1 of them) were written by earlier steps (ready_rows, op_decls.inc).
void bench_decode_gqa(int64_t B, int64_t Hq, int64_t Hk, int64_t D, double copy_gbs) {
  const std::string shape =
      "B" + std::to_string(B) + " S32k Hq" + std::to_string(Hq) + " Hk" + std::to_string(Hk) + " D" + std::to_string(D);
  if (!row_wanted("latte decode gqa", shape)) return;
  const int64_t S = 32768;
  const Device dev = Device::cuda();
  const double cache_bytes = 2.0 * B * S * Hk * D * 2;
  const int n = std::max(2, int(std::ceil(200e6 / cache_bytes)));  // rotate past the 50 MB L2
  std::vector<Tensor> ks, vs;
  for (int i = 0; i < n; ++i) {
    ks.push_back(Tensor::randn({B, S, Hk, D}, 100 + i, 0, 1.0, DType::BF16, dev));
    vs.push_back(Tensor::randn({B, S, Hk, D}, 200 + i, 0, 1.0, DType::BF16, dev));
  }
  Tensor q = Tensor::randn({B, Hq, D}, 7, 0, 1.0, DType::BF16, dev), out = Tensor::empty({B, Hq, D}, DType::BF16, dev);
  // Result key: decode_gqa_B<B>, with _Hq<Hq>_Hk<Hk>_D<D> for the rows other than (32, 8, 128).
  const std::string dims = Hq == 32 && Hk == 8 && D == 128
                               ? ""
                               : "_Hq" + std::to_string(Hq) + "_Hk" + std::to_string(Hk) + "_D" + std::to_string(D);
  decode_rows("latte decode gqa", shape, "decode_gqa_B" + std::to_string(B) + dims, cache_bytes + 2.0 * B * Hq * D * 2,
              copy_gbs, [&](int i) { cuda::decode_attention(out, Tensor(), q, ks[i % n], vs[i % n], 0.088, S - 1); });
}

void bench_decode_latent(int64_t B, int64_t H, int64_t Dc, int64_t Dr, double copy_gbs) {
  const std::string shape = "B" + std::to_string(B) + " S32k H" + std::to_string(H) + " Dc" + std::to_string(Dc) +
                            " Dr" + std::to_string(Dr);
  if (!row_wanted("latte decode latent", shape)) return;
  const int64_t S = 32768;
  const Device dev = Device::cuda();
  const double cache_bytes = double(B) * S * (Dc + Dr) * 2;
  const int n = std::max(2, int(std::ceil(200e6 / cache_bytes)));
  std::vector<Tensor> cs, krs;
  for (int i = 0; i < n; ++i) {
    cs.push_back(Tensor::randn({B, S, Dc}, 300 + i, 0, 1.0, DType::BF16, dev));
    krs.push_back(Tensor::randn({B, S, Dr}, 400 + i, 0, 1.0, DType::BF16, dev));
  }
  Tensor qa = Tensor::randn({B, H, Dc}, 8, 0, 1.0, DType::BF16, dev), qr = Tensor::randn({B, H, Dr}, 9, 0, 1.0, DType::BF16, dev);
  Tensor z = Tensor::empty({B, H, Dc}, DType::BF16, dev);
  // Result key: decode_latent_B<B>_H<H>, with _Dc<Dc>_Dr<Dr> for the rows other than DeepSeek's (512, 64).
  const std::string dims = Dc == 512 && Dr == 64 ? "" : "_Dc" + std::to_string(Dc) + "_Dr" + std::to_string(Dr);
  decode_rows("latte decode latent", shape, "decode_latent_B" + std::to_string(B) + "_H" + std::to_string(H) + dims,
              cache_bytes + double(B) * H * (2 * Dc + Dr) * 2, copy_gbs,
              [&](int i) { cuda::decode_attention_latent(z, Tensor(), qa, qr, cs[i % n], krs[i % n], 0.072, S - 1); });
}

// The read floor of a decode call: a kernel that only reads `bytes` of cache (float4 loads, a grid of 4 blocks
// per SM striding over it, one sum per block) under the decode rows' timing, on the same rotation of buffers past
// the L2. Its ratio to the copy bandwidth is what any decode kernel of that size can reach, launch and ramp
// included: the attainable ceiling next to the decode rows. `per_sm` x `threads`: 4 x 512 (many loads in flight),
// or 1 x 256, the occupancy of the latent decode kernel (one 8-warp block per SM), loads in registers only.
__global__ void read_sum_kernel(const float4* p, int64_t n, float* out) {
  float acc = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 v = p[i];
    acc += v.x + v.y + v.z + v.w;
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0 && acc == 12345.f) out[blockIdx.x] = acc;  // keeps the loads; never true for noise
}

void bench_read_floor(const std::string& what, double bytes, double copy_gbs, int per_sm = 4, int threads = 512) {
  char shape[64];
  std::snprintf(shape, sizeof shape, "%.1f MB, %d x %d per SM", bytes / 1e6, per_sm, threads);
  if (!row_wanted("read floor (" + what + ")", shape)) return;
  const Device dev = Device::cuda();
  const int64_t n4 = int64_t(bytes / 16);
  const int n = std::max(2, int(std::ceil(200e6 / bytes)));
  std::vector<Tensor> bufs;
  for (int i = 0; i < n; ++i) bufs.push_back(Tensor::randn({n4 * 4}, 500 + i, 0, 1.0, DType::F32, dev));
  Tensor sink = Tensor::empty({4096}, DType::F32, dev);
  const int blocks = per_sm * cuda::device_properties().multiProcessorCount;
  const std::string tag = what + (per_sm == 4 ? "" : "_" + std::to_string(per_sm) + "x" + std::to_string(threads));
  decode_rows("read floor (" + what + ")", shape, "read_floor_" + tag, double(n4) * 16, copy_gbs, [&](int i) {
    read_sum_kernel<<<blocks, threads, 0, cuda::current_stream()>>>(
        static_cast<const float4*>(bufs[i % n].data_ptr()), n4, sink.data<float>());
  });
}

}  // namespace

// `bench_attention --profile NAME` runs one kernel a few times for a profiler (scripts/attention_check.sh --ncu):
// NAME = latent (decode, B=4, H=16, Dc=512, Dr=64, 32k), latent128 (the same with 128 heads: the wgmma kernel),
// gqa (decode, B=4, Hq=32, Hk=8, D=128, 32k), each with a suffix _b1 for B=1; bwd (flash backward, B=4, T=4096,
// 16 heads, (192,128)), bwd128 / bwd64 (the same at (128,128) / (64,64)), fwd (flash forward, (192,128)),
// bwd_t2048 (the backward at the 1.3B training shape, T=2048, (192,128)), bwd_125m (at the 125M-350M MLA / EG-MLA
// shape: B=16, T=1024, 12 heads, (96,64)), cudnn_bwd64 / cudnn_bwd_t2048 / cudnn_bwd_125m (latte's cuDNN forward and
// backward at (64,64) / at T=2048 (192,128) / at the 125M shape, to set its kernels beside latte's own or PyTorch's
// cuDNN call under a profiler).
int profile(const std::string& what) {
  const Device dev = Device::cuda();
  const bool b1 = what.size() > 3 && what.substr(what.size() - 3) == "_b1";
  const std::string kind = b1 ? what.substr(0, what.size() - 3) : what;
  if (kind == "latent" || kind == "latent128" || kind == "gqa") {
    const bool lat = kind != "gqa";
    const int64_t B = b1 ? 1 : 4, S = 32768, H = kind == "latent128" ? 128 : lat ? 16 : 32, Hk = 8;
    const int64_t Dc = lat ? 512 : 128, Dr = 64;
    Tensor q = Tensor::randn({B, H, Dc}, 1, 0, 1.0, DType::BF16, dev), qr = Tensor::randn({B, H, Dr}, 2, 0, 1.0, DType::BF16, dev);
    Tensor c = lat ? Tensor::randn({B, S, Dc}, 3, 0, 1.0, DType::BF16, dev) : Tensor::randn({B, S, Hk, Dc}, 3, 0, 1.0, DType::BF16, dev);
    Tensor kr = lat ? Tensor::randn({B, S, Dr}, 4, 0, 1.0, DType::BF16, dev) : Tensor::randn({B, S, Hk, Dc}, 4, 0, 1.0, DType::BF16, dev);
    Tensor z = Tensor::empty({B, H, Dc}, DType::BF16, dev);
    for (int i = 0; i < 5; ++i) {
      if (lat)
        cuda::decode_attention_latent(z, Tensor(), q, qr, c, kr, 0.07, S - 1);
      else
        cuda::decode_attention(z, Tensor(), q, c, kr, 0.07, S - 1);
    }
  } else if (what == "cudnn_bwd64" || what == "cudnn_bwd_t2048" || what == "cudnn_bwd_125m") {
    const bool t2048 = what == "cudnn_bwd_t2048";
    FlashTensors ft = t2048                        ? flash_tensors(4, 2048, 16, 192, 128)
                      : what == "cudnn_bwd_125m" ? flash_tensors(16, 1024, 12, 96, 64)
                                                 : flash_tensors(4, 4096, 16, 64, 64);
    auto& [q, k, v, dout, out, lse, dq, dk, dvv] = ft;
    const double scale = t2048 ? 0.072 : 0.125;
    for (int i = 0; i < 3; ++i) {
      cuda::cudnn_attention_forward(out, lse, q, k, v, 1, scale, true);
      cuda::cudnn_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true);
    }
  } else {
    const int64_t dqk = what == "bwd128" ? 128 : what == "bwd64" ? 64 : 192, dv = what == "bwd64" ? 64 : 128;
    FlashTensors ft = what == "bwd_125m" ? flash_tensors(16, 1024, 12, 96, 64)
                                         : flash_tensors(4, what == "bwd_t2048" ? 2048 : 4096, 16, dqk, dv);
    auto& [q, k, v, dout, out, lse, dq, dk, dvv] = ft;
    for (int i = 0; i < 3; ++i) {
      cuda::flash_attention_forward(out, lse, q, k, v, 1, 0.072, true);
      if (what != "fwd") cuda::flash_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, 0.072, true, false);
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  return 0;
}

// A shape of the `--forward` / `--backward` modes: B=4, 16 heads (MHA), causal, T and the head dims.
struct FlashShape {
  int64_t T, dqk, dv;
  int64_t B = 4, H = 16;
  std::string str() const {
    return "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(H) + " (" + std::to_string(dqk) +
           "," + std::to_string(dv) + ")";
  }
  double fwd_flops() const { return 2.0 * B * H * double(T) * T * double(dqk + dv) / 2.0; }
};

// Runs body(shape, tensors, softmax scale) for each shape whose "mode shape" text LATTE_BENCH_ROWS keeps, with the
// `auto` backend.
template <typename F>
void for_each_flash_shape(const char* mode, std::initializer_list<FlashShape> shapes, F&& body) {
  set_attention_backend(AttentionBackend::Auto);
  for (const FlashShape& s : shapes) {
    if (!row_wanted(mode, s.str())) continue;
    FlashTensors ft = flash_tensors(s.B, s.T, s.H, s.dqk, s.dv);
    body(s, ft, 1.0 / std::sqrt(double(s.dqk)));
  }
}

// `bench_attention --forward`: the wgmma forward as it runs by default (persistent: a block per SM taking query tiles
// from a counter; warpgroup ping-pong), with one block per query tile, without ping-pong, and cuDNN, interleaved in
// one process, at the training shape's three head-dim pairs, at T = 2048 and 8192 for (128,128) (tiles of half
// and twice as many keys), at T = 2048 for EG-MLA 125M-350M's (96,64) (the 128 kernel, zero-padded) and at T = 1024
// for (64,64) (192-row items: the last one's rows past T are two whole consumers; skipping their products, v104,
// did not shorten the call), and at the 125M-350M MLA / EG-MLA models' training shape (B=16, T=1024, 12 heads,
// (96,64)). LATTE_BENCH_ROWS selects shapes ("fwd B4 T4096 H16 (64,64)").
int forward_only() {
  for_each_flash_shape("fwd", {{4096, 64, 64}, {4096, 128, 128}, {4096, 192, 128}, {2048, 128, 128}, {8192, 128, 128},
                              {2048, 96, 64}, {1024, 64, 64}, {1024, 96, 64, 16, 12}},
                       [](const FlashShape& s, FlashTensors& ft, double scale) {
    auto& [q, k, v, dout, out, lse, dq, dk, dvv] = ft;
    const std::string shape = s.str();
    const double flops = s.fwd_flops();
    auto wgmma = [&](bool persistent, bool pingpong) {
      return [&, persistent, pingpong] {
        cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kWgmma);
        cuda::flash_attention_set_sm90_persistent(persistent);
        cuda::flash_attention_set_sm90_pingpong(pingpong);
        cuda::flash_attention_forward(out, lse, q, k, v, 1, scale, true);
        cuda::flash_attention_set_sm90_pingpong(true);
        cuda::flash_attention_set_sm90_persistent(true);
        cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kAuto);
      };
    };
    std::vector<Timed> impls{{"wgmma", "", wgmma(true, true)},
                             {"wgmma per tile", "", wgmma(false, true)},
                             {"wgmma no ping-pong", "", wgmma(true, false)}};
    if (cuda::cudnn_attention_forward_unsupported(q, k, v, out, lse, 1, true).empty())
      impls.push_back({"cudnn fwd", "", [&] { cuda::cudnn_attention_forward(out, lse, q, k, v, 1, scale, true); }});
    const std::vector<double> ms = interleaved_median_ms(impls);
    for (size_t i = 0; i < impls.size(); ++i) {
      std::printf("%-18s %s causal: %.3f ms %.1f TFLOP/s\n", impls[i].name.c_str(), shape.c_str(), ms[i],
                  flops / (ms[i] * 1e-3) / 1e12);
      const std::string key = "fwd_" + std::to_string(s.T) + "_" + std::to_string(s.dqk) + "_" + std::to_string(s.dv);
      const char* suffix[] = {"", "_per_tile", "_no_pingpong", "_cudnn"};
      result(key + suffix[i], flops / (ms[i] * 1e-3) / 1e12);
    }
  });
  return 0;
}

// `bench_attention --backward`: latte's flash backward (default kernel, atomic dQ; and deterministic), latte's cuDNN
// backward and the `auto` op at the benchmark shapes, at the 1.3B training shape (B=4, T=2048, 16 heads), at T=2048
// for (128,128) and EG-MLA 125M-350M's (96,64), and at those models' training shape (B=16, T=1024, 12 heads), one
// line each, as one call between events after an untimed forward and as 4 calls back to back, all interleaved; for
// kernel iterations.
int backward_only() {
  for_each_flash_shape("bwd", {{4096, 64, 64}, {4096, 128, 128}, {4096, 192, 128}, {2048, 192, 128}, {2048, 128, 128},
                              {2048, 96, 64}, {1024, 96, 64, 16, 12}},
                       [](const FlashShape& s, FlashTensors& ft, double scale) {
    auto& [q, k, v, dout, out, lse, dq, dk, dvv] = ft;
    const std::string shape = s.str();
    const double flops = 2.5 * s.fwd_flops();
    cuda::flash_attention_forward(out, lse, q, k, v, 1, scale, true);
    auto forward = [&] { cuda::flash_attention_forward(out, lse, q, k, v, 1, scale, true); };
    auto flash = [&] { cuda::flash_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true, false); };
    auto cudnn = [&] { cuda::cudnn_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true); };
    auto dispatched = [&] { cuda::attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true); };
    auto deterministic = [&] {
      cuda::flash_attention_backward(dq, dk, dvv, dout, q, k, v, out, lse, 1, scale, true, true);
    };
    std::vector<Timed> one{{"flash bwd", "", flash, forward}, {"det bwd", "", deterministic, forward}};
    if (cuda::cudnn_attention_backward_unsupported(dq, dk, dvv, dout, q, k, v, out, lse, 1, true).empty())
      one.push_back({"cudnn bwd", "", cudnn, forward});
    one.push_back({"auto bwd", "", dispatched, forward});
    std::vector<Timed> four;
    for (const Timed& t : one) four.push_back({t.name, "", [&t] { for (int j = 0; j < 4; ++j) t.call(); }, {}});
    const std::vector<double> ms = interleaved_median_ms(one), ms4 = interleaved_median_ms(four, 6, 3);
    for (size_t i = 0; i < one.size(); ++i)
      std::printf("%-11s %s causal: %.3f ms %.1f TFLOP/s, back to back %.3f ms %.1f TFLOP/s\n", one[i].name.c_str(),
                  shape.c_str(), ms[i], flops / (ms[i] * 1e-3) / 1e12, ms4[i] / 4, flops / (ms4[i] / 4 * 1e-3) / 1e12);
  });
  return 0;
}

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::printf("bench_attention: no CUDA device\n");
    return 0;
  }
  if (argc == 3 && std::string(argv[1]) == "--profile") return profile(argv[2]);
  if (argc == 2 && std::string(argv[1]) == "--backward") return backward_only();
  if (argc == 2 && std::string(argv[1]) == "--forward") return forward_only();
  const cudaDeviceProp& prop = cuda::device_properties();
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  const double copy = copy_bandwidth_gbs();
  const bool decode_only = argc == 2 && std::string(argv[1]) == "--decode";  // the decode rows alone
  if (argc == 2 && std::string(argv[1]) == "--decode-models") {
    // The decode shapes of latte's own model configs (configs/models): MLA / MLRA 125M-350M (d_c 256, d_r 64),
    // EG-MLA 1.3B (192, 64) and 125M-350M (96, 32), GQA 350M (Hq 16, Hk 4, D 64) and 1.3B (D 128).
    for (int64_t B : {1, 4}) {
      bench_decode_latent(B, 16, 256, 64, copy);
      bench_decode_latent(B, 16, 192, 64, copy);
      bench_decode_latent(B, 16, 96, 32, copy);
      bench_decode_gqa(B, 16, 4, 64, copy);
      bench_decode_gqa(B, 16, 4, 128, copy);
    }
    // What one call over each of those caches can reach (the smaller ones are far from the copy bandwidth in one
    // call: launch and ramp): Dc 96 + Dr 32 at B=1 and B=4, Dc 192 + 64 and 256 + 64 at B=1.
    for (const auto& [what, row] : {std::pair<const char*, double>{"Dc96_Dr32_B1", 128}, {"Dc96_Dr32_B4", 4 * 128},
                                    {"Dc192_Dr64_B1", 256}, {"Dc256_Dr64_B1", 320}})
      bench_read_floor(what, 32768.0 * row * 2, copy);
  } else {
    if (!decode_only)
      for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {192, 128}}) bench_flash(dqk, dv);
    bench_decode_gqa(1, 32, 8, 128, copy);
    bench_decode_gqa(4, 32, 8, 128, copy);
    bench_decode_latent(1, 16, 512, 64, copy);
    bench_decode_latent(4, 16, 512, 64, copy);
    bench_decode_latent(1, 24, 512, 64, copy);
    bench_decode_latent(1, 32, 512, 64, copy);
    bench_decode_latent(1, 64, 512, 64, copy);
    bench_decode_latent(1, 128, 512, 64, copy);
    bench_decode_latent(4, 128, 512, 64, copy);
    bench_read_floor("latent_B1", 32768.0 * 576 * 2, copy);
    bench_read_floor("gqa_B1", 2.0 * 32768 * 8 * 128 * 2, copy);
    bench_read_floor("latent_B4", 4.0 * 32768 * 576 * 2, copy);
    bench_read_floor("latent_B1", 32768.0 * 576 * 2, copy, 1, 256);
    bench_read_floor("latent_B4", 4.0 * 32768 * 576 * 2, copy, 1, 256);
  }
  std::printf("\n%-44s %-36s %10s %12s %-8s %8s %s\n", "kernel", "shape", "ms", "rate", "unit", "ratio", "of");
  for (const Row& r : rows)
    std::printf("%-44s %-36s %10.4f %12.1f %-8s %8.3f %s\n", r.name.c_str(), r.shape.c_str(), r.ms, r.rate,
                r.unit.c_str(), r.ratio, r.ratio_of.c_str());
  return 0;
}
