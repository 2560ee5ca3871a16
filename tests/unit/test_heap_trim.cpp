#include <doctest/doctest.h>

#include "roomd/app/heap_trim.hpp"

using roomd::HeapTrimPolicy;

namespace {
constexpr std::uint64_t MiB = 1ull << 20;
}

TEST_CASE("heap trim: only after enough quiet intervals in a row") {
  HeapTrimPolicy p;
  CHECK_FALSE(p.note_interval(0.01));
  CHECK(p.note_interval(0.01));
  CHECK(p.note_interval(HeapTrimPolicy::kQuietBusyShare));  // at the share still counts as quiet
  CHECK_FALSE(p.note_interval(0.9));                          // a storm starts the streak again
  CHECK_FALSE(p.note_interval(0.0));
  CHECK(p.note_interval(0.0));
}

TEST_CASE("heap trim: only when enough resident memory is free") {
  HeapTrimPolicy p;
  CHECK_FALSE(p.worth_trimming(100 * MiB, 90 * MiB));  // 10 MiB spare
  CHECK(p.worth_trimming(200 * MiB, 100 * MiB));
  CHECK(p.worth_trimming(100 * MiB + HeapTrimPolicy::kMinSpareBytes, 100 * MiB));
  CHECK_FALSE(p.worth_trimming(10 * MiB, 20 * MiB));  // in use above resident (swapped, shared)
}

TEST_CASE("heap trim: after a trim, not again until resident memory grew back") {
  HeapTrimPolicy p;
  p.note_interval(0.0);
  CHECK(p.note_interval(0.0));
  CHECK(p.worth_trimming(300 * MiB, 40 * MiB));
  p.trimmed(250 * MiB);  // little came back (a sanitizer's allocator, pinned pages)
  CHECK(p.quiet_checks() == 0);
  CHECK_FALSE(p.note_interval(0.0));
  CHECK(p.note_interval(0.0));
  CHECK_FALSE(p.worth_trimming(260 * MiB, 40 * MiB));  // still far from in use, but no growth
  CHECK(p.worth_trimming(250 * MiB + HeapTrimPolicy::kMinSpareBytes, 40 * MiB));
}
