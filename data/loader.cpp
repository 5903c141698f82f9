// DataLoader: window index over shards, epoch permutation, DP split, prefetch ring (see loader.h).
#include "data/loader.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "data/files.h"

namespace latte::data {

BufferAllocator BufferAllocator::host_default() {
  return {[](size_t count) { return new int32_t[count]; }, [](int32_t* ptr, size_t) { delete[] ptr; }};
}

void to_json(nlohmann::json& j, const LoaderState& state) {
  j = nlohmann::json{{"epoch", state.epoch}, {"cursor", state.cursor}, {"seed", state.seed}, {"windows", state.windows}};
}

void from_json(const nlohmann::json& j, LoaderState& state) {
  LATTE_REQUIRE(j.is_object(), "data loader state: expected a JSON object with epoch, cursor, seed, got ", j.dump());
  auto field = [&](const char* key, bool required) -> uint64_t {
    if (!j.contains(key)) {
      LATTE_REQUIRE(!required, "data loader state: missing key '", key, "' in ", j.dump());
      return 0;
    }
    LATTE_REQUIRE(j[key].is_number_unsigned() || (j[key].is_number_integer() && j[key].get<int64_t>() >= 0),
                  "data loader state: '", key, "' must be a non-negative integer, got ", j[key].dump());
    return j[key].get<uint64_t>();
  };
  state.epoch = field("epoch", true);
  state.cursor = field("cursor", true);
  state.seed = field("seed", true);
  state.windows = field("windows", false);
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<uint32_t> epoch_permutation(uint64_t window_count, uint64_t seed, uint64_t epoch) {
  LATTE_CHECK(window_count <= UINT32_MAX, "window count ", window_count, " exceeds the 32-bit order");
  std::vector<uint32_t> order(window_count);
  for (uint64_t i = 0; i < window_count; ++i) order[i] = static_cast<uint32_t>(i);
  // One stream per (seed, epoch): mix the epoch in through splitmix64 so nearby seeds/epochs differ.
  uint64_t mix = seed;
  uint64_t state = splitmix64(mix) ^ (epoch * 0xd1b54a32d192ed03ull);
  splitmix64(state);
  // Fisher-Yates with unbiased bounded draws (rejection sampling): the same order everywhere,
  // unlike std::shuffle whose algorithm is implementation-defined.
  for (uint64_t i = window_count; i > 1; --i) {
    const uint64_t bound = i;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t draw;
    do draw = splitmix64(state);
    while (draw >= limit);
    std::swap(order[i - 1], order[draw % bound]);
  }
  return order;
}

std::unique_ptr<DataLoader> make_validation_loader(LoaderConfig config) {
  config.shuffle = false;
  config.single_pass = true;
  return std::make_unique<DataLoader>(std::move(config));
}

DataLoader::DataLoader(LoaderConfig config) : DataLoader(config, LoaderState{0, 0, config.seed, 0}) {}

DataLoader::DataLoader(LoaderConfig config, const LoaderState& state) : config_(std::move(config)) {
  LATTE_REQUIRE(config_.seq_len > 0, "data loader: seq_len must be positive, got ", config_.seq_len);
  LATTE_REQUIRE(config_.batch_size > 0, "data loader: batch_size must be positive, got ", config_.batch_size);
  LATTE_REQUIRE(config_.dp_size > 0 && config_.dp_rank >= 0 && config_.dp_rank < config_.dp_size,
                "data loader: dp_rank ", config_.dp_rank, " is not in [0, dp_size = ", config_.dp_size, ")");
  LATTE_REQUIRE(config_.prefetch_depth >= 1, "data loader: prefetch_depth must be >= 1, got ", config_.prefetch_depth);
  LATTE_REQUIRE(config_.allocator.allocate && config_.allocator.release, "data loader: allocator needs allocate and release");

  shard_paths_ = expand_globs(config_.shard_patterns, "token shards");
  const uint64_t T = static_cast<uint64_t>(config_.seq_len);
  window_offsets_.push_back(0);
  for (const auto& path : shard_paths_) {
    auto shard = ShardReader::open(path);
    const ShardMetadata& meta = shard->metadata();
    if (config_.vocab_size > 0 && meta.vocab_size > config_.vocab_size)
      LATTE_FAIL(path, ": shard was tokenized with a vocabulary of ", meta.vocab_size, " (", meta.tokenizer,
                 ") but the model's vocab_size is ", config_.vocab_size);
    const uint64_t n = shard->size();
    const uint64_t windows = n >= T + 1 ? (n - 1) / T : 0;
    if (windows == 0) log::warn(path, ": ", n, " tokens, too few for one window of seq_len + 1 = ", T + 1, "; skipped");
    tokens_ += n;
    windows_ += windows;
    window_offsets_.push_back(windows_);
    shards_.push_back(std::move(shard));
  }
  LATTE_REQUIRE(windows_ <= UINT32_MAX, "data loader: ", windows_, " windows exceed the 2^32 the shuffle supports; ",
                "use a longer seq_len");
  const uint64_t per_batch = static_cast<uint64_t>(config_.batch_size) * config_.dp_size;
  batches_per_epoch_ = windows_ / per_batch;
  LATTE_REQUIRE(batches_per_epoch_ > 0, "data loader: the shards (", shard_paths_.size(), " files matching ",
                config_.shard_patterns.front(), (config_.shard_patterns.size() > 1 ? " ..." : ""), ") hold ", tokens_,
                " tokens = ", windows_, " windows of seq_len + 1 = ", T + 1, ", fewer than one step needs (batch_size ",
                config_.batch_size, " x dp_size ", config_.dp_size, " = ", per_batch, ")");

  slots_.resize(static_cast<size_t>(config_.prefetch_depth) + 1);
  const size_t buffer = static_cast<size_t>(config_.batch_size * config_.seq_len);
  for (auto& slot : slots_) {
    slot.inputs = config_.allocator.allocate(buffer);
    slot.targets = config_.allocator.allocate(buffer);
    LATTE_REQUIRE(slot.inputs && slot.targets, "data loader: the buffer allocator returned null for ", buffer, " tokens");
  }
  LoaderState initial = state;
  if (initial.windows == 0) initial.windows = windows_;
  restore(initial);
}

DataLoader::~DataLoader() {
  stop();
  const size_t buffer = static_cast<size_t>(config_.batch_size * config_.seq_len);
  for (auto& slot : slots_) {
    if (slot.inputs) config_.allocator.release(slot.inputs, buffer);
    if (slot.targets) config_.allocator.release(slot.targets, buffer);
  }
}

DataLoader::WindowLocation DataLoader::locate(uint64_t window) const {
  LATTE_CHECK(window < windows_, "window ", window, " of ", windows_);
  // The last shard whose first window is <= window (shards with no windows have equal offsets).
  const auto it = std::upper_bound(window_offsets_.begin(), window_offsets_.end(), window) - 1;
  const auto shard = static_cast<uint32_t>(it - window_offsets_.begin());
  return {shard, (window - *it) * static_cast<uint64_t>(config_.seq_len)};
}

LoaderState DataLoader::advance(LoaderState position) const {
  const uint64_t per_batch = static_cast<uint64_t>(config_.batch_size) * config_.dp_size;
  position.cursor += per_batch;
  if (position.cursor + per_batch > windows_) {
    position.cursor = 0;
    ++position.epoch;
  }
  return position;
}

const std::vector<uint32_t>& DataLoader::order_for(uint64_t epoch, uint64_t seed) {
  if (order_epoch_ != epoch || order_seed_ != seed) {
    order_ = epoch_permutation(windows_, seed, epoch);
    order_epoch_ = epoch;
    order_seed_ = seed;
  }
  return order_;
}

std::vector<uint64_t> DataLoader::batch_windows(uint64_t epoch, uint64_t cursor) const {
  const std::vector<uint32_t> order = config_.shuffle ? epoch_permutation(windows_, config_.seed, epoch) : std::vector<uint32_t>{};
  std::vector<uint64_t> windows;
  for (int64_t row = 0; row < config_.batch_size; ++row) {
    const uint64_t k = cursor + static_cast<uint64_t>(row) * config_.dp_size + config_.dp_rank;
    windows.push_back(config_.shuffle ? order.at(k) : k);
  }
  return windows;
}

void DataLoader::fill(Slot& slot, const LoaderState& position, std::vector<int32_t>& scratch) {
  const int64_t T = config_.seq_len;
  const std::vector<uint32_t>* order = config_.shuffle ? &order_for(position.epoch, position.seed) : nullptr;
  scratch.resize(static_cast<size_t>(T) + 1);
  for (int64_t row = 0; row < config_.batch_size; ++row) {
    // Window k of the epoch order belongs to rank k % dp_size.
    const uint64_t k = position.cursor + static_cast<uint64_t>(row) * config_.dp_size + config_.dp_rank;
    const uint64_t window = order ? (*order)[k] : k;
    const WindowLocation where = locate(window);
    const ShardReader& shard = *shards_[where.shard];
    shard.read(where.start, static_cast<uint64_t>(T) + 1, scratch.data());
    if (config_.vocab_size > 0) {
      for (int64_t t = 0; t <= T; ++t)
        if (scratch[t] < 0 || scratch[t] >= config_.vocab_size)
          LATTE_FAIL(shard.path(), ": token ", scratch[t], " at position ", where.start + t,
                     " is outside the model's vocabulary [0, ", config_.vocab_size,
                     "); was the shard made with another tokenizer?");
    }
    std::memcpy(slot.inputs + row * T, scratch.data(), sizeof(int32_t) * T);
    std::memcpy(slot.targets + row * T, scratch.data() + 1, sizeof(int32_t) * T);
  }
  slot.batch = Batch{slot.inputs, slot.targets, config_.batch_size, T, position.epoch, position.cursor};
}

void DataLoader::producer_loop(LoaderState position) {
  std::vector<int32_t> scratch;
  try {
    for (uint64_t index = 0;; ++index) {
      {
        // Slot index % R may be refilled once the consumer has moved past it: the consumer holds
        // slot (consumed - 1) % R until its next call, so stay below consumed + prefetch_depth.
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || index < consumed_ + config_.prefetch_depth; });
        if (stopping_) return;
      }
      Slot& slot = slots_[index % slots_.size()];
      if (config_.single_pass && position.epoch > start_epoch_) {
        slot.end = true;
      } else {
        slot.end = false;
        fill(slot, position, scratch);
        position = advance(position);
        slot.after = position;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++produced_;
      }
      cv_.notify_all();
      if (slot.end) return;
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

const Batch* DataLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return produced_ > consumed_ || error_; });
  if (produced_ <= consumed_) std::rethrow_exception(error_);
  Slot& slot = slots_[consumed_ % slots_.size()];
  if (slot.end) return nullptr;  // stays at the end; reset() starts another pass
  ++consumed_;
  position_ = slot.after;
  lock.unlock();
  cv_.notify_all();
  return &slot.batch;
}

LoaderState DataLoader::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return position_;
}

void DataLoader::restore(const LoaderState& state) {
  LATTE_REQUIRE(state.windows == 0 || state.windows == windows_, "data loader: the saved state is for a corpus of ",
                state.windows, " windows but the shards now give ", windows_,
                " (different shards or seq_len?); resume with the data the run started with");
  LATTE_REQUIRE(state.cursor < windows_, "data loader: saved cursor ", state.cursor, " is past the ", windows_,
                " windows of an epoch; the state is corrupt");
  stop();
  LoaderState position = state;
  position.windows = windows_;
  const uint64_t per_batch = static_cast<uint64_t>(config_.batch_size) * config_.dp_size;
  if (position.cursor + per_batch > windows_) position = LoaderState{position.epoch + 1, 0, position.seed, windows_};
  start(position);
}

void DataLoader::start(const LoaderState& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  stopping_ = false;
  error_ = nullptr;
  produced_ = consumed_ = 0;
  position_ = state;
  start_epoch_ = state.epoch;
  producer_ = std::thread([this, state] { producer_loop(state); });
}

void DataLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
}

}  // namespace latte::data
