// LogThrottle: one log line per interval for an event that may repeat thousands of times a
// second (refused connections, failed accepts), with the count of those it stood for, so a
// flood costs the log one line per interval instead of one per event. Time comes from the
// caller (the loop's clock).
#pragma once

#include <cstdint>

namespace roomd {

class LogThrottle {
 public:
  explicit LogThrottle(std::uint64_t interval_ms) : interval_ms_(interval_ms) {}

  // One event at `now_ms`. Returns how many events the line due now stands for (this one and
  // those held back since the last line), or 0 when no line is due yet.
  std::uint64_t note(std::uint64_t now_ms) {
    ++held_;
    if (logged_once_ && now_ms < last_ms_ + interval_ms_) return 0;
    logged_once_ = true;
    last_ms_ = now_ms;
    const std::uint64_t count = held_;
    held_ = 0;
    return count;
  }

 private:
  std::uint64_t interval_ms_;
  std::uint64_t last_ms_ = 0;
  std::uint64_t held_ = 0;
  bool logged_once_ = false;
};

}  // namespace roomd
