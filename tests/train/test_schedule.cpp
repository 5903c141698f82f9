// LR schedules: warmup, cosine endpoints, WSD phases, constant.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "train/schedule.h"

using latte::LrSchedule;

TEST(Schedule, CosineWarmsUpThenDecaysToMinRatio) {
  LrSchedule s{"cosine", 1e-3, 0.1, 10, 110, 0.2};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);       // (0 + 1) / 10 of the peak
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);       // end of warmup
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);      // decay starts at the peak
  EXPECT_NEAR(s.at(60), 0.55e-3, 1e-12); // half way: mean of peak and floor
  EXPECT_NEAR(s.at(110), 1e-4, 1e-12);   // floor at the planned end
  for (int64_t i = 11; i < 110; ++i) EXPECT_LT(s.at(i), s.at(i - 1));
}

TEST(Schedule, WarmupStableDecay) {
  LrSchedule s{"wsd", 2e-3, 0.0, 5, 100, 0.2};
  EXPECT_DOUBLE_EQ(s.at(4), 2e-3);
  EXPECT_DOUBLE_EQ(s.at(50), 2e-3);
  EXPECT_DOUBLE_EQ(s.at(79), 2e-3);
  EXPECT_DOUBLE_EQ(s.at(80), 2e-3);      // decay begins at 80 = 100 - 20
  EXPECT_NEAR(s.at(90), 1e-3, 1e-12);
  EXPECT_NEAR(s.at(100), 0.0, 1e-12);
}

TEST(Schedule, ConstantAndUnknown) {
  LrSchedule c{"constant", 3e-4, 0.1, 0, 10, 0.2};
  EXPECT_DOUBLE_EQ(c.at(0), 3e-4);
  EXPECT_DOUBLE_EQ(c.at(9), 3e-4);
  LrSchedule bad{"linear", 3e-4, 0.1, 0, 10, 0.2};
  EXPECT_THROW(bad.at(3), latte::Error);
}
