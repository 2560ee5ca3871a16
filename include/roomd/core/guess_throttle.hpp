// GuessThrottle: how many argon2id key checks one client address may cause.
//
// A check costs tens of milliseconds of a core and 64 MiB of memory traffic. KeyChecker makes
// repeated keys free, but a guesser sends a new key each time, and without a limit a handful
// of connections keeps the heavy lane (and the machine's memory bandwidth) busy for as long
// as they like. So each source address has a token bucket of checks: `guesses` at once, then
// one every `interval_s`. A right key gives its token back: only wrong keys use them up. A
// source over its budget gets `rate_limited` at once, without a check, and is told when to
// try again. IPv6 sources are grouped by /64 (one host usually holds a whole /64); clients
// on Unix sockets share one source.
//
// Pure logic: time comes from the caller. A source is forgotten once its bucket is full
// again, so the table holds only addresses that guessed recently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "roomd/base/rate_limiter.hpp"

namespace roomd {

class GuessThrottle {
 public:
  struct Settings {
    std::uint32_t guesses = 5;      // 0: no limit
    std::uint32_t interval_s = 10;
  };
  struct Verdict {
    bool allowed;
    std::uint64_t retry_ms;  // when refused: until the source's next guess
    bool first_refusal;      // the first refusal since this source was last within budget
  };

  explicit GuessThrottle(Settings settings) : settings_(settings) {}

  // The source `ip` belongs to: the address itself, an IPv6 address's /64, "unix" for "".
  static std::string source_of(std::string_view ip);

  // A key check for `source` is about to start: takes one of its guesses, or refuses.
  Verdict try_start(const std::string& source, std::uint64_t now_ms);
  // The key was right: its guess is given back.
  void succeeded(const std::string& source);
  // Reload: sources keep the guesses they have, within the new limits.
  void reconfigure(Settings settings);

  std::size_t sources() const { return sources_.size(); }
  std::uint64_t refused() const { return refused_; }

 private:
  struct Source {
    TokenBucket bucket;
    bool refusing = false;
  };
  TokenBucket new_bucket(std::uint64_t now_ms) const;
  void forget_recovered(std::uint64_t now_ms);

  Settings settings_;
  std::unordered_map<std::string, Source> sources_;
  std::size_t sweep_at_ = 1024;  // table size that triggers the next sweep (amortized O(1))
  std::uint64_t refused_ = 0;
};

}  // namespace roomd
