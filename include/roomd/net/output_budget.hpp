// The server-wide output budget (limits.max_total_outbound_bytes): which connections to cut
// when all clients' queued output together is over it.
//
// The total is a counter the connections keep as their queues change (ConnectionCounters::
// budgeted_bytes), so the turn's check is one comparison; only over the budget does the owner
// list the queues and call pick_over_budget. The largest queues go first, until what is left
// is at or under the budget: a client with a small queue loses nothing while a larger one is
// left to cut. A cut connection is a slow consumer by its policy (disconnect, or skip
// broadcasts until its queue drains) and stops counting against the budget either way.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "roomd/net/turn_queues.hpp"

namespace roomd {

struct QueuedOutput {
  ConnectionId id = 0;
  std::uint64_t bytes = 0;
};

// The connections to cut, largest queue first (ties: the lower id), so that `total` less
// their queues is at or under `budget`; all of them if even that is not enough. `total` may
// exceed the sum of `queues`. Reorders `queues`. A heap, so a few cuts among many connections
// cost O(n + k log n), not a full sort.
inline std::vector<ConnectionId> pick_over_budget(std::vector<QueuedOutput>& queues, std::uint64_t total,
                                                  std::uint64_t budget) {
  std::vector<ConnectionId> cut;
  if (total <= budget) return cut;
  auto smaller = [](const QueuedOutput& a, const QueuedOutput& b) {
    return a.bytes != b.bytes ? a.bytes < b.bytes : a.id > b.id;
  };
  std::make_heap(queues.begin(), queues.end(), smaller);
  auto end = queues.end();
  while (total > budget && end != queues.begin()) {
    std::pop_heap(queues.begin(), end, smaller);
    --end;
    if (end->bytes == 0) break;  // the rest are empty: cutting them frees nothing
    cut.push_back(end->id);
    total -= std::min(total, end->bytes);
  }
  return cut;
}

}  // namespace roomd
