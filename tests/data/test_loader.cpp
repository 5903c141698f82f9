// DataLoader: window geometry, DP disjointness and coverage, deterministic shuffles, exact resume,
// the validation pass, the pluggable allocator, and errors for bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <fstream>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/loader.h"
#include "data/shard.h"

using namespace latte::data;
namespace fs = std::filesystem;

namespace {

// Token value encodes (shard, position), so every window can be traced back to its source.
int32_t token_at(int shard, int64_t position) { return static_cast<int32_t>(shard * 100000 + position); }

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("latte_loader_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Shards of the given sizes, alternating .bin and .h5 unless told otherwise.
  std::string make_shards(const std::vector<int64_t>& sizes, bool mixed_formats = true) {
    for (size_t s = 0; s < sizes.size(); ++s) {
      std::vector<int32_t> tokens(sizes[s]);
      for (int64_t i = 0; i < sizes[s]; ++i) tokens[i] = token_at(static_cast<int>(s), i);
      const bool h5 = mixed_formats && s % 2 == 1;
      char name[64];
      std::snprintf(name, sizeof name, "c_train_%06zu%s", s, h5 ? ".h5" : ".bin");
      write_shard((dir_ / name).string(), tokens, h5 ? ShardFormat::H5 : ShardFormat::Bin, TokenDtype::U32,
                  ShardMetadata{1 << 24, 0, "test"});
    }
    return (dir_ / "c_train_*").string();
  }

  LoaderConfig config(const std::string& pattern, int64_t T, int64_t B, int rank = 0, int size = 1) {
    LoaderConfig c;
    c.shard_patterns = {pattern};
    c.seq_len = T;
    c.batch_size = B;
    c.dp_rank = rank;
    c.dp_size = size;
    c.seed = 1234;
    return c;
  }
  fs::path dir_;
};

// Decodes a window's first token back to its global window id, given the geometry.
struct WindowKey {
  int shard;
  int64_t start;
  bool operator<(const WindowKey& o) const { return std::tie(shard, start) < std::tie(o.shard, o.start); }
};

WindowKey key_of_row(const Batch& batch, int64_t row) {
  const int32_t first = batch.inputs[row * batch.seq_len];
  return {first / 100000, first % 100000};
}

void check_row_contents(const Batch& batch, int64_t row) {
  const WindowKey key = key_of_row(batch, row);
  for (int64_t t = 0; t < batch.seq_len; ++t) {
    ASSERT_EQ(batch.inputs[row * batch.seq_len + t], token_at(key.shard, key.start + t));
    ASSERT_EQ(batch.targets[row * batch.seq_len + t], token_at(key.shard, key.start + t + 1));
  }
}

}  // namespace

TEST_F(LoaderTest, WindowGeometry) {
  // T = 8: shard sizes 33 -> (33-1)/8 = 4 windows, 8 -> 0 (too short for T+1), 9 -> 1, 100 -> 12.
  const std::string pattern = make_shards({33, 8, 9, 100});
  DataLoader loader(config(pattern, 8, 1));
  EXPECT_EQ(loader.num_windows(), 17u);
  EXPECT_EQ(loader.num_tokens(), 150u);
  EXPECT_EQ(loader.batches_per_epoch(), 17u);
  EXPECT_EQ(loader.locate(0).shard, 0u);
  EXPECT_EQ(loader.locate(3).start, 24u);  // last window of shard 0 ends at token 32 (inclusive)
  EXPECT_EQ(loader.locate(4).shard, 2u);   // shard 1 has no windows
  EXPECT_EQ(loader.locate(5).shard, 3u);
  EXPECT_EQ(loader.locate(16).start, 88u);
}

TEST_F(LoaderTest, BatchesHoldExactWindowsWithinShards) {
  const std::string pattern = make_shards({1000, 517, 2048});
  DataLoader loader(config(pattern, 16, 4));
  for (uint64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const Batch* batch = loader.next();
    ASSERT_NE(batch, nullptr);
    EXPECT_EQ(batch->batch_size, 4);
    EXPECT_EQ(batch->seq_len, 16);
    for (int64_t row = 0; row < 4; ++row) {
      check_row_contents(*batch, row);
      const WindowKey key = key_of_row(*batch, row);
      EXPECT_EQ(key.start % 16, 0) << "windows start at multiples of T";
    }
  }
}

TEST_F(LoaderTest, RanksAreDisjointAndCoverTheEpoch) {
  const std::string pattern = make_shards({1001, 333, 4096, 77});
  const int64_t T = 16, B = 3;
  for (int D : {1, 2, 4}) {
    std::map<WindowKey, int> seen;  // window -> rank
    uint64_t windows = 0, per_epoch = 0;
    for (int r = 0; r < D; ++r) {
      DataLoader loader(config(pattern, T, B, r, D));
      windows = loader.num_windows();
      per_epoch = loader.batches_per_epoch();
      EXPECT_EQ(per_epoch, windows / (B * D)) << "lock-step batch count";
      for (uint64_t b = 0; b < per_epoch; ++b) {
        const Batch* batch = loader.next();
        ASSERT_NE(batch, nullptr);
        EXPECT_EQ(batch->epoch, 0u);
        for (int64_t row = 0; row < B; ++row) {
          check_row_contents(*batch, row);
          auto [it, inserted] = seen.emplace(key_of_row(*batch, row), r);
          EXPECT_TRUE(inserted) << "window delivered twice (D=" << D << ", ranks " << it->second << " and " << r << ")";
        }
        // The loader's own bookkeeping agrees with what it delivered.
        const auto ids = loader.batch_windows(0, batch->cursor);
        for (int64_t row = 0; row < B; ++row) {
          const auto where = loader.locate(ids[row]);
          EXPECT_EQ(static_cast<int>(where.shard), key_of_row(*batch, row).shard);
          EXPECT_EQ(static_cast<int64_t>(where.start), key_of_row(*batch, row).start);
        }
      }
      EXPECT_EQ(loader.next()->epoch, 1u) << "epoch rolls over after batches_per_epoch";
    }
    // Full coverage: every window but the W mod (B*D) left over by lock-step is delivered.
    EXPECT_EQ(seen.size(), per_epoch * B * D);
    EXPECT_EQ(windows - seen.size(), windows % (B * D)) << "D=" << D;
  }
}

TEST_F(LoaderTest, EveryWindowOnceInAShardedEpochWhenDivisible) {
  // 4 shards x 257 tokens, T = 16 -> 16 windows each = 64 windows = 4 batches of B=4 x D=4.
  const std::string pattern = make_shards({257, 257, 257, 257});
  std::set<WindowKey> seen;
  for (int r = 0; r < 4; ++r) {
    DataLoader loader(config(pattern, 16, 4, r, 4));
    ASSERT_EQ(loader.num_windows(), 64u);
    for (int b = 0; b < 4; ++b) {
      const Batch* batch = loader.next();
      for (int64_t row = 0; row < 4; ++row) seen.insert(key_of_row(*batch, row));
    }
  }
  EXPECT_EQ(seen.size(), 64u);
}

TEST_F(LoaderTest, ShuffleIsDeterministicAndChangesPerEpoch) {
  EXPECT_EQ(epoch_permutation(1000, 5, 0), epoch_permutation(1000, 5, 0));
  EXPECT_NE(epoch_permutation(1000, 5, 0), epoch_permutation(1000, 5, 1));
  EXPECT_NE(epoch_permutation(1000, 5, 0), epoch_permutation(1000, 6, 0));
  auto order = epoch_permutation(1000, 5, 3);
  std::sort(order.begin(), order.end());
  for (uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(order[i], i) << "not a permutation";
  // Pinned values: the order must not change across compilers/platforms (resume across machines).
  uint64_t state = 0;
  EXPECT_EQ(splitmix64(state), 0xe220a8397b1dcdafull);  // splitmix64 reference output for seed 0
  // Independently computed with a Python transcription of the documented algorithm.
  EXPECT_EQ(epoch_permutation(10, 42, 0), (std::vector<uint32_t>{1, 6, 9, 4, 2, 3, 5, 0, 8, 7}));
  EXPECT_EQ(epoch_permutation(10, 42, 1), (std::vector<uint32_t>{2, 9, 4, 0, 7, 5, 1, 6, 3, 8}));

  const std::string pattern = make_shards({4096});
  DataLoader a(config(pattern, 16, 2)), b(config(pattern, 16, 2));
  for (int i = 0; i < 300; ++i) {
    const Batch* x = a.next();
    const Batch* y = b.next();
    ASSERT_TRUE(std::equal(x->inputs, x->inputs + 32, y->inputs));
  }
  // Shuffled: consecutive rows are not consecutive windows (overwhelmingly likely for 255 windows).
  DataLoader c(config(pattern, 16, 8));
  const Batch* first = c.next();
  int consecutive = 0;
  for (int64_t row = 0; row + 1 < 8; ++row)
    consecutive += key_of_row(*first, row + 1).start == key_of_row(*first, row).start + 16;
  EXPECT_LT(consecutive, 7);
}

TEST_F(LoaderTest, ResumeGivesIdenticalBatches) {
  const std::string pattern = make_shards({3000, 1500, 2500});
  const auto cfg = config(pattern, 32, 4, 1, 2);
  DataLoader straight(cfg);
  const uint64_t k = straight.batches_per_epoch() - 2;  // resume shortly before an epoch boundary
  std::vector<std::vector<int32_t>> expected;
  LoaderState saved;
  for (uint64_t i = 0; i < k + 10; ++i) {
    const Batch* batch = straight.next();
    if (i == k - 1) saved = straight.state();
    if (i >= k) {
      expected.emplace_back(batch->inputs, batch->inputs + 128);
      expected.back().insert(expected.back().end(), batch->targets, batch->targets + 128);
    }
  }
  // Through JSON, as a checkpoint would store it.
  nlohmann::json j = saved;
  const LoaderState restored_state = j.get<LoaderState>();
  EXPECT_EQ(restored_state, saved);
  DataLoader resumed(cfg, restored_state);
  for (const auto& want : expected) {
    const Batch* batch = resumed.next();
    std::vector<int32_t> got(batch->inputs, batch->inputs + 128);
    got.insert(got.end(), batch->targets, batch->targets + 128);
    ASSERT_EQ(got, want);
  }
  // restore() on a running loader also rewinds exactly.
  resumed.restore(restored_state);
  const Batch* batch = resumed.next();
  EXPECT_TRUE(std::equal(batch->inputs, batch->inputs + 128, expected[0].begin()));
}

TEST_F(LoaderTest, StateTracksConsumedNotPrefetched) {
  const std::string pattern = make_shards({5000});
  auto cfg = config(pattern, 16, 2);
  cfg.prefetch_depth = 4;
  DataLoader loader(cfg);
  EXPECT_EQ(loader.state().cursor, 0u);
  loader.next();
  loader.next();
  EXPECT_EQ(loader.state().cursor, 4u);  // 2 batches x B=2 x D=1, whatever the prefetcher did
  EXPECT_EQ(loader.state().seed, 1234u);
}

TEST_F(LoaderTest, StateJsonErrors) {
  EXPECT_THROW(nlohmann::json::parse(R"({"epoch": 1, "seed": 2})").get<LoaderState>(), latte::Error);
  EXPECT_THROW(nlohmann::json::parse(R"({"epoch": -1, "cursor": 0, "seed": 2})").get<LoaderState>(), latte::Error);
  EXPECT_THROW(nlohmann::json::parse(R"([1, 2, 3])").get<LoaderState>(), latte::Error);
  const std::string pattern = make_shards({5000});
  DataLoader loader(config(pattern, 16, 2));
  try {
    loader.restore(LoaderState{0, 0, 1234, 999});
    FAIL() << "expected latte::Error";
  } catch (const latte::Error& e) {
    EXPECT_NE(std::string(e.what()).find("999 windows"), std::string::npos) << e.what();
  }
}

TEST_F(LoaderTest, ValidationIsSequentialSinglePassWithDpSplit) {
  const std::string pattern = make_shards({1000, 600});
  const int64_t T = 10, B = 2;
  std::vector<WindowKey> all;
  for (int r = 0; r < 2; ++r) {
    auto loader = make_validation_loader(config(pattern, T, B, r, 2));
    const uint64_t expected_batches = loader->num_windows() / (B * 2);
    uint64_t batches = 0;
    uint64_t previous_cursor = 0;
    while (const Batch* batch = loader->next()) {
      if (batches > 0) {
        EXPECT_EQ(batch->cursor, previous_cursor + B * 2);
      }
      previous_cursor = batch->cursor;
      for (int64_t row = 0; row < B; ++row) {
        check_row_contents(*batch, row);
        // Corpus order: window k of the pass is global window k, to rank k % 2.
        const auto where = loader->locate(batch->cursor + row * 2 + r);
        EXPECT_EQ(key_of_row(*batch, row).shard, static_cast<int>(where.shard));
        EXPECT_EQ(key_of_row(*batch, row).start, static_cast<int64_t>(where.start));
        all.push_back(key_of_row(*batch, row));
      }
      ++batches;
    }
    EXPECT_EQ(batches, expected_batches);
    EXPECT_EQ(loader->next(), nullptr) << "stays at the end";
    loader->reset();
    ASSERT_NE(loader->next(), nullptr) << "reset starts another pass";
  }
  std::set<WindowKey> unique(all.begin(), all.end());
  EXPECT_EQ(unique.size(), all.size());
}

TEST_F(LoaderTest, PluggableAllocatorIsUsed) {
  const std::string pattern = make_shards({5000});
  auto cfg = config(pattern, 16, 2);
  std::atomic<int> allocated{0}, released{0};
  cfg.allocator.allocate = [&](size_t count) {
    ++allocated;
    EXPECT_EQ(count, 32u);
    return new int32_t[count];
  };
  cfg.allocator.release = [&](int32_t* ptr, size_t) {
    ++released;
    delete[] ptr;
  };
  {
    DataLoader loader(cfg);
    loader.next();
  }
  EXPECT_EQ(allocated.load(), 2 * (cfg.prefetch_depth + 1));
  EXPECT_EQ(released.load(), allocated.load());
}

TEST_F(LoaderTest, BadInputErrors) {
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected latte::Error mentioning " << needle;
    } catch (const latte::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string missing = (dir_ / "none_*.bin").string();
  expect_error([&] { DataLoader loader(config(missing, 16, 2)); }, missing);
  const std::string pattern = make_shards({100});
  expect_error([&] { DataLoader loader(config(pattern, 16, 8)); }, "fewer than one step needs");
  expect_error([&] { DataLoader loader(config(pattern, 0, 8)); }, "seq_len");
  expect_error([&] { DataLoader loader(config(pattern, 4, 1, 2, 2)); }, "dp_rank 2");
  // A corrupt shard among good ones is named.
  const std::string bad = (dir_ / "c_train_000009.bin").string();
  { std::ofstream(bad) << "garbage that is not a shard at all"; }
  expect_error([&] { DataLoader loader(config(pattern, 4, 1)); }, bad);
}

TEST_F(LoaderTest, VocabCheck) {
  const std::string pattern = make_shards({5000}, false);
  auto cfg = config(pattern, 16, 2);
  cfg.vocab_size = 1000;  // shard metadata is absent for .bin; tokens go up to 4999
  DataLoader loader(cfg);
  bool failed = false;
  try {
    for (int i = 0; i < 200; ++i) loader.next();
  } catch (const latte::Error& e) {
    failed = true;
    EXPECT_NE(std::string(e.what()).find("outside the model's vocabulary"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(failed);
  // .h5 metadata is checked when the shard is opened.
  const std::string h5 = (dir_ / "meta.h5").string();
  write_shard(h5, std::vector<int32_t>(100, 1), ShardFormat::H5, TokenDtype::U32, ShardMetadata{50257, 50256, "gpt2"});
  auto h5cfg = config(h5, 8, 1);
  h5cfg.vocab_size = 257;
  EXPECT_THROW(DataLoader loader(h5cfg), latte::Error);
}
