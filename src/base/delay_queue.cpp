// DelayQueue: one timer, armed for the earliest callback. See delay_queue.hpp.
#include "roomd/base/delay_queue.hpp"

#include <utility>
#include <vector>

namespace roomd {

DelayQueue::DelayQueue(uv_loop_t* loop) : loop_(loop), timer_(loop, [this] { fire(); }) {}

void DelayQueue::after(std::uint64_t delay_ms, std::function<void()> callback) {
  const std::uint64_t at = uv_now(loop_) + delay_ms;
  const bool earliest = due_.empty() || at < due_.begin()->first;
  due_.emplace(at, std::move(callback));  // equal times keep their order (multimap inserts last)
  if (earliest) arm();
}

void DelayQueue::arm() {
  if (due_.empty()) return timer_.stop();
  const std::uint64_t now = uv_now(loop_);
  const std::uint64_t at = due_.begin()->first;
  timer_.start(at > now ? at - now : 0, 0);
}

void DelayQueue::fire() {
  // Take out what is due first: a callback may add more (a request paced again).
  const std::uint64_t now = uv_now(loop_);
  std::vector<std::function<void()>> ready;
  auto end = due_.upper_bound(now);
  for (auto it = due_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
  due_.erase(due_.begin(), end);
  for (auto& callback : ready) callback();
  arm();
}

}  // namespace roomd
