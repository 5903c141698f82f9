// attention_backend auto: the first time a call of some shape has more than one implementation that
// supports it (latte's flash kernels, cuDNN SDPA), each is timed on the real tensors and the fastest is
// used for that shape from then on ("fastest measured"). The choice is logged once per shape.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace latte::cuda {

struct AttentionCandidate {
  const char* name;
  std::function<void()> run;  // one full call on the current stream (writes the real outputs)
};

// Index of the candidate to use for `key`. On the first call for a key with several candidates each runs once
// to warm up and then 3 times under CUDA events; the caller runs the winner afterwards for the real result.
size_t attention_autotune(const std::string& key, const std::vector<AttentionCandidate>& candidates);

}  // namespace latte::cuda
