// attention_backend auto: the first time a call of some shape has more than one implementation that
// supports it (latte's flash kernels, cuDNN SDPA), each is timed on the real tensors and the fastest is
// used for that shape from then on ("fastest measured"). The choice is logged once per shape.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace latte::cuda {

// Index of the candidate to use for `key` (names[i] names candidate i; run(i) makes one full call of it on the
// current stream, writing the real outputs). After the first call for a key this is a map lookup. On the first,
// each candidate runs once to warm up and then 3 times under CUDA events; the caller runs the winner afterwards
// for the real result.
size_t attention_autotune(const std::string& key, const std::vector<const char*>& names,
                          const std::function<void(size_t)>& run);

// The candidate already chosen for `key`, or -1 when none has been timed yet.
int attention_autotune_choice(const std::string& key);

}  // namespace latte::cuda
