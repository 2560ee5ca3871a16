// The named lists a loop turn works through (Redis' beforeSleep does the same), filled by
// connections as things happen and emptied by their owner at the end of each turn, in order:
//
//   resume  connections whose held request came back or whose output drained: serve what
//           they have read and not yet served
//   ended   sessions whose connection ended: the router hears it here, once
//   write   connections with output queued: one batched write each
//   closed  connections whose handle has closed: freed last, once nobody refers to them
//
// Connections are named by id, so a list never points at a connection already freed.
#pragma once

#include <cstdint>
#include <vector>

#include "roomd/core/session.hpp"

namespace roomd {

using ConnectionId = std::uint64_t;

struct TurnQueues {
  std::vector<ConnectionId> resume;
  std::vector<SessionId> ended;
  std::vector<ConnectionId> write;
  std::vector<ConnectionId> closed;

  bool empty() const { return resume.empty() && ended.empty() && write.empty() && closed.empty(); }
};

}  // namespace roomd
