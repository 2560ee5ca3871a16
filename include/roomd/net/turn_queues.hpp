// The named lists a loop turn works through (Redis' beforeSleep does the same), filled by
// connections as things happen and emptied by their owner at the end of each turn, in order:
//
//   upgraded  WebSocket connections whose upgrade was accepted: the owner gives each its
//           session (and so its welcome) first
//   resume  connections whose held request came back or whose output drained: serve what
//           they have read and not yet served
//   ended   sessions whose connection ended: the router hears it here, once
//   write   connections with output queued: one batched write each
//   closed  connections whose handle has closed: freed last, once nobody refers to them
//
// and one that is not worked through every turn:
//
//   lazy    connections with only presence queued: written by the owner's coalescing timer
//           a few milliseconds later (or at once, with the next urgent output)
//
// Connections are named by id, so a list never points at a connection already freed.
#pragma once

#include <cstdint>
#include <vector>

#include "roomd/core/session.hpp"

namespace roomd {

using ConnectionId = std::uint64_t;

struct TurnQueues {
  std::vector<ConnectionId> upgraded;
  std::vector<ConnectionId> resume;
  std::vector<SessionId> ended;
  std::vector<ConnectionId> write;
  std::vector<ConnectionId> closed;
  std::vector<ConnectionId> lazy;  // not part of empty(): it waits for its timer, not the next turn

  bool empty() const { return upgraded.empty() && resume.empty() && ended.empty() && write.empty() && closed.empty(); }
};

}  // namespace roomd
