// When to give the heap's free memory back to the system: in a quiet moment of the loop, never
// in a storm. main.cpp sets M_TRIM_THRESHOLD high so that free() never trims on the hot path;
// so after a burst (thousands of connections, full output queues) the freed memory stays
// resident, and RSS looks like a leak to an operator. The server asks this policy at each
// check whether to call malloc_trim(0) now (Server::trim_heap_when_quiet).
#pragma once

#include <cstdint>

namespace roomd {

class HeapTrimPolicy {
 public:
  // The server checks this often (on its tick) ...
  static constexpr std::uint64_t kCheckIntervalMs = 5000;
  // ... and trims only after this many checks in a row found the loop this idle: busy (not
  // waiting in epoll) for at most this share of the interval ...
  static constexpr int kQuietChecks = 2;
  static constexpr double kQuietBusyShare = 0.25;
  // ... when at least this much of its resident memory is not in use by allocations, and its
  // resident memory grew by as much since the last trim (a heap whose free pages cannot be
  // given back, or a sanitizer's allocator, is not trimmed again and again).
  static constexpr std::uint64_t kMinSpareBytes = 16ull << 20;

  // One check: how busy the loop was since the previous one (0 … 1). Returns whether the
  // loop has now been quiet for kQuietChecks intervals in a row.
  bool note_interval(double busy_share);
  // Whether a trim is worth it with this much resident memory and this much in use.
  bool worth_trimming(std::uint64_t resident_bytes, std::uint64_t in_use_bytes) const;
  // A trim ran and left this much resident; the quiet streak starts again.
  void trimmed(std::uint64_t resident_after);

  int quiet_checks() const { return quiet_checks_; }

 private:
  int quiet_checks_ = 0;
  std::uint64_t resident_after_trim_ = 0;
};

}  // namespace roomd
