// KeyHelpers: argon2id checks in helper processes, not in the daemon's address space.
//
// A check maps, fills and unmaps 64 MiB. Done on a pool thread of the daemon, that kernel
// work happens in the daemon's own address space, and measured on one CPU shared with the
// loop it kept the loop off its CPU for milliseconds at a time (docs/performance.md),
// although the same hashing in another process at idle priority did no harm. So each heavy
// slot of the worker pool owns a helper: `roomd --key-check-helper`, started with
// posix_spawn (safe in a threaded process), at idle CPU priority, reading requests on its
// stdin and answering on its stdout. A pool thread borrows a free helper, writes the hash
// and the key, and blocks for the one-byte answer. A helper that dies is started again on
// the next check; if it cannot be, the check fails closed (a wrong key).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

namespace roomd {

class KeyHelpers {
 public:
  // `program`: the roomd binary (normally /proc/self/exe); at most `slots` checks at once.
  KeyHelpers(std::string program, std::size_t slots);
  ~KeyHelpers();
  KeyHelpers(const KeyHelpers&) = delete;
  KeyHelpers& operator=(const KeyHelpers&) = delete;

  // Blocking: call from a pool thread. False for a wrong key and on any failure.
  bool verify(const std::string& hash, const std::string& key);

 private:
  struct Helper {
    pid_t pid = -1;
    int fd = -1;  // our end of the socketpair
  };
  bool start(Helper& h);
  void stop(Helper& h);
  static bool ask(Helper& h, const std::string& hash, const std::string& key, bool* answer);

  std::string program_;
  std::vector<Helper> helpers_;     // one per slot; a borrowed one is its thread's alone
  std::mutex mutex_;
  std::condition_variable freed_;
  std::vector<std::size_t> free_;   // indexes into helpers_, guarded by mutex_
};

// The helper's side: answers requests on stdin/stdout until EOF. Returns the exit status.
int run_key_check_helper();

}  // namespace roomd
