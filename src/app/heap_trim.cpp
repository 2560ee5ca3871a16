// HeapTrimPolicy: see heap_trim.hpp.
#include "roomd/app/heap_trim.hpp"

namespace roomd {

bool HeapTrimPolicy::note_interval(double busy_share) {
  quiet_checks_ = busy_share <= kQuietBusyShare ? quiet_checks_ + 1 : 0;
  return quiet_checks_ >= kQuietChecks;
}

bool HeapTrimPolicy::worth_trimming(std::uint64_t resident_bytes, std::uint64_t in_use_bytes) const {
  if (resident_bytes < in_use_bytes + kMinSpareBytes) return false;
  return resident_bytes >= resident_after_trim_ + kMinSpareBytes;
}

void HeapTrimPolicy::trimmed(std::uint64_t resident_after) {
  resident_after_trim_ = resident_after;
  quiet_checks_ = 0;
}

}  // namespace roomd
