// The work order of the persistent wgmma forward (flash_attention_fwd_sm90.cu): which query tile of which (batch,
// virtual head) pair work item t is, and how many heads go in one heaviest-first group. Host and device code; the
// host tests (tests/unit/test_flash_schedule.cpp) check that the order covers every tile once.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/host_device.h"

namespace latte::cuda::flash {

// Work item t: query tile m_block (rows m_block * rows ..) of the (batch, virtual head) pair bh. Items go heaviest
// first within groups of `group` pairs: the causal query tiles at the end of the sequence (the most key tiles) of
// every pair of a group, then the next lighter ones, so the last items any block takes are light, and the pairs in
// flight at once are those of one or two groups, whose K and V fit in L2 (fwd_head_group). group = 1 is each pair's
// tiles heaviest first, one pair after another (the grid order of one block per tile).
struct FwdItem {
  int m_block, bh;
};
LATTE_HD FwdItem fwd_item(int t, int n_m, int bh_total, int group) {
  const int per_group = group * n_m, grp = t / per_group, rem = t - grp * per_group;
  const int last = bh_total - grp * group, heads = group < last ? group : last, rank = rem / heads;
  return {n_m - 1 - rank, grp * group + (rem - rank * heads)};
}

// Pairs per group: as many as keep the group's K and V (per query head: S keys of Dqk + Dv bf16 values, divided by
// the GQA group size G, which shares them) within l2_budget bytes; at least 1, at most all `pairs`.
inline int fwd_head_group(int64_t S, int dqk, int dv, int G, int64_t pairs, int64_t l2_budget = int64_t(16) << 20) {
  const int64_t kv_bytes = std::max<int64_t>(1, S * (dqk + dv) * 2 / std::max(1, G));
  return static_cast<int>(std::clamp<int64_t>(l2_budget / kv_bytes, 1, std::max<int64_t>(1, pairs)));
}

}  // namespace latte::cuda::flash
