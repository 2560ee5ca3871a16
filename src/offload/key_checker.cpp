// KeyChecker: remembered and shared argon2id answers. See key_checker.hpp.
#include "roomd/offload/key_checker.hpp"

#include <sodium.h>

#include <cstring>
#include <stdexcept>

namespace roomd {

KeyChecker::KeyChecker(TaskRunner* tasks, Verify verify, std::size_t capacity)
    : tasks_(tasks), verify_(std::move(verify)), capacity_(capacity) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot be initialised");
  randombytes_buf(secret_.data(), secret_.size());
}

std::size_t KeyChecker::DigestHash::operator()(const Digest& d) const {
  std::size_t h;  // the digest is already uniformly random
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

KeyChecker::Digest KeyChecker::digest(const std::string& hash, const std::string& key) const {
  // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
  Digest out;
  crypto_generichash_state state;
  crypto_generichash_init(&state, secret_.data(), secret_.size(), out.size());
  std::uint64_t hash_len = hash.size();
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(&hash_len), sizeof hash_len);
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(hash.data()), hash.size());
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_generichash_final(&state, out.data(), out.size());
  sodium_memzero(&state, sizeof state);
  return out;
}

std::optional<bool> KeyChecker::cached(const std::string& hash, const std::string& key) const {
  auto it = answers_.find(digest(hash, key));
  if (it == answers_.end()) return std::nullopt;
  ++answers_reused_;
  return it->second;
}

bool KeyChecker::in_flight(const std::string& hash, const std::string& key) const {
  return waiting_.contains(digest(hash, key));
}

void KeyChecker::remember(const Digest& d, bool ok) {
  if (capacity_ == 0) return;
  // Right and wrong answers are forgotten separately: guesses only push out guesses.
  auto& order = ok ? right_order_ : wrong_order_;
  if (answers_.emplace(d, ok).second) order.push_back(d);
  while (order.size() > capacity_) {
    answers_.erase(order.front());
    order.pop_front();
  }
}

void KeyChecker::check(const std::string& hash, const std::string& key, std::function<void(bool)> done) {
  Digest d = digest(hash, key);
  if (auto it = answers_.find(d); it != answers_.end()) {
    ++answers_reused_;
    return done(it->second);
  }
  auto [waiters, first] = waiting_.try_emplace(d);
  waiters->second.push_back(std::move(done));
  if (!first) {
    ++answers_reused_;  // an identical check is in the pool: share its answer
    return;
  }
  ++checks_run_;
  tasks_->submit<bool>([verify = verify_, hash, key] { return verify(hash, key); },
                       [this, d](bool ok) {
                         remember(d, ok);
                         auto node = waiting_.extract(d);
                         for (auto& waiter : node.mapped()) waiter(ok);
                       },
                       Lane::key_checks);
}

}  // namespace roomd
