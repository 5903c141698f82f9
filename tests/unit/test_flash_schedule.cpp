// The persistent wgmma forward's work order (kernels/cuda/flash_schedule.h), on the host: every (query tile, head)
// pair is one work item exactly once, groups of heads take their tiles heaviest first, and the group size follows
// the K/V bytes that fit the L2 budget.
#include "kernels/cuda/flash_schedule.h"

#include <gtest/gtest.h>

#include <vector>

using latte::cuda::flash::fwd_head_group;
using latte::cuda::flash::fwd_item;
using latte::cuda::flash::FwdItem;

namespace {

// Walks every item of (n_m tiles, bh_total pairs, group) and checks the order's two properties.
void check_order(int n_m, int bh_total, int group) {
  SCOPED_TRACE(testing::Message() << "n_m " << n_m << " pairs " << bh_total << " group " << group);
  std::vector<int> seen(size_t(n_m) * bh_total, 0);
  int prev_group = -1, prev_m = n_m;
  for (int t = 0; t < n_m * bh_total; ++t) {
    const FwdItem it = fwd_item(t, n_m, bh_total, group);
    ASSERT_GE(it.m_block, 0);
    ASSERT_LT(it.m_block, n_m);
    ASSERT_GE(it.bh, 0);
    ASSERT_LT(it.bh, bh_total);
    ++seen[size_t(it.bh) * n_m + it.m_block];
    // Inside a group the tiles never get heavier (a larger m_block has more key tiles under a causal mask).
    const int g = it.bh / group;
    if (g == prev_group) EXPECT_LE(it.m_block, prev_m) << "item " << t;
    else EXPECT_EQ(g, prev_group + 1) << "groups must come in order, item " << t;
    prev_group = g, prev_m = it.m_block;
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << "tile " << i % n_m << " of pair " << i / n_m;
}

}  // namespace

TEST(FlashSchedule, EveryTileOnceHeaviestFirstInGroups) {
  check_order(32, 64, 24);  // B=4 T=4096 16 heads at (192,128): groups of 24 + 24 + 16
  check_order(32, 64, 64);  // one group
  check_order(32, 64, 1);   // the grid order
  check_order(3, 64, 62);   // 62 + 2
  check_order(1, 7, 3);     // a single query tile
  check_order(5, 1, 1);
  check_order(22, 48, 48);
}

TEST(FlashSchedule, GroupOrderIsTheGridOrderForGroupOne) {
  // group 1: pair after pair, each pair's tiles from the last (heaviest) to the first.
  EXPECT_EQ(fwd_item(0, 4, 3, 1).bh, 0);
  EXPECT_EQ(fwd_item(0, 4, 3, 1).m_block, 3);
  EXPECT_EQ(fwd_item(3, 4, 3, 1).m_block, 0);
  EXPECT_EQ(fwd_item(4, 4, 3, 1).bh, 1);
  EXPECT_EQ(fwd_item(4, 4, 3, 1).m_block, 3);
}

TEST(FlashSchedule, HeadGroupFromKvBytes) {
  // 4096 keys x (192 + 128) x 2 bytes = 2.5 MiB a head: 6 heads in 16 MiB.
  EXPECT_EQ(fwd_head_group(4096, 192, 128, 1, 64), 6);
  // GQA with 4 query heads per kv head: a quarter of the bytes per query head, 4x the heads.
  EXPECT_EQ(fwd_head_group(4096, 192, 128, 4, 64), 25);
  EXPECT_EQ(fwd_head_group(4200, 192, 128, 4, 64), 24);  // FlashAttention.WgmmaForwardPersistent's shape
  EXPECT_EQ(fwd_head_group(4200, 64, 64, 4, 64), 62);
  // Clamped to [1, pairs].
  EXPECT_EQ(fwd_head_group(128, 64, 64, 1, 8), 8);
  EXPECT_EQ(fwd_head_group(int64_t(1) << 26, 192, 128, 1, 8), 1);
}
