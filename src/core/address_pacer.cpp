// Per-address lookup budget (see the header for why).
#include "roomd/core/address_pacer.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace roomd {

std::uint64_t AddressPacer::reserve(const std::string& source, std::uint64_t now_ms) {
  if (settings_.rate <= 0) return 0;
  const double now = static_cast<double>(now_ms);
  double& due = due_of(source, now);
  due = std::max(due, now);
  const double wait = due - tolerance_ms() - now;
  due += interval_ms();
  return wait > 0 ? static_cast<std::uint64_t>(std::ceil(wait)) : 0;
}

std::uint64_t AddressPacer::admit(const std::string& source, std::uint64_t now_ms) {
  if (settings_.rate <= 0) return 0;
  const double now = static_cast<double>(now_ms);
  auto it = next_due_.find(source);
  const double due = it == next_due_.end() ? now : std::max(it->second, now);
  const double wait = due - tolerance_ms() - now;
  if (wait > 0) return static_cast<std::uint64_t>(std::ceil(wait));
  due_of(source, now) = due + interval_ms();
  return 0;
}

double AddressPacer::interval_ms() const { return 1000.0 / settings_.rate; }

double AddressPacer::tolerance_ms() const { return interval_ms() * (std::max<std::uint32_t>(settings_.burst, 1) - 1); }

double& AddressPacer::due_of(const std::string& source, double now_ms) {
  auto it = next_due_.find(source);
  if (it == next_due_.end()) {
    if (next_due_.size() >= sweep_at_) forget_recovered(now_ms);
    it = next_due_.emplace(source, now_ms).first;
  }
  return it->second;
}

void AddressPacer::forget_recovered(double now_ms) {
  for (auto it = next_due_.begin(); it != next_due_.end();)
    it = it->second <= now_ms ? next_due_.erase(it) : std::next(it);
  sweep_at_ = std::max<std::size_t>(1024, next_due_.size() * 2);
}

}  // namespace roomd
