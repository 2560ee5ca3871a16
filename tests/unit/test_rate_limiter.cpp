#include <doctest/doctest.h>

#include "roomd/base/rate_limiter.hpp"

using roomd::TokenBucket;

TEST_CASE("token bucket starts full, then refills at rate") {
  TokenBucket b(10, 5, 1000);
  for (int i = 0; i < 5; ++i) CHECK(b.try_take(1000));
  CHECK_FALSE(b.try_take(1000));
  CHECK_FALSE(b.try_take(1050));  // half a token
  CHECK(b.try_take(1100));        // 10/s: one token per 100 ms
  CHECK_FALSE(b.try_take(1100));
  // A long pause refills only up to burst.
  for (int i = 0; i < 5; ++i) CHECK(b.try_take(100000));
  CHECK_FALSE(b.try_take(100000));
}

TEST_CASE("token bucket reconfigure caps tokens at the new burst") {
  TokenBucket b(1, 100, 0);
  b.reconfigure(1, 2);
  CHECK(b.try_take(0));
  CHECK(b.try_take(0));
  CHECK_FALSE(b.try_take(0));
}

TEST_CASE("token bucket ignores a clock that goes backwards") {
  TokenBucket b(1, 1, 5000);
  CHECK(b.try_take(5000));
  CHECK_FALSE(b.try_take(4000));
  CHECK(b.try_take(6000));
}

TEST_CASE("token bucket: give_back, full and the wait for the next token") {
  TokenBucket b(0.1, 2, 0);  // one token per 10 s
  CHECK(b.full(0));
  CHECK(b.ms_until_token(0) == 0);
  CHECK(b.try_take(0));
  CHECK(b.try_take(0));
  CHECK_FALSE(b.full(0));
  CHECK(b.ms_until_token(0) == 10000);
  CHECK(b.ms_until_token(4000) == 6000);
  b.give_back();
  CHECK(b.try_take(4000));
  b.give_back();
  b.give_back();
  b.give_back();  // never above burst
  CHECK(b.full(4000));
  CHECK(b.try_take(4000));
  CHECK(b.try_take(4000));
  CHECK_FALSE(b.try_take(4000));
}
