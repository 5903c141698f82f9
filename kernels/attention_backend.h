// Which attention implementation the CUDA attention op uses (train.attention_backend in a config):
//   auto      the fused flash kernels (kernels/cuda/flash_attention*.cu) where they support the shape and
//             dtype (bf16, d_qk in {64, 96, 128, 192}, d_v in {64, 128}), else the batched-cuBLAS path
//   latte     the flash kernels; an unsupported shape is an error naming it
//   cudnn     cuDNN SDPA (not available yet in this build: an error says so)
//   reference the batched-cuBLAS path (scores materialised per head chunk), the correctness baseline
// The environment variable LATTE_ATTENTION_BACKEND overrides the setting; LATTE_DETERMINISTIC=1 makes
// the flash backward bitwise reproducible (a separate dQ pass instead of fp32 atomics).
#pragma once
#include <string>

namespace latte {

enum class AttentionBackend { Auto, Latte, Cudnn, Reference };

AttentionBackend attention_backend();                       // the current choice (env override applied)
void set_attention_backend(AttentionBackend backend);
AttentionBackend parse_attention_backend(const std::string& name, const std::string& where);
bool deterministic_attention();                             // LATTE_DETERMINISTIC=1

}  // namespace latte
