// KeyChecker: answers "does this key open that room?" on the loop's behalf, doing as few
// argon2id checks as it can.
//
// An argon2id check costs tens of milliseconds of a core and 64 MiB of memory traffic, and
// on a small machine that slows everything else. But the same (hash, key) pair always gives
// the same answer, and real floods repeat themselves: a fleet of clients reconnecting with
// the room's key, a misconfigured bot retrying a stale one. So:
//   - answers are remembered, under a keyed BLAKE2b digest of (hash, key) with a secret drawn
//     at start (neither the key nor a fast unkeyed hash of it is kept), at most `capacity`
//     right and `capacity` wrong ones, each kind forgetting its oldest first (so a flood of
//     wrong guesses never pushes out the real key's answer);
//   - a check already in the pool is joined rather than started again.
// A changed room key is a different hash, so a reload never sees a stale answer. Guesses
// that differ each time still cost one check each: GuessThrottle bounds how many one address
// may cause.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "roomd/offload/task_runner.hpp"

namespace roomd {

class KeyChecker {
 public:
  using Verify = std::function<bool(const std::string& hash, const std::string& key)>;
  static constexpr std::size_t kDefaultCapacity = 4096;

  // `verify` runs on a pool thread of `tasks`; without either, no key can be checked.
  KeyChecker(TaskRunner* tasks, Verify verify, std::size_t capacity = kDefaultCapacity);

  bool available() const { return tasks_ != nullptr && static_cast<bool>(verify_); }
  // The remembered answer, if there is one (cheap: one BLAKE2b of a short string).
  std::optional<bool> cached(const std::string& hash, const std::string& key) const;
  // Whether the same check is in the pool now (a check() would join it, costing nothing).
  bool in_flight(const std::string& hash, const std::string& key) const;
  // `done` runs on the loop thread once the answer is known: at once if it is remembered,
  // else when the pool's check (this one's or an identical one already running) ends.
  void check(const std::string& hash, const std::string& key, std::function<void(bool)> done);

  std::uint64_t checks_run() const { return checks_run_; }
  std::uint64_t answers_reused() const { return answers_reused_; }

 private:
  using Digest = std::array<unsigned char, 32>;
  struct DigestHash {
    std::size_t operator()(const Digest& d) const;
  };
  Digest digest(const std::string& hash, const std::string& key) const;
  void remember(const Digest& d, bool ok);

  TaskRunner* tasks_;
  Verify verify_;
  std::size_t capacity_;
  std::array<unsigned char, 32> secret_{};
  std::unordered_map<Digest, bool, DigestHash> answers_;
  std::deque<Digest> right_order_, wrong_order_;  // oldest first, for forgetting
  std::unordered_map<Digest, std::vector<std::function<void(bool)>>, DigestHash> waiting_;
  std::uint64_t checks_run_ = 0;
  mutable std::uint64_t answers_reused_ = 0;
};

}  // namespace roomd
