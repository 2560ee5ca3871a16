#include <doctest/doctest.h>

#include <vector>

#include "roomd/net/output_budget.hpp"

using roomd::ConnectionId;
using roomd::pick_over_budget;
using roomd::QueuedOutput;

TEST_CASE("output budget: under or at the budget nobody is cut") {
  std::vector<QueuedOutput> q{{1, 100}, {2, 200}};
  CHECK(pick_over_budget(q, 300, 300).empty());
  CHECK(pick_over_budget(q, 10, 300).empty());
  std::vector<QueuedOutput> none;
  CHECK(pick_over_budget(none, 0, 0).empty());
}

TEST_CASE("output budget: the largest queues go first, only as many as needed") {
  std::vector<QueuedOutput> q{{1, 10}, {2, 900}, {3, 400}, {4, 50}, {5, 600}};
  // 1960 over a budget of 1000: cutting 900 leaves 1060, cutting 600 too leaves 460.
  CHECK(pick_over_budget(q, 1960, 1000) == std::vector<ConnectionId>{2, 5});
  std::vector<QueuedOutput> r{{1, 10}, {2, 900}, {3, 400}, {4, 50}, {5, 600}};
  CHECK(pick_over_budget(r, 1960, 1060) == std::vector<ConnectionId>{2});  // exactly at it
  std::vector<QueuedOutput> s{{1, 10}, {2, 900}, {3, 400}, {4, 50}, {5, 600}};
  CHECK(pick_over_budget(s, 1960, 1059) == std::vector<ConnectionId>{2, 5});
}

TEST_CASE("output budget: ties go to the lower id; empty queues are never cut") {
  std::vector<QueuedOutput> q{{7, 500}, {3, 500}, {9, 0}};
  CHECK(pick_over_budget(q, 1000, 600) == std::vector<ConnectionId>{3});
  // Bytes the listed queues do not hold (closing connections) cannot be cut away: everyone
  // with a queue goes, nobody without one.
  std::vector<QueuedOutput> r{{1, 100}, {2, 0}, {3, 50}};
  CHECK(pick_over_budget(r, 10000, 10) == std::vector<ConnectionId>{1, 3});
}

TEST_CASE("output budget: many small queues and one large one") {
  std::vector<QueuedOutput> q;
  for (ConnectionId id = 1; id <= 10000; ++id) q.push_back({id, 100});
  q.push_back({20000, 5'000'000});
  CHECK(pick_over_budget(q, 6'000'000, 2'000'000) == std::vector<ConnectionId>{20000});
}
