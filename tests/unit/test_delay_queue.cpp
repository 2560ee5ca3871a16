// DelayQueue on a real libuv loop: callbacks run by due time, equal times in the order given.
#include <doctest/doctest.h>

#include <uv.h>

#include <algorithm>
#include <string>
#include <vector>

#include "roomd/base/delay_queue.hpp"

using namespace roomd;

TEST_CASE("delay queue: due order, equal times in order, callbacks may schedule more") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  std::vector<std::string> ran;
  {
    DelayQueue delays(&loop);
    const std::uint64_t start = uv_now(&loop);
    std::uint64_t first_at = 0;
    delays.after(30, [&] { ran.push_back("30"); });
    delays.after(10, [&] {
      ran.push_back("10a");
      delays.after(0, [&] { ran.push_back("from 10a"); });
    });
    delays.after(10, [&] { ran.push_back("10b"); });
    delays.after(0, [&] {
      ran.push_back("0");
      first_at = uv_now(&loop);
    });
    CHECK(delays.pending() == 4);
    uv_run(&loop, UV_RUN_DEFAULT);  // returns when nothing is pending: the timer is stopped
    CHECK(delays.pending() == 0);
    CHECK(first_at >= start);
    CHECK(uv_now(&loop) >= start + 30);  // nothing ran early
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // the timer's close callback
  CHECK(uv_loop_close(&loop) == 0);
  REQUIRE(ran.size() == 5);
  CHECK(ran[0] == "0");
  CHECK(ran[1] == "10a");
  CHECK(ran[2] == "10b");  // due with 10a: runs before what 10a scheduled
  auto child = std::find(ran.begin(), ran.end(), "from 10a");
  auto last = std::find(ran.begin(), ran.end(), "30");
  CHECK(child - ran.begin() >= 3);
  CHECK(last - ran.begin() >= 3);
}

TEST_CASE("delay queue: destroyed with callbacks pending, none of them runs") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  bool ran = false;
  {
    DelayQueue delays(&loop);
    delays.after(5, [&] { ran = true; });
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
  CHECK_FALSE(ran);
}
