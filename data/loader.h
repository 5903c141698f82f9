// The training/validation data loader: fixed-length windows from token shards, split across
// data-parallel ranks, shuffled per epoch, prefetched on a background thread, resumable exactly.
//
// Windows: the shards (in glob order) are cut into windows of T+1 tokens at stride T (inputs are
// tokens [0, T), targets [1, T+1)); a window never crosses a shard boundary, and a shard's tail
// shorter than T+1 is unused. Training epochs visit every window once in an order shuffled from
// (seed, epoch) with splitmix64 + Fisher-Yates, so it is identical on every machine and compiler.
// Data parallelism: window k of the epoch order goes to DP rank k % D, and every rank makes
// floor(W / (B*D)) batches per epoch (the last W mod (B*D) windows of the order are skipped), so
// ranks stay in lock-step. Tensor-parallel ranks of one DP group pass the same dp_rank and get the
// same batches. The loader knows nothing about tensors: a batch is two (B, T) int32 buffers whose
// memory comes from a pluggable allocator (e.g. pinned host memory for async H2D copies).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "data/shard.h"

namespace latte::data {

// Where batch buffers live. allocate(count) returns storage for `count` int32; release(ptr, count)
// frees it. Defaults to new[]/delete[].
struct BufferAllocator {
  std::function<int32_t*(size_t count)> allocate;
  std::function<void(int32_t* ptr, size_t count)> release;
  static BufferAllocator host_default();
};

struct LoaderConfig {
  std::vector<std::string> shard_patterns;  // globs/paths of .bin/.h5 shards, expanded in order
  int64_t seq_len = 0;                      // T: tokens per sequence
  int64_t batch_size = 0;                   // B: sequences per micro-batch on this rank
  int dp_rank = 0;                          // this rank's index among data-parallel replicas
  int dp_size = 1;                          // D: number of data-parallel replicas
  uint64_t seed = 0;                        // shuffle seed (training only)
  bool shuffle = true;                      // false: windows in corpus order (validation)
  bool single_pass = false;                 // true: stop after one epoch (validation)
  int prefetch_depth = 2;                   // batches prepared ahead by the background thread
  int32_t vocab_size = 0;                   // > 0: tokens >= vocab_size are a latte::Error
  BufferAllocator allocator = BufferAllocator::host_default();
};

// Position of a loader: the next batch takes epoch `epoch`'s window order (shuffled with `seed`)
// from position `cursor`, counted over all ranks (batches done this epoch * B * D). `windows` is the
// corpus's window count when saved: restoring on different data is refused instead of silently
// reading other windows (0 = unchecked).
struct LoaderState {
  uint64_t epoch = 0;
  uint64_t cursor = 0;
  uint64_t seed = 0;
  uint64_t windows = 0;
  bool operator==(const LoaderState&) const = default;
};
void to_json(nlohmann::json& j, const LoaderState& state);
void from_json(const nlohmann::json& j, LoaderState& state);

// One micro-batch. The buffers stay valid until the next call to next() on the same loader.
struct Batch {
  const int32_t* inputs = nullptr;   // (B, T) row-major
  const int32_t* targets = nullptr;  // (B, T) row-major, inputs shifted left by one token
  int64_t batch_size = 0;            // B
  int64_t seq_len = 0;               // T
  uint64_t epoch = 0;
  uint64_t cursor = 0;               // position of this batch's first window in the epoch order
};

// Deterministic PRNG (splitmix64) and the epoch permutation, exposed for tests.
uint64_t splitmix64(uint64_t& state);
std::vector<uint32_t> epoch_permutation(uint64_t window_count, uint64_t seed, uint64_t epoch);

class DataLoader;
// The validation loader: config with shuffle = false and single_pass = true (corpus order, one pass,
// same DP split and lock-step batch count).
std::unique_ptr<DataLoader> make_validation_loader(LoaderConfig config);

class DataLoader {
 public:
  // Opens and validates every shard (a bad shard or an empty glob is a latte::Error naming it),
  // builds the window index and starts the prefetch thread at `state` (default: epoch 0, cursor 0).
  explicit DataLoader(LoaderConfig config);
  DataLoader(LoaderConfig config, const LoaderState& state);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch, or nullptr after the single pass of a single_pass loader. Errors from the
  // prefetch thread (I/O, out-of-vocabulary tokens) are rethrown here.
  const Batch* next();

  // Position after the batches returned so far; restore() with it continues exactly there.
  LoaderState state() const;
  void restore(const LoaderState& state);
  void reset() { restore(LoaderState{0, 0, config_.seed, windows_}); }

  uint64_t num_windows() const { return windows_; }
  uint64_t num_tokens() const { return tokens_; }
  uint64_t batches_per_epoch() const { return batches_per_epoch_; }
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }

  // Where window w (in corpus order) lives: shard index and first token.
  struct WindowLocation {
    uint32_t shard;
    uint64_t start;
  };
  WindowLocation locate(uint64_t window) const;
  // Global window ids (corpus order) of this rank's batch at (epoch, cursor), in row order.
  // (Recomputes the epoch order: meant for tests and tools, not the training loop.)
  std::vector<uint64_t> batch_windows(uint64_t epoch, uint64_t cursor) const;

 private:
  struct Slot {
    int32_t* inputs = nullptr;
    int32_t* targets = nullptr;
    Batch batch;
    LoaderState after;  // position once this batch has been consumed
    bool end = false;   // the single pass is over; no batch in this slot
  };

  void start(const LoaderState& state);
  void stop();
  void producer_loop(LoaderState position);
  void fill(Slot& slot, const LoaderState& position, std::vector<int32_t>& scratch);
  LoaderState advance(LoaderState position) const;
  const std::vector<uint32_t>& order_for(uint64_t epoch, uint64_t seed);

  LoaderConfig config_;
  std::vector<std::string> shard_paths_;
  std::vector<std::unique_ptr<ShardReader>> shards_;
  std::vector<uint64_t> window_offsets_;  // window_offsets_[s] = first global window of shard s (size S+1)
  uint64_t windows_ = 0;
  uint64_t tokens_ = 0;
  uint64_t batches_per_epoch_ = 0;

  // Epoch order, used by the producer thread only (cached for the current epoch and seed).
  uint64_t order_epoch_ = UINT64_MAX;
  uint64_t order_seed_ = 0;
  std::vector<uint32_t> order_;

  // Ring of slots shared with the producer.
  std::vector<Slot> slots_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::thread producer_;
  bool stopping_ = false;
  std::exception_ptr error_;
  uint64_t produced_ = 0;  // slots filled since start()
  uint64_t consumed_ = 0;  // slots taken by next() since start()
  LoaderState position_;   // consumer's position: where the next batch returned will start
  uint64_t start_epoch_ = 0;  // a single-pass loader ends when the producer leaves this epoch
};

}  // namespace latte::data
