// The checkpoint directory protocol: atomic commit, checksums, keep-last pruning, and skipping a
// corrupt or partial checkpoint in favour of the previous one.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "train/checkpoint_store.h"

namespace fs = std::filesystem;
using latte::CheckpointStore;

namespace {
std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("latte_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void save(const CheckpointStore& store, int64_t step, const std::string& payload) {
  std::string staging = store.begin(step);
  latte::write_file_atomic(staging + "/model-tp0.safetensors", payload);
  latte::write_file_atomic(staging + "/state.json", "{\"step\": " + std::to_string(step) + "}");
  store.commit(step, staging);
}
}  // namespace

TEST(CheckpointStore, CommitWritesMarkerChecksumsAndLatest) {
  CheckpointStore store(temp_dir("commit"), 3);
  save(store, 10, "weights-10");
  EXPECT_TRUE(fs::exists(store.step_dir(10) + "/COMPLETE"));
  EXPECT_TRUE(fs::exists(store.step_dir(10) + "/checksums.json"));
  EXPECT_FALSE(fs::exists(store.step_dir(10) + ".partial"));
  EXPECT_EQ(latte::read_file(store.dir() + "/latest"), "step_00000010\n");
  EXPECT_EQ(CheckpointStore::verify(store.step_dir(10)), "");
  ASSERT_TRUE(store.latest_valid().has_value());
  EXPECT_EQ(*store.latest_valid(), store.step_dir(10));
}

TEST(CheckpointStore, KeepsOnlyTheLastN) {
  CheckpointStore store(temp_dir("prune"), 2);
  for (int64_t s : {1, 2, 3, 4}) save(store, s, "w" + std::to_string(s));
  std::vector<std::string> all = store.list_complete();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], store.step_dir(3));
  EXPECT_EQ(all[1], store.step_dir(4));
}

TEST(CheckpointStore, CorruptNewestFallsBackToPrevious) {
  CheckpointStore store(temp_dir("corrupt"), 5);
  save(store, 1, "good weights");
  save(store, 2, "newer weights");
  {  // flip bytes of the newest model file, same length
    std::ofstream f(store.step_dir(2) + "/model-tp0.safetensors", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(0);
    f << "XXXXX";
  }
  EXPECT_NE(CheckpointStore::verify(store.step_dir(2)).find("checksum"), std::string::npos);
  ASSERT_TRUE(store.latest_valid().has_value());
  EXPECT_EQ(*store.latest_valid(), store.step_dir(1));
  // A truncated file is reported by size.
  fs::resize_file(store.step_dir(1) + "/model-tp0.safetensors", 3);
  EXPECT_NE(CheckpointStore::verify(store.step_dir(1)).find("bytes"), std::string::npos);
  EXPECT_FALSE(store.latest_valid().has_value());
}

TEST(CheckpointStore, InterruptedSaveLeavesPreviousUsable) {
  CheckpointStore store(temp_dir("interrupt"), 5);
  save(store, 1, "first");
  // A crash mid-save: staging dir written, never committed.
  std::string staging = store.begin(2);
  latte::write_file_atomic(staging + "/model-tp0.safetensors", "half");
  EXPECT_EQ(store.list_complete().size(), 1u);
  EXPECT_EQ(*store.latest_valid(), store.step_dir(1));
  // A directory that lost its COMPLETE marker is not a checkpoint.
  save(store, 3, "third");
  fs::remove(store.step_dir(3) + "/COMPLETE");
  EXPECT_EQ(*store.latest_valid(), store.step_dir(1));
  EXPECT_NE(CheckpointStore::verify(store.step_dir(3)).find("COMPLETE"), std::string::npos);
}
