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
  // New limits keep the tokens already earned, capped at the new burst.
  void reconfigure(double rate, double burst);

 private:
  double rate_;
  double burst_;
  double tokens_;
  std::uint64_t last_ms_;
};

}  // namespace roomd
