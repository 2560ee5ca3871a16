// Server: the loop's owner. It holds the config, the router, the listeners, every connection,
// the signal handlers, the console and the timers, and it is the only place that creates or
// destroys a connection. Each loop turn ends in named phases over the turn's lists
// (turn_queues.hpp): resume, retire ended sessions, write, history batch, free.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "roomd/app/config.hpp"
#include "roomd/app/heap_trim.hpp"
#include "roomd/app/lame_duck.hpp"
#include "roomd/app/metrics.hpp"
#include "roomd/cluster/cluster_client.hpp"
#include "roomd/net/connection.hpp"
#include "roomd/history/history_service.hpp"
#include "roomd/offload/key_helper.hpp"
#include "roomd/net/listener.hpp"
#include "roomd/net/http_endpoint.hpp"
#include "roomd/net/lazy_window.hpp"
#include "roomd/net/tls.hpp"
#include "roomd/base/delay_queue.hpp"
#include "roomd/base/log_throttle.hpp"
#include "roomd/core/address_pacer.hpp"
#include "roomd/core/router.hpp"
#include "roomd/base/uv.hpp"
#include "roomd/offload/worker_pool.hpp"

namespace roomd {

class Console;

struct ServerStats {
  std::uint64_t connections_total = 0;
  std::uint64_t rejected = 0;          // refused with server_full (fd_refused included)
  std::uint64_t fd_refused = 0;        // ... because file descriptors ran low
  std::uint64_t connect_rate_refused = 0;  // refused with rate_limited: over server.connect_rate
  std::uint64_t accept_failures = 0;   // of listeners already closed (open ones count their own)
  // The queued output the budget limits, as the last turn's check left it (mid-turn a turn's
  // own output is not checked yet): at most limits.max_total_outbound_bytes.
  std::uint64_t budgeted_bytes_checked = 0;
  ConnectionCounters connections;  // kept by the connections themselves
};

struct ServerOptions {
  Config config;
  std::optional<std::string> config_path;     // absent: the embedded default
  std::vector<std::string> listen_override;   // --listen
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens the history store (throws with a reason when it cannot), binds the listeners and
  // runs the loop until shutdown. Returns the exit status.
  int run();

  Router& router() { return *router_; }
  const Config& config() const { return config_; }
  std::uint64_t now_ms() const { return uv_now(loop_.get()); }
  uv_loop_t* loop() { return loop_.get(); }

  // For the console and signals.
  void reload();
  void shutdown();
  // SIGUSR2: lame duck for a rolling restart (server_lame_duck.cpp): stop accepting, tell every
  // client when it will be closed, close them one by one, then shut down. Once: a second does nothing.
  void lame_duck();
  std::string stats_line() const;  // the console's `stats`: key=value pairs
  ordered_json stats_json() const;  // the same figures for the admin `stats` op
  // The [http] endpoint's answers (server_metrics.cpp).
  std::string metrics_text() const;  // GET /metrics: the Prometheus text format
  HttpResponse healthz() const;      // GET /healthz: the loop turns and has not stalled lately
  HttpResponse readyz() const;       // GET /readyz: listeners and history store open

 private:
  bool load_tls(bool reloading);
  void load_websocket_site(bool reloading);
  void open_listeners();
  void open_http();  // [http] listen, if set (server_metrics.cpp)
  // Connections by transport (tcp, unix, tls, ws, wss), for /metrics.
  void note_accepted(ConnectionId id, const Listener& listener);
  void note_freed(ConnectionId id);
  void on_connection(Listener& listener);
  // Why a new connection is refused (its error body), or nothing: admitted.
  std::optional<ordered_json> refusal(Connection& conn, const std::string& peer, const std::string& ip);
  std::uint64_t accept_failures() const;
  // The end of each loop turn, phase by phase (turn_queues.hpp).
  void on_turn();
  void start_upgraded_sessions();
  void resume_connections();
  void retire_ended_sessions();
  bool enforce_output_budget();
  void write_pending();
  void flush_lazy();
  void free_closed_connections();
  Connection* find_connection(ConnectionId id);
  void on_tick();
  std::uint64_t tick_interval_ms() const;
  void on_lag_probe();
  void trim_heap_when_quiet(std::uint64_t now);
  void update_status();
  // Lame duck (server_lame_duck.cpp): one client told its closing time; the timer's work.
  void tell_lame_duck(Connection& conn);
  void close_lame_duck_due();

  struct LoopDeleter {
    void operator()(uv_loop_t* loop) const;
  };

  ServerOptions options_;
  Config config_;
  std::unique_ptr<uv_loop_t, LoopDeleter> loop_;
  std::unique_ptr<KeyHelpers> key_helpers_;  // outlives the pool tasks that use it
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<HistoryService> history_;   // with history.path
  std::unique_ptr<DelayQueue> delays_;        // paced requests wait here
  std::unique_ptr<ClusterClient> cluster_;    // with [cluster]
  std::unique_ptr<Router> router_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::shared_ptr<TlsContext> tls_context_;  // new TLS connections get this one
  std::shared_ptr<const WebSocketSite> websocket_site_;  // and new WebSocket ones this
  std::unordered_map<ConnectionId, std::unique_ptr<Connection>> connections_;
  std::unordered_map<std::string, std::uint32_t> clients_per_ip_;
  AddressPacer connects_;  // server.connect_rate, per client address
  // File descriptors: the soft limit, and how many below it new connections are refused, so
  // the history store, the helpers and refusals themselves always find one.
  std::uint64_t fd_limit_ = 0;
  std::uint64_t fd_reserve_ = 0;
  // Refusals come in floods: one log line per interval for each kind, with its count.
  LogThrottle full_log_{10000};
  LogThrottle fd_log_{10000};
  LogThrottle connect_rate_log_{10000};
  std::size_t admitted_ = 0;
  std::uint64_t next_connection_id_ = 1;
  std::vector<char> read_buffer_;
  ConnectionLimits connection_limits_;  // from config_.limits, refreshed on reload
  TurnQueues turn_;
  ConnectionContext connection_context_;

  std::unique_ptr<uv::Prepare> end_of_turn_;
  std::unique_ptr<uv::Idle> keep_awake_;  // active while a phase left work for the next turn
  std::unique_ptr<uv::Timer> ticker_;
  std::unique_ptr<uv::Timer> lazy_flush_;  // writes the turn's lazy list (presence) a few ms later
  bool lazy_flush_armed_ = false;
  LazyWindow lazy_window_;  // how long the lazy list waits: longer while flushes are busy
  std::unique_ptr<uv::Timer> shutdown_deadline_;
  std::unique_ptr<uv::Timer> watchdog_;
  std::unique_ptr<uv::Timer> lag_probe_;
  std::uint64_t lag_probe_expected_ns_ = 0;
  std::vector<std::uint32_t> lag_samples_us_;  // a ring of the last probes' delays
  std::size_t lag_next_ = 0;
  std::uint64_t rate_window_ms_ = 0;           // messages/s over the last status window
  std::uint64_t rate_window_count_ = 0;
  double messages_per_s_ = 0;
  std::uint64_t last_status_ms_ = 0;
  HeapTrimPolicy heap_trim_;
  std::uint64_t heap_check_ms_ = 0;      // the previous heap check (loop time) ...
  std::uint64_t heap_check_idle_ns_ = 0;  // ... and the loop's idle time then (uv_metrics_idle_time)
  std::vector<std::unique_ptr<uv::Signal>> signals_;
  std::unique_ptr<Console> console_;
  bool shutting_down_ = false;
  std::unique_ptr<LameDuckPlan> lame_duck_;  // from SIGUSR2 on: who is closed when
  std::unique_ptr<uv::Timer> lame_duck_timer_;
  std::uint64_t started_ms_ = 0;
  ServerStats stats_;

  // The operators' endpoint and what only it shows (server_metrics.cpp).
  static constexpr std::size_t kTransports = 5;  // tcp, unix, tls, ws, wss
  std::unique_ptr<HttpEndpoint> http_;
  Histogram lag_histogram_{std::vector<double>{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                               2.5, 5, 10}};  // seconds late, fed by the lag probe
  std::unordered_map<ConnectionId, std::uint8_t> transport_of_;  // open connections' transports
  std::uint64_t open_by_transport_[kTransports] = {};
  std::uint64_t accepted_by_transport_[kTransports] = {};
};

}  // namespace roomd
