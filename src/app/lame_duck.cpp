// LameDuckPlan: the closing times of a draining node's connections. See lame_duck.hpp.
#include "roomd/app/lame_duck.hpp"

#include <algorithm>
#include <random>

namespace roomd {

LameDuckPlan::LameDuckPlan(std::uint64_t now_ms, std::uint64_t grace_ms, std::uint64_t duration_ms,
                           std::vector<std::uint64_t> ids, std::uint64_t seed)
    : end_ms_(now_ms + std::max(duration_ms, grace_ms)) {
  std::mt19937_64 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  // Slot k of n at grace + k/n of the time left: the first at the end of the grace, the last
  // one step before the end, so its close has that step to finish.
  const std::uint64_t spread = duration_ms > grace_ms ? duration_ms - grace_ms : 0;
  const std::uint64_t n = ids.size();
  for (std::uint64_t k = 0; k < n; ++k) {
    const std::uint64_t at = now_ms + grace_ms + spread * k / n;
    slots_.push_back({at, ids[k]});
    close_at_[ids[k]] = at;
  }
}

std::optional<std::uint64_t> LameDuckPlan::close_at(std::uint64_t id) const {
  auto it = close_at_.find(id);
  if (it == close_at_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::uint64_t> LameDuckPlan::take_due(std::uint64_t now_ms) {
  std::vector<std::uint64_t> due;
  while (!slots_.empty() && slots_.front().at <= now_ms) {
    due.push_back(slots_.front().id);
    slots_.pop_front();
  }
  return due;
}

std::optional<std::uint64_t> LameDuckPlan::next_due() const {
  if (slots_.empty()) return std::nullopt;
  return slots_.front().at;
}

}  // namespace roomd
