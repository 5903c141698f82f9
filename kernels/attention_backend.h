// Which attention implementation the CUDA attention op uses (train.attention_backend in a config):
//   auto      of the fused paths that support the call -- latte's flash kernels (kernels/cuda/flash_attention*.cu:
//             bf16, d_qk in {64, 96, 128, 192}, d_v in {64, 128}) and cuDNN SDPA (kernels/cuda/cudnn_attention.h:
//             bf16, head dims multiples of 8 up to 256, causal only with T == S) -- the fastest, timed once per
//             shape on the first call (kernels/cuda/attention_autotune.h); the batched-cuBLAS path when neither
//   latte     the flash kernels; an unsupported shape is an error naming it
//   cudnn     cuDNN SDPA; an unsupported shape (or a build without cuDNN) is an error saying why
//   reference the batched-cuBLAS path (scores materialised per head chunk), the correctness baseline
// The environment variable LATTE_ATTENTION_BACKEND overrides the setting; LATTE_DETERMINISTIC=1 makes
// the backward bitwise reproducible (the flash kernels' separate dQ pass instead of fp32 atomics; auto then
// leaves cuDNN's backward out, whose dQ uses atomics).
#pragma once
#include <string>

namespace latte {

enum class AttentionBackend { Auto, Latte, Cudnn, Reference };

AttentionBackend attention_backend();                       // the current choice (env override applied)
void set_attention_backend(AttentionBackend backend);
AttentionBackend parse_attention_backend(const std::string& name, const std::string& where);
bool deterministic_attention();                             // LATTE_DETERMINISTIC=1

}  // namespace latte
