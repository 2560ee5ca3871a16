// Token bucket: `rate` tokens a second up to `burst`, starting full, so a new client may send
// `burst` messages at once and then `rate` a second. Time comes from the caller (the loop's
// clock in the daemon, a number in tests).
#pragma once

#include <cstdint>

namespace roomd {

class TokenBucket {
 public:
  TokenBucket(double rate, double burst, std::uint64_t now_ms)
      : rate_(rate), burst_(burst), tokens_(burst), last_ms_(now_ms) {}

  // Takes one token if there is one.
  bool try_take(std::uint64_t now_ms);
  // Returns a token taken for something that turned out not to count (never above burst).
  void give_back();
  // Whether the bucket has filled up again: nothing distinguishes it from a new one.
  bool full(std::uint64_t now_ms);
  // How long until the next token, 0 if one is there now.
  std::uint64_t ms_until_token(std::uint64_t now_ms);
  // New limits keep the tokens already earned, capped at the new burst.
  void reconfigure(double rate, double burst);

 private:
  void refill(std::uint64_t now_ms);

  double rate_;
  double burst_;
  double tokens_;
  std::uint64_t last_ms_;
};

}  // namespace roomd
