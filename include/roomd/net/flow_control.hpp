// Flow control of one connection's output, apart from the output queue itself: how much
// may be queued, what happens past that, and when the connection's requests are served.
//
//   queued bytes:  0 ........ limit/2 ............ limit
//                  serve requests | stop serving  | over: slow consumer (disconnect or drop)
//
// Serving stops, not only reading (a chunk already read holds more requests, and each may
// queue a reply); the unread part stays in the framer until the queue drains below half.
#pragma once

#include <cstddef>

namespace roomd {

enum class SlowConsumerPolicy { disconnect, drop };

struct FlowLimits {
  std::size_t max_outbound_bytes = 4194304;
  SlowConsumerPolicy slow_consumer = SlowConsumerPolicy::disconnect;

  // Whether a broadcast of `bytes` fits behind `queued` bytes.
  bool fits(std::size_t queued, std::size_t bytes) const { return queued + bytes <= max_outbound_bytes; }
  // Whether a connection with `queued` bytes of output may be served (and read).
  bool may_serve(std::size_t queued) const { return queued <= max_outbound_bytes / 2; }
};

}  // namespace roomd
