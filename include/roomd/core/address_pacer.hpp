// AddressPacer: how many history lookups (pages and searches) one client address may make.
//
// Each connection has its own lookup budget (Router's per-session bucket), but one address may
// hold hundreds of connections (limits.max_clients_per_ip), and hundreds of budgets together are
// a flood: 256 connections searching at 20/s each are 5,000 searches a second. History lookups
// are the ones that read the disk and answer with up to a page of messages. So each source
// address also has a budget for them, `rate` a second after `burst` at once. Over it a lookup is
// not refused but given the address's next free slot: reserve() says how long it waits. Slots are
// handed out in the order lookups arrive (virtual scheduling, as in GCRA), so waiters need no
// retries and a busy address costs O(1) per lookup, however many of its connections wait. Sources
// are the key-guess budget's (GuessThrottle::source_of).
//
// The same arithmetic serves the connection budget (server.connect_rate), through admit().
//
// Pure logic: time comes from the caller. A source is forgotten once it has its whole burst
// again, so the table holds only addresses that looked things up recently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace roomd {

class AddressPacer {
 public:
  struct Settings {
    double rate = 100;           // history lookups per second per address; 0: no address budget
    std::uint32_t burst = 200;   // at once, before they wait (defaults: limits.address_history_*)
  };

  explicit AddressPacer(Settings settings) : settings_(settings) {}

  // A lookup from `source` at `now_ms`: takes the source's next slot and returns how many
  // milliseconds until it is due (0: now).
  std::uint64_t reserve(const std::string& source, std::uint64_t now_ms);
  // The same budget for something that is refused rather than made to wait (a connection):
  // takes the source's slot only if it is due now (returns 0); otherwise takes nothing and
  // returns how many milliseconds until one is, so refusals never push the source's slots back.
  std::uint64_t admit(const std::string& source, std::uint64_t now_ms);
  // Reload: slots already given keep their times; later ones follow the new limits.
  void reconfigure(Settings settings) { settings_ = settings; }

  std::size_t sources() const { return next_due_.size(); }

 private:
  void forget_recovered(double now_ms);
  double interval_ms() const;   // between two admissions at the rate
  double tolerance_ms() const;  // how far ahead of its schedule the burst lets an address be
  double& due_of(const std::string& source, double now_ms);  // its next due time, added at now

  Settings settings_;
  // Per source: when its next slot would be due if it had no burst (the "theoretical arrival
  // time"); at or before now, the source has its whole burst.
  std::unordered_map<std::string, double> next_due_;
  std::size_t sweep_at_ = 1024;  // table size that triggers the next sweep (amortized O(1))
};

}  // namespace roomd
