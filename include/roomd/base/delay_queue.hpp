// DelayQueue: callbacks run on the loop at a later time, any number of them on one timer.
// The router paces a client's requests with it (RouterServices::after); a callback must look
// up what it needs by id, since the session it was for may be gone by the time it runs.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>

#include "roomd/base/uv.hpp"

namespace roomd {

class DelayQueue {
 public:
  explicit DelayQueue(uv_loop_t* loop);
  // Runs `callback` on the loop `delay_ms` from now (loop time), after everything already due.
  void after(std::uint64_t delay_ms, std::function<void()> callback);
  std::size_t pending() const { return due_.size(); }

 private:
  void fire();
  void arm();

  uv_loop_t* loop_;
  uv::Timer timer_;
  std::multimap<std::uint64_t, std::function<void()>> due_;  // loop time -> callback, in order
};

}  // namespace roomd
