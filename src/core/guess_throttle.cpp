// Per-address budget of argon2id key checks (see the header for why).
#include "roomd/core/guess_throttle.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <utility>

namespace roomd {

std::string GuessThrottle::source_of(std::string_view ip) {
  if (ip.empty()) return "unix";
  if (ip.find(':') == std::string_view::npos) return std::string(ip);
  std::string text(ip);
  std::array<unsigned char, 16> addr{};
  if (inet_pton(AF_INET6, text.c_str(), addr.data()) != 1) return text;
  if (addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 0 && addr[4] == 0 && addr[5] == 0 &&
      addr[6] == 0 && addr[7] == 0 && addr[8] == 0 && addr[9] == 0 && addr[10] == 0xff && addr[11] == 0xff) {
    char v4[INET_ADDRSTRLEN];  // an IPv4 client on a dual-stack socket is an IPv4 source
    if (inet_ntop(AF_INET, addr.data() + 12, v4, sizeof v4)) return v4;
  }
  std::fill(addr.begin() + 8, addr.end(), 0);
  char v6[INET6_ADDRSTRLEN];
  if (!inet_ntop(AF_INET6, addr.data(), v6, sizeof v6)) return text;
  return std::string(v6) + "/64";
}

TokenBucket GuessThrottle::new_bucket(std::uint64_t now_ms) const {
  return TokenBucket(1.0 / std::max<std::uint32_t>(settings_.interval_s, 1), settings_.guesses, now_ms);
}

GuessThrottle::Verdict GuessThrottle::try_start(const std::string& source, std::uint64_t now_ms) {
  if (settings_.guesses == 0) return {true, 0, false};
  auto it = sources_.find(source);
  if (it == sources_.end()) {
    if (sources_.size() >= sweep_at_) forget_recovered(now_ms);
    it = sources_.emplace(source, Source{new_bucket(now_ms)}).first;
  }
  Source& s = it->second;
  if (s.bucket.try_take(now_ms)) {
    s.refusing = false;
    return {true, 0, false};
  }
  ++refused_;
  bool first = !std::exchange(s.refusing, true);
  return {false, s.bucket.ms_until_token(now_ms), first};
}

void GuessThrottle::succeeded(const std::string& source) {
  if (auto it = sources_.find(source); it != sources_.end()) it->second.bucket.give_back();
}

void GuessThrottle::reconfigure(Settings settings) {
  settings_ = settings;
  for (auto& [name, s] : sources_)
    s.bucket.reconfigure(1.0 / std::max<std::uint32_t>(settings_.interval_s, 1), settings_.guesses);
}

void GuessThrottle::forget_recovered(std::uint64_t now_ms) {
  for (auto it = sources_.begin(); it != sources_.end();)
    it = it->second.bucket.full(now_ms) ? sources_.erase(it) : std::next(it);
  sweep_at_ = std::max<std::size_t>(1024, sources_.size() * 2);
}

}  // namespace roomd
