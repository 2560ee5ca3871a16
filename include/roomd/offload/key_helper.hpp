// KeyHelpers: argon2id checks in helper processes, not in the daemon's address space.
//
// A check maps, fills and unmaps 64 MiB. Done on a pool thread of the daemon, that kernel
// work happens in the daemon's own address space, and measured on one CPU shared with the
// loop it kept the loop off its CPU for milliseconds at a time (docs/performance.md),
// although the same hashing in another process at idle priority did no harm. So the checks
// go to `roomd --key-check-helper` processes (HelperProcesses), one per heavy slot: the
// request is the hash and the key, the answer "1" or "0". When no helper can answer, the
// check fails closed (a wrong key).
#pragma once

#include <cstddef>
#include <string>

#include "roomd/offload/helper_processes.hpp"

namespace roomd {

class KeyHelpers {
 public:
  // `program`: the roomd binary (normally /proc/self/exe); at most `slots` checks at once.
  KeyHelpers(std::string program, std::size_t slots)
      : helpers_("key-check", std::move(program), {"--key-check-helper"}, slots) {}

  // Blocking: call from a pool thread. False for a wrong key and on any failure.
  bool verify(const std::string& hash, const std::string& key);
  // At exit: the helpers go at once; a check still waiting for one fails closed.
  void shutdown() { helpers_.shutdown(); }

 private:
  HelperProcesses helpers_;
};

// The helper's side: answers requests on stdin/stdout until EOF. Returns the exit status.
int run_key_check_helper();

}  // namespace roomd
