#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "roomd/app/lame_duck.hpp"

using roomd::LameDuckPlan;

TEST_CASE("lame duck: nobody before the grace, then one at a time over the rest of the duration") {
  std::vector<std::uint64_t> ids(10);
  std::iota(ids.begin(), ids.end(), 100);
  LameDuckPlan plan(1000, 2000, 12000, ids, 7);
  CHECK(plan.end_ms() == 13000);
  std::vector<std::uint64_t> times;
  for (auto id : ids) times.push_back(*plan.close_at(id));
  std::sort(times.begin(), times.end());
  // Evenly spread: 3000, 4000, ... 12000 (one step before the end).
  for (std::size_t k = 0; k < times.size(); ++k) CHECK(times[k] == 3000 + 1000 * k);
  CHECK_FALSE(plan.close_at(99));

  CHECK(plan.take_due(2999).empty());  // the grace
  auto first = plan.take_due(3000);
  REQUIRE(first.size() == 1);
  CHECK(*plan.close_at(first[0]) == 3000);
  CHECK(plan.next_due() == 4000u);
  auto late = plan.take_due(6500);  // a timer that fired late hands out all that are due, in order
  REQUIRE(late.size() == 3);
  CHECK(*plan.close_at(late[0]) == 4000);
  CHECK(*plan.close_at(late[2]) == 6000);
  auto rest = plan.take_due(100000);
  CHECK(rest.size() == 6);
  CHECK_FALSE(plan.next_due());
  CHECK(plan.take_due(200000).empty());  // each once
  std::set<std::uint64_t> all(first.begin(), first.end());
  all.insert(late.begin(), late.end());
  all.insert(rest.begin(), rest.end());
  CHECK(all.size() == 10);
}

TEST_CASE("lame duck: the order is shuffled, not the connections' age") {
  std::vector<std::uint64_t> ids(50);
  std::iota(ids.begin(), ids.end(), 1);
  LameDuckPlan a(0, 0, 5000, ids, 1), b(0, 0, 5000, ids, 2);
  CHECK(a.take_due(5000) != ids);
  CHECK(a.take_due(5000).empty());
  CHECK(b.take_due(5000).size() == 50);
}

TEST_CASE("lame duck: no connections, and no grace") {
  LameDuckPlan empty(500, 1000, 3000, {}, 1);
  CHECK_FALSE(empty.next_due());
  CHECK(empty.end_ms() == 3500);
  LameDuckPlan one(0, 0, 3000, {42}, 1);
  CHECK(one.close_at(42) == 0u);  // at once
}
