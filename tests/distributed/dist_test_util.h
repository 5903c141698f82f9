// Shared helpers of the distributed suite (run under mpirun -np 2 and -np 4 on CPU; see main.cpp).
// Every rank runs every test in the same order; collectives inside a test must be reached by all
// ranks, so tests use EXPECT_* (not ASSERT_*) around collective calls.
#pragma once
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/shard.h"
#include "distributed/world.h"

namespace latte::test {

// The job's World, created on first use after main()'s MPI_Init (destroyed at exit, harmlessly after MPI_Finalize).
inline dist::World& world() {
  static dist::World instance;
  return instance;
}

// ||a - b|| / ||b|| over all elements (b == 0: ||a - b||).
inline double rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  if (va.size() != vb.size()) return INFINITY;
  double diff = 0, ref = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    diff += (va[i] - vb[i]) * (va[i] - vb[i]);
    ref += vb[i] * vb[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  if (va.size() != vb.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// The tiny EG-MLA model of the end-to-end distributed training tests (the synthetic shards' ids are < 89).
inline const char* const kTinyEgmlaModelYaml = R"(model:
  vocab_size: 96
  d_model: 32
  n_layers: 2
  ffn_dim: 64
  max_seq_len: 16
  attention: {kind: egmla, n_heads: 4, kv_rank: 16, rope_dim: 4, nope_dim: 8, v_dim: 8, gate: {embed_dim: 8}}
)";

// A run directory every rank sees, for the training tests: rank 0 makes <tmp>/<prefix><pid> with a
// synthetic corpus (data/syn_train_000000.bin: 26000 tokens, data/syn_val_000000.bin: 4000; ids < 89, a
// learnable pattern) and `run_yaml` as run.yaml, then broadcasts the path. Call it from every rank.
inline std::string shared_run_dir(const std::string& prefix, const std::string& run_yaml) {
  char name[256] = {0};
  if (world_rank() == 0) {
    namespace fs = std::filesystem;
    const std::string dir = (fs::temp_directory_path() / (prefix + std::to_string(::getpid()))).string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/data");
    std::vector<int32_t> tokens;
    for (int i = 0; i < 30000; ++i) tokens.push_back((i * 7 + (i / 13) % 5) % 89);
    data::write_shard(dir + "/data/syn_train_000000.bin", {tokens.data(), 26000}, data::ShardFormat::Bin,
                      data::TokenDtype::U16);
    data::write_shard(dir + "/data/syn_val_000000.bin", {tokens.data() + 26000, 4000}, data::ShardFormat::Bin,
                      data::TokenDtype::U16);
    std::ofstream(dir + "/run.yaml") << run_yaml;
    std::snprintf(name, sizeof(name), "%s", dir.c_str());
  }
  MPI_Bcast(name, sizeof(name), MPI_CHAR, 0, MPI_COMM_WORLD);
  return std::string(name);
}

}  // namespace latte::test
