// Server: lame duck (SIGUSR2), for rolling restarts (docs/operations.md, "Lame duck"). As NATS
// does it: the listeners close (a load balancer sees connections refused and /readyz fail),
// every client is told when it will be closed (system lame_duck, reconnect_ms), nobody is
// closed during the grace period, then the clients are closed one at a time over the rest of
// server.lame_duck_duration_s (LameDuckPlan), so their reconnects reach the other nodes as a
// trickle. When the last connection is gone, or at the end of the duration, roomd shuts down
// as on SIGTERM and exits 0. A SIGTERM meanwhile shuts down at once.
#include <algorithm>
#include <random>

#include "roomd/app/server.hpp"
#include "roomd/base/log.hpp"
#include "roomd/protocol/wire.hpp"

namespace roomd {

void Server::lame_duck() {
  if (shutting_down_) return;  // a SIGTERM came first: that goes on
  if (lame_duck_) {
    log::notice("lame duck: already draining (" + std::to_string(connections_.size()) +
                " connections left); the signal changes nothing");
    return;
  }
  const auto& s = config_.server;
  const std::uint64_t now = now_ms();
  std::vector<std::uint64_t> ids;
  ids.reserve(connections_.size());
  for (const auto& [id, conn] : connections_) ids.push_back(id);
  lame_duck_ = std::make_unique<LameDuckPlan>(now, std::uint64_t{s.lame_duck_grace_s} * 1000,
                                              std::uint64_t{s.lame_duck_duration_s} * 1000, std::move(ids),
                                              std::random_device{}());
  stats_.accept_failures = accept_failures();  // what /metrics keeps showing once the listeners are gone
  listeners_.clear();  // new connections are refused (Unix socket paths removed); the port is free for the next roomd
  log::notice("lame duck (SIGUSR2): listeners closed; " + std::to_string(connections_.size()) +
              " connections will be closed one by one from " + std::to_string(s.lame_duck_grace_s) + " s to " +
              std::to_string(s.lame_duck_duration_s) + " s from now, then roomd exits");
  // Sessions get their time now; a WebSocket still upgrading gets it with its welcome.
  for (auto& [id, conn] : connections_)
    if (conn->in_session()) tell_lame_duck(*conn);
  lame_duck_timer_ = std::make_unique<uv::Timer>(loop(), [this] { close_lame_duck_due(); });
  close_lame_duck_due();  // arms the timer (and closes at once with no grace)
  update_status();
}

void Server::tell_lame_duck(Connection& conn) {
  const std::uint64_t now = now_ms();
  const std::uint64_t at = lame_duck_->close_at(conn.id()).value_or(now);
  conn.send(make_event(wire::system_lame_duck(at > now ? at - now : 0)));
}

// The plan's timer: closes the connections whose time has come, then waits for the next (or
// the end of the duration, where whatever is left is shut down).
void Server::close_lame_duck_due() {
  if (shutting_down_) return;
  const std::uint64_t now = now_ms();
  if (now >= lame_duck_->end_ms()) {
    // Those closed already may still be writing or waiting for their peer's FIN (shutdown()
    // gives them its deadline); only sessions still going are worth a warning.
    const auto live = std::count_if(connections_.begin(), connections_.end(),
                                    [](const auto& entry) { return entry.second->in_session(); });
    if (live > 0)
      log::warning("lame duck: " + std::to_string(live) +
                   " clients still connected at the end of server.lame_duck_duration_s; shutting down");
    else
      log::info("lame duck: the end of server.lame_duck_duration_s; " + std::to_string(connections_.size()) +
                " connections still closing");
    return shutdown();
  }
  for (std::uint64_t id : lame_duck_->take_due(now))
    if (Connection* c = find_connection(id)) {
      if (c->admitted()) log::info("lame duck: closing client " + c->peer());
      c->finish(CloseReason::lame_duck);
    }
  const std::uint64_t next = std::min(lame_duck_->next_due().value_or(lame_duck_->end_ms()), lame_duck_->end_ms());
  lame_duck_timer_->start(next > now ? next - now : 0, 0);
}

}  // namespace roomd
