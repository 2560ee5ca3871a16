// When each connection of a draining node is closed (lame duck, SIGUSR2: a rolling restart;
// docs/operations.md). None during the grace period, which leaves a load balancer time to see
// /readyz fail; then one at a time, spread evenly over the rest of the duration in a random
// order, so the clients' reconnects reach the other nodes as a trickle rather than a herd. The
// server tells each client its time (system lame_duck, reconnect_ms) and drives the plan with a
// timer; this is the arithmetic alone.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

namespace roomd {

class LameDuckPlan {
 public:
  // `ids`: the connections open when lame duck starts (loop time `now_ms`); `seed` orders them.
  LameDuckPlan(std::uint64_t now_ms, std::uint64_t grace_ms, std::uint64_t duration_ms, std::vector<std::uint64_t> ids,
               std::uint64_t seed);

  // When `id` is to be closed (loop time); nothing for a connection not in the plan.
  std::optional<std::uint64_t> close_at(std::uint64_t id) const;
  // The connections whose time has come by `now_ms`, in the plan's order; each is handed out once.
  std::vector<std::uint64_t> take_due(std::uint64_t now_ms);
  // The next close time, or nothing once every one was handed out.
  std::optional<std::uint64_t> next_due() const;
  // The end of the duration: whatever is still open then is shut down.
  std::uint64_t end_ms() const { return end_ms_; }

 private:
  struct Slot {
    std::uint64_t at;
    std::uint64_t id;
  };
  std::deque<Slot> slots_;  // in time order, not yet handed out
  std::unordered_map<std::uint64_t, std::uint64_t> close_at_;
  std::uint64_t end_ms_;
};

}  // namespace roomd
