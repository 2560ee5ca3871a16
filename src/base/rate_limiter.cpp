// Token bucket rate limiting for client messages.
#include "roomd/base/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace roomd {

void TokenBucket::refill(std::uint64_t now_ms) {
  if (now_ms > last_ms_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_ms - last_ms_) / 1000.0);
    last_ms_ = now_ms;
  }
}

bool TokenBucket::try_take(std::uint64_t now_ms) {
  refill(now_ms);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

void TokenBucket::give_back() { tokens_ = std::min(burst_, tokens_ + 1.0); }

bool TokenBucket::full(std::uint64_t now_ms) {
  refill(now_ms);
  return tokens_ >= burst_;
}

std::uint64_t TokenBucket::ms_until_token(std::uint64_t now_ms) {
  refill(now_ms);
  if (tokens_ >= 1.0) return 0;
  return static_cast<std::uint64_t>(std::ceil((1.0 - tokens_) * 1000.0 / rate_));
}

void TokenBucket::reconfigure(double rate, double burst) {
  rate_ = rate;
  burst_ = burst;
  tokens_ = std::min(tokens_, burst_);
}

}  // namespace roomd
