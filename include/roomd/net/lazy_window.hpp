// How long presence waits for more presence before the turn's lazy list is written.
//
// The window follows the load it saves writes on: a flush that writes many connections
// doubles it (up to a ceiling), so in a burst of joins each member gets a write per window,
// not one per join; a light flush halves it back towards the floor, so a quiet server's
// presence goes out within the floor's few milliseconds. docs/architecture.md ("Lazy writes").
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace roomd {

class LazyWindow {
 public:
  static constexpr std::uint64_t kFloorMs = 20;
  static constexpr std::uint64_t kCeilingMs = 320;
  // A flush that writes this many connections or more is a busy one.
  static constexpr std::size_t kBusyFlush = 1000;

  std::uint64_t ms() const { return ms_; }

  void after_flush(std::size_t connections_written) {
    ms_ = connections_written >= kBusyFlush ? std::min(ms_ * 2, kCeilingMs) : std::max(ms_ / 2, kFloorMs);
  }

 private:
  std::uint64_t ms_ = kFloorMs;
};

}  // namespace roomd
