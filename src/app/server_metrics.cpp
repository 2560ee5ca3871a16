// Server: the operators' HTTP endpoint ([http]): /metrics in the Prometheus text format,
// /healthz and /readyz, and the per-transport connection counts only /metrics shows.
#include <array>

#include "roomd/app/metrics.hpp"
#include "roomd/app/server.hpp"
#include "roomd/base/log.hpp"
#include "roomd_build_config.hpp"

namespace roomd {

namespace {
constexpr std::array<const char*, 5> kTransportNames = {"tcp", "unix", "tls", "ws", "wss"};

std::uint8_t transport_index(const ListenerRole& role, bool is_unix) {
  if (role.websocket) return role.tls ? 4 : 3;
  if (role.tls) return 2;
  return is_unix ? 1 : 0;
}

// /healthz fails while the lag probe has seen the loop this late within this many probes
// (100 ms apart): a loop that stalled for a second in the last 10 s is not healthy, even
// though it is turning again by the time it answers.
constexpr std::uint32_t kStalledUs = 1'000'000;
constexpr std::size_t kHealthWindowProbes = 100;

HttpResponse text(int status, std::string body) {
  return {.status = status, .content_type = "text/plain; charset=utf-8", .body = std::move(body) + "\n"};
}

// Only with [cluster] (docs/cluster.md, Figures): a single node shows none of these.
void cluster_metrics(PrometheusWriter& w, const ClusterClient& cluster, const RouterStats& router) {
  const auto& c = cluster.stats();
  auto d = [](auto v) { return static_cast<double>(v); };
  w.gauge("roomd_cluster_available", "1 while Redis is reachable and says into clustered rooms are taken, else 0.",
          cluster.available() ? 1 : 0);
  w.counter("roomd_cluster_connects_total", "Times this node's two links to Redis came up ready.", d(c.connects));
  w.counter("roomd_cluster_link_failures_total", "Links to Redis that failed (refused, reset, timed out).",
            d(c.link_failures));
  w.counter("roomd_cluster_says_total", "Says into clustered rooms that Redis answered (duplicates included).",
            d(c.says));
  w.counter("roomd_cluster_says_refused_total", "Says into clustered rooms refused with unavailable.",
            d(c.says_refused));
  w.counter("roomd_cluster_says_retried_total", "Says sent to Redis again with their id after a lost reply.",
            d(c.says_retried));
  w.counter("roomd_cluster_say_batches_total",
            "roomd_say_batch calls to Redis (cluster_says over this: the mean batch of says).", d(c.say_batches));
  w.gauge("roomd_cluster_says_queued", "Says waiting for their room's batch in flight to Redis to be answered.",
          d(c.says_queued));
  w.counter("roomd_cluster_delivered_total", "Messages of clustered rooms handed to this node's router, in seq order.",
            d(c.delivered));
  w.counter("roomd_cluster_gap_fills_total", "Stream reads (XRANGE) for messages the subscription missed.",
            d(c.gap_fills));
  w.counter("roomd_cluster_skipped_total", "Seqs skipped because Redis' stream no longer had them.", d(c.skipped));
  // Members, presence and nicks across nodes; persisted rooms' durability.
  w.counter("roomd_cluster_nick_claims_total", "Nicks asked of the cluster for this node's clients.", d(c.nick_claims));
  w.counter("roomd_cluster_nicks_taken_total", "Nick claims refused because another node's client holds the nick.",
            d(c.nicks_taken));
  w.counter("roomd_cluster_nicks_refused_total", "Nick changes refused with unavailable: Redis was unreachable.",
            d(router.nicks_unavailable));
  w.counter("roomd_cluster_nicks_lost_total",
            "Nicks held here that another node's client took after their lease lapsed (their clients became guests).",
            d(c.nicks_lost));
  w.counter("roomd_cluster_presence_in_total", "Other nodes' member changes applied here.", d(c.presence_in));
  w.counter("roomd_cluster_member_reads_total", "Rooms' members read whole from Redis (a watch, a reconnect, a gap).",
            d(c.member_reads));
  w.counter("roomd_cluster_sweeps_total", "Nodes whose lease ran out that this node removed.", d(c.sweeps));
  w.counter("roomd_cluster_swept_members_total", "Room members of those nodes removed (each sent as a leave).",
            d(c.swept_members));
  w.counter("roomd_cluster_reregistered_total",
            "Times this node found itself swept by the others and registered its members and nicks again.",
            d(c.reregistered));
  w.counter("roomd_cluster_conflicts_total",
            "Seqs a persisted room's new epoch gave again that this node's store holds from the old one.",
            d(c.conflicts));
  w.counter("roomd_cluster_topics_total", "Topics set by this node's clients, stored in Redis.", d(c.topics));
  w.counter("roomd_cluster_whispers_out_total", "Whispers handed to another node through Redis.", d(c.whispers_out));
  w.counter("roomd_cluster_whispers_in_total", "Whispers from another node to this node's clients.", d(c.whispers_in));
  w.gauge("roomd_cluster_redis_durable",
          "1 if Redis said appendonly yes and appendfsync always at the last connect, else 0.", c.redis_durable ? 1 : 0);
}
}  // namespace

void Server::open_http() {
  if (config_.http.listen.empty()) return;
  auto address = parse_listen_address(config_.http.listen);
  if (!address) throw std::runtime_error("http.listen: bad address '" + config_.http.listen + "'");
  try {
    http_ = std::make_unique<HttpEndpoint>(
        loop(), *address, HttpLimits{.idle_timeout_s = config_.http.idle_timeout_s},
        std::vector<HttpRoute>{
            {"/metrics", [this] { return HttpResponse{.status = 200,
                                                       .content_type = "text/plain; version=0.0.4; charset=utf-8",
                                                       .body = metrics_text()}; }},
            {"/healthz", [this] { return healthz(); }},
            {"/readyz", [this] { return readyz(); }},
        });
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("http: ") + e.what());
  }
  log::info("http: serving /metrics, /healthz and /readyz on " + http_->bound_name());
}

void Server::note_accepted(ConnectionId id, const Listener& listener) {
  std::uint8_t t = transport_index(listener.role(), listener.is_unix());
  transport_of_[id] = t;
  ++open_by_transport_[t];
  ++accepted_by_transport_[t];
}

void Server::note_freed(ConnectionId id) {
  auto it = transport_of_.find(id);
  if (it == transport_of_.end()) return;  // its accept failed
  --open_by_transport_[it->second];
  transport_of_.erase(it);
}

HttpResponse Server::healthz() const {
  // Answering at all means the loop turns: the request was read and served on it.
  std::uint32_t worst = newest_max(lag_samples_us_, lag_next_, kHealthWindowProbes);
  if (worst > kStalledUs)
    return text(503, "loop stalled: a 100 ms timer fired " + std::to_string(worst / 1000) + " ms late within the last " +
                         std::to_string(kHealthWindowProbes / 10) + " s");
  return text(200, "ok");
}

HttpResponse Server::readyz() const {
  if (shutting_down_) return text(503, "shutting down");
  // Draining for a restart: out of the load balancer, though the clients still here are served.
  if (lame_duck_)
    return text(503, "lame_duck: draining for a restart; " + std::to_string(connections_.size()) + " connections left");
  if (listeners_.empty()) return text(503, "no listeners open");
  // The store is opened before the listeners, and a store that cannot open stops the start;
  // it is closed only after the loop stops. So while this can answer, a configured one is open.
  if (!config_.history.path.empty() && !history_) return text(503, "history store not open");
  return text(200, "ready");
}

std::string Server::metrics_text() const {
  const auto& r = router_->stats();
  const auto& c = stats_.connections;
  auto rooms = router_->rooms();
  std::size_t members = 0;
  for (const auto& room : rooms) members += room.members;
  const ProcessFigures process = read_process_figures();
  auto d = [](auto v) { return static_cast<double>(v); };

  PrometheusWriter w;
  w.family("roomd_build_info", "gauge", "Always 1; the version is a label.");
  w.sample("roomd_build_info", {{"version", ROOMD_VERSION}}, 1);
  w.gauge("roomd_uptime_seconds", "Seconds since the daemon started serving.", d((now_ms() - started_ms_) / 1000));

  w.family("roomd_connections_open", "gauge", "Client connections open now, by transport (closing ones included).");
  for (std::size_t t = 0; t < kTransports; ++t)
    w.sample("roomd_connections_open", {{"transport", kTransportNames[t]}}, d(open_by_transport_[t]));
  w.family("roomd_connections_accepted_total", "counter", "Client connections accepted, by transport.");
  for (std::size_t t = 0; t < kTransports; ++t)
    w.sample("roomd_connections_accepted_total", {{"transport", kTransportNames[t]}}, d(accepted_by_transport_[t]));
  w.gauge("roomd_clients", "Clients admitted now (what server.max_clients limits).", d(admitted_));
  w.gauge("roomd_lame_duck", "1 while draining for a restart (SIGUSR2, lame duck), else 0.", lame_duck_ ? 1 : 0);
  w.counter("roomd_connections_rejected_total", "Connections refused with server_full.", d(stats_.rejected));
  w.counter("roomd_connections_rejected_fd_limit_total",
            "Of them, refused because file descriptors ran low (within the reserve of the limit).",
            d(stats_.fd_refused));
  w.counter("roomd_connections_rate_limited_total",
            "Connections refused with rate_limited: their address was over server.connect_rate.",
            d(stats_.connect_rate_refused));
  w.counter("roomd_accept_failures_total", "Accepts that failed on a listener (out of file descriptors, memory).",
            d(accept_failures()));

  w.gauge("roomd_rooms", "Rooms that exist now.", d(rooms.size()));
  w.gauge("roomd_room_members", "Members of all rooms together (a client in two rooms counts twice).", d(members));
  w.counter("roomd_requests_total", "Requests the router served.", d(r.requests));
  w.counter("roomd_messages_in_total", "Says accepted.", d(r.messages_in));
  w.counter("roomd_messages_delivered_total", "Message copies handed to recipients' outboxes.", d(r.deliveries));
  w.counter("roomd_bytes_out_total", "Bytes written to clients.", d(c.bytes_out));
  w.gauge("roomd_outbound_queued_bytes", "Output queued for all clients now.", d(c.queued_bytes));
  w.counter("roomd_outbound_budget_cuts_total",
            "Clients cut because all queued output was over limits.max_total_outbound_bytes.", d(c.budget_cuts));
  w.counter("roomd_slow_consumers_total", "Clients found slow consumers (disconnected or skipping broadcasts).",
            d(c.slow_consumers));
  w.counter("roomd_dropped_messages_total", "Broadcasts skipped for slow consumers under slow_consumer = \"drop\".",
            d(c.dropped));
  w.counter("roomd_rate_limited_total", "Says and whispers refused with rate_limited.", d(r.rate_limited));
  w.counter("roomd_churn_refused_total", "Nick changes and leaves refused with rate_limited (limits.churn_rate).",
            d(r.churn_refused));
  w.counter("roomd_queries_paced_total", "Requests that waited for their connection's query budget.",
            d(r.queries_paced));
  w.counter("roomd_history_paced_by_address_total", "History requests that waited for their address's budget.",
            d(r.history_paced_by_address));
  w.counter("roomd_presence_summaries_total", "Presence summaries sent by rooms above the presence threshold.",
            d(r.presence_summaries));
  w.counter("roomd_resumes_total", "Joins with since answered resumed: true.", d(r.resumes));
  w.counter("roomd_resumes_refused_total", "Joins with since answered resumed: false.", d(r.resumes_refused));
  w.counter("roomd_says_duplicate_total",
            "Says answered as resends of an earlier say with the same msg_id (nothing published).", d(r.says_duplicate));
  w.counter("roomd_whispers_duplicate_total",
            "Whispers answered as resends of an earlier whisper with the same msg_id (not delivered again).",
            d(r.whispers_duplicate));
  w.gauge("roomd_says_in_flight", "Says into clustered rooms sent to Redis and not answered yet, all clients together.",
          d(router_->says_in_flight()));
  w.counter("roomd_key_checks_total", "Argon2id room-key checks run.", d(router_->key_checker().checks_run()));
  w.counter("roomd_key_answers_reused_total", "Room-key checks answered from memory, without a check.",
            d(router_->key_checker().answers_reused()));
  w.counter("roomd_key_guesses_refused_total", "Keyed joins refused because their address ran out of key guesses.",
            d(router_->guess_throttle().refused()));
  w.gauge("roomd_worker_tasks", "Worker-pool tasks queued or running now.", d(pool_->in_flight()));
  w.gauge("roomd_worker_tasks_waiting", "Of them, tasks waiting for a key-check or query slot.", d(pool_->waiting()));
  w.counter("roomd_tls_handshakes_total", "TLS handshakes completed.", d(c.tls_handshakes));
  w.counter("roomd_tls_handshake_failures_total", "TLS handshakes that failed or timed out.",
            d(c.tls_handshake_failures));
  w.counter("roomd_websocket_upgrades_total", "WebSocket upgrades accepted.", d(c.websocket_upgrades));
  w.counter("roomd_websocket_refused_total", "WebSocket upgrade requests refused (Origin, version, malformed).",
            d(c.websocket_refused));
  w.counter("roomd_websocket_pages_total", "Web client files served by the WebSocket listeners.", d(c.websocket_pages));
  w.histogram("roomd_loop_lag_seconds", "How late the event loop's 100 ms probe timer fired.", lag_histogram_);
  w.gauge("roomd_process_resident_memory_bytes", "Resident memory (from /proc/self/statm).", d(process.resident_bytes));
  w.gauge("roomd_process_open_fds", "Open file descriptors (entries of /proc/self/fd).", d(process.open_fds));
  w.counter("roomd_process_cpu_seconds_total", "User and system CPU time of the daemon process.", process.cpu_seconds);
  w.counter("roomd_http_requests_total", "Requests this HTTP endpoint answered.", d(http_ ? http_->requests() : 0));
  if (cluster_) cluster_metrics(w, *cluster_, router_->stats());
  return w.take();
}

}  // namespace roomd
