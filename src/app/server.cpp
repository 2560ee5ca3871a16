// Server: owns the loop and everything on it; accepts, limits, reloads and shuts down.
#include "roomd/app/server.hpp"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/resource.h>
#include <unistd.h>

#include "roomd/protocol/wire.hpp"
#include "roomd/app/console_commands.hpp"
#include "roomd/net/console.hpp"
#include "roomd/net/output_budget.hpp"
#include "roomd/offload/keys.hpp"
#include "roomd/base/log.hpp"
#include "roomd/app/notify.hpp"
#include "roomd_build_config.hpp"

namespace roomd {

namespace {
constexpr std::size_t kReadBufferBytes = 64 * 1024;
constexpr std::uint64_t kShutdownDeadlineMs = 5000;

std::uint64_t wall_clock_ms() {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

RouterSettings router_settings(const Config& c) {
  RouterSettings s;
  s.version = ROOMD_VERSION;
  s.motd = c.server.motd;
  s.dynamic_rooms = c.server.dynamic_rooms;
  s.rate = c.limits.rate;
  s.burst = c.limits.burst;
  s.replay = c.history.replay;
  s.replay_max = c.history.replay_max;
  s.max_history = c.history.max_messages_per_room;
  s.max_rooms = c.server.max_rooms;
  s.member_page = c.limits.member_page;
  s.presence_threshold = c.limits.presence_threshold;
  s.presence_interval_ms = c.limits.presence_interval_ms;
  s.max_frame_bytes = c.limits.max_frame_bytes;
  s.key_guesses = {c.limits.key_guesses, c.limits.key_guess_interval_s};
  s.query_rate = c.limits.query_rate;
  s.query_burst = c.limits.query_burst;
  s.churn_rate = c.limits.churn_rate;
  s.churn_burst = c.limits.churn_burst;
  s.says_in_flight = c.limits.says_in_flight;
  s.address_history = {c.limits.address_history_rate, c.limits.address_history_burst};
  return s;
}

ConnectionLimits connection_limits(const Config& c) {
  return {.max_frame_bytes = c.limits.max_frame_bytes,
          .flow = {.max_outbound_bytes = c.limits.max_outbound_bytes, .slow_consumer = c.limits.slow_consumer},
          .idle_timeout_s = c.limits.idle_timeout_s,
          .tls_handshake_timeout_ms = c.tls.handshake_timeout_ms,
          .websocket_ping_interval_s = c.websocket.ping_interval_s,
          .websocket_handshake_timeout_ms = c.websocket.handshake_timeout_ms};
}

TlsFiles tls_files(const TlsConfig& c) {
  return {.cert = c.cert, .key = c.key, .ca = c.ca, .min_version = c.min_version};
}

// What a persisted room's replay ring holds: what a join or a resume may replay.
std::uint32_t replay_ring(const Config& c) { return std::max({c.history.replay, c.history.replay_max, 1u}); }

// A room whose seq and epoch are the cluster's (its stored epoch is then its own, not the database's).
bool clustered(const Config& c, const RoomConfig& room) { return c.cluster.enabled && room.cluster; }

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}
}  // namespace

void Server::LoopDeleter::operator()(uv_loop_t* loop) const {
  // Handles closed by members destroyed before the loop (a constructor that threw half way)
  // get their close callbacks here, which free them; then the loop can close.
  uv_run(loop, UV_RUN_NOWAIT);
  uv_loop_close(loop);
  delete loop;
}

Server::Server(ServerOptions options)
    : options_(std::move(options)),
      config_(options_.config),
      loop_(new uv_loop_t{}),
      connects_({config_.server.connect_rate, config_.server.connect_burst}) {
  uv::check(uv_loop_init(loop_.get()), "uv_loop_init");
  // (main raised the soft limit to the hard one already.) New connections are refused while
  // the descriptor they got is within the reserve of it: the store, the helpers and the HTTP
  // endpoint keep descriptors to work with, and a refusal can still be written.
  if (rlimit nofile{}; getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    fd_limit_ = nofile.rlim_cur;
    fd_reserve_ = std::clamp<std::uint64_t>(fd_limit_ / 16, 8, 256);
    if (config_.server.max_clients + fd_reserve_ + 32 > fd_limit_)
      log::warning("the file descriptor limit (" + std::to_string(fd_limit_) + ") leaves room for about " +
                   std::to_string(fd_limit_ > fd_reserve_ + 32 ? fd_limit_ - fd_reserve_ - 32 : 0) +
                   " clients, fewer than server.max_clients (" + std::to_string(config_.server.max_clients) +
                   "): raise it (LimitNOFILE=) or lower max_clients");
  }
  // The time the loop waits in epoll: how quiet it is, for the heap trim (trim_heap_when_quiet).
  uv::check(uv_loop_configure(loop_.get(), UV_METRICS_IDLE_TIME), "uv_loop_configure");
  if (!options_.listen_override.empty()) {
    config_.server.listen = options_.listen_override;
    config_.server.listen_flags.assign(config_.server.listen.size(), ListenFlags{});
    config_.server.tls.clear();  // --listen addresses are plain
    config_.server.websocket.clear();
  }
  read_buffer_.resize(kReadBufferBytes);
  connection_limits_ = connection_limits(config_);
  // Key checks and history queries each leave a core to the loop: at most cores - 1 of
  // each at once (the hashing and the queries themselves run in idle-priority helpers).
  std::size_t cores = std::max<unsigned>(1, std::thread::hardware_concurrency());
  const std::size_t heavy_slots = std::clamp<std::size_t>(cores - 1, 1, config_.server.workers);
  pool_ = std::make_unique<WorkerPool>(loop_.get(), heavy_slots, heavy_slots);
  // Key checks run in helper processes (started on first use), one per heavy slot.
  key_helpers_ = std::make_unique<KeyHelpers>("/proc/self/exe", heavy_slots);
  delays_ = std::make_unique<DelayQueue>(loop_.get());
  RouterServices services{
      .clock = Clock{wall_clock_ms, [this] { return now_ms(); }},
      .tasks = pool_.get(),
      .verify_key = [helpers = key_helpers_.get()](const std::string& hash,
                                                   const std::string& key) { return helpers->verify(hash, key); },
      .stats = [this] { return stats_json(); },
      .guesses_throttled =
          [](const std::string& source, std::uint64_t retry_s) {
            log::warning("key guesses from " + source + " refused for " + std::to_string(retry_s) +
                         " s: too many wrong keys");
          },
      .after = [delays = delays_.get()](std::uint64_t delay_ms,
                                        std::function<void()> callback) { delays->after(delay_ms, std::move(callback)); },
  };
  if (config_.cluster.enabled) {
    const auto& c = config_.cluster;
    ClusterSettings settings{.redis = *parse_listen_address(c.redis),
                             .password = c.password,
                             .node_id = c.node_id,
                             .heartbeat_ms = c.heartbeat_ms,
                             .max_messages_per_room = config_.history.max_messages_per_room,
                             .recent = replay_ring(config_)};
    // The router exists by the time the client reports anything (it starts in run()).
    cluster_ = std::make_unique<ClusterClient>(
        loop_.get(), std::move(settings),
        ClusterSink{.synced = [this](const std::string& room, const RoomState& state) { router_->cluster_synced(room, state); },
                    .deliver = [this](const std::string& room, std::uint64_t seq, const std::string& epoch,
                                      std::string line) { router_->cluster_deliver(room, seq, epoch, std::move(line)); },
                    .lost = [this] { router_->cluster_lost(); },
                    .members = [this](const std::string& room,
                                      std::vector<std::string> others) { router_->cluster_members(room, std::move(others)); },
                    .presence = [this](const std::string& room,
                                       const ClusterPresence& presence) { router_->cluster_presence(room, presence); },
                    .nick_lost = [this](const std::string& nick) { router_->cluster_nick_lost(nick); },
                    .topic = [this](const std::string& room,
                                    const std::optional<ClusterTopic>& topic) { router_->cluster_topic(room, topic); },
                    .whisper = [this](const ClusterWhisper& whisper) { router_->cluster_whisper(whisper); }});
    services.cluster = cluster_.get();
  }
  if (!config_.history.path.empty()) {
    // Queries go to idle-priority helper processes, one per heavy slot, and to the pool when
    // a helper cannot answer (history_service.hpp).
    history_ = std::make_unique<HistoryService>(loop_.get(), *pool_, config_.history.path, heavy_slots,
                                                config_.history.max_messages_per_room, "/proc/self/exe");
    services.persistence = history_.get();
    log::info("history in " + config_.history.path);
  }
  router_ = std::make_unique<Router>(router_settings(config_), config_.rooms, services);
  connection_context_ = {.loop = loop_.get(),
                         .limits = &connection_limits_,
                         .sessions = router_.get(),
                         .turn = &turn_,
                         .counters = &stats_.connections,
                         .read_buffer = uv_buf_init(read_buffer_.data(), static_cast<unsigned>(read_buffer_.size()))};
  // Persisted rooms go on where they stopped: seq after the stored maximum, replay ring filled;
  // clustered ones are followed from there (docs/cluster.md).
  if (history_)
    for (const auto& room : config_.rooms)
      if (room.persist)
        router_->restore(room.name, history_->load(room.name, replay_ring(config_), clustered(config_, room)));
}

Server::~Server() {
  // run() tears everything down; this covers a constructor-time or bind-time failure.
  http_.reset();
  listeners_.clear();
  for (auto& [id, c] : connections_) c->close_now();
  end_of_turn_.reset();
  keep_awake_.reset();
  ticker_.reset();
  lazy_flush_.reset();
  delays_.reset();
  cluster_.reset();
  shutdown_deadline_.reset();
  lame_duck_timer_.reset();
  signals_.clear();
  console_.reset();
  if (history_) history_->close();
  uv_run(loop_.get(), UV_RUN_DEFAULT);
}

// The [tls] context, built from its files. At start a failure is fatal; on reload (`reloading`)
// it is logged and the context in use stays.
bool Server::load_tls(bool reloading) {
  auto loaded = TlsContext::load(TlsContext::Side::server, tls_files(config_.tls));
  if (auto* why = std::get_if<std::string>(&loaded)) {
    if (!reloading) throw std::runtime_error("[tls]: " + *why);
    log::error("reload: [tls]: " + *why + "; keeping the certificate in use");
    return false;
  }
  tls_context_ = std::get<std::shared_ptr<TlsContext>>(std::move(loaded));
  log::notice(std::string(reloading ? "reload: " : "") + "TLS certificate: " + tls_context_->summary());
  return true;
}

// The WebSocket listeners' site: the allowed origins and the web client's files, read into
// memory here so that serving them never touches the disk on the loop.
void Server::load_websocket_site(bool reloading) {
  std::string web_root = config_.websocket.web_root;
  if (web_root.empty()) {
    // The installed client; a build that was not installed serves its source tree's.
    std::error_code ec;
    web_root = std::filesystem::is_directory(ROOMD_WEB_DIR, ec) ? ROOMD_WEB_DIR : ROOMD_SOURCE_WEB_DIR;
  }
  std::string warning;
  websocket_site_ = WebSocketSite::load(config_.websocket.origins, web_root, &warning);
  if (!warning.empty()) log::warning(std::string(reloading ? "reload: " : "") + warning + "; / answers 404");
  else log::info(std::string(reloading ? "reload: " : "") + "web client: " + std::to_string(websocket_site_->files.size()) +
                 " files from " + web_root);
}

void Server::open_listeners() {
  auto on_conn = [this](Listener& l) { on_connection(l); };
  // Decision: sockets from systemd win; the config's listeners are then not opened at all,
  // so a socket unit and a config can never fight over one address.
  auto activated = notify::activated_sockets();
  if (!activated.empty()) log::notice("socket activation: using " + std::to_string(activated.size()) +
                                      " sockets from systemd; server.listen is not used");
  for (const auto& sock : activated) {
    auto listener = std::make_unique<Listener>(loop(), sock.fd, sock.is_unix,
                                               ListenerRole{.admin = sock.name == "admin",
                                                            .tls = sock.name == "tls" || sock.name == "wss",
                                                            .websocket = sock.name == "ws" || sock.name == "wss"},
                                               on_conn);
    log::info("listening on " + listener->bound_name() + (listener->admin() ? " (admin)" : ""));
    listeners_.push_back(std::move(listener));
  }
  if (!activated.empty()) {
    for (const auto& l : listeners_) {
      if (l->role().tls && !tls_context_) load_tls(false);
      if (l->role().websocket && !websocket_site_) load_websocket_site(false);
    }
    return;
  }
  if (!config_.server.tls.empty()) load_tls(false);
  if (!config_.server.websocket.empty()) load_websocket_site(false);
  const auto& flags = config_.server.listen_flags;
  for (std::size_t i = 0; i < config_.server.listen.size(); ++i) {
    const std::string& text = config_.server.listen[i];
    auto address = parse_listen_address(text);
    if (!address) throw std::runtime_error("bad listen address '" + text + "'");
    // --listen addresses are plain (flags are the file's, entry by entry).
    ListenFlags f = i < flags.size() ? flags[i] : ListenFlags{};
    ListenerRole role{.admin = f.admin, .tls = f.tls, .websocket = f.websocket};
    auto listener = std::make_unique<Listener>(loop(), *address, role, on_conn);
    log::info("listening on " + listener->bound_name() + (role.admin ? " (admin)" : "") + (role.tls ? " (tls)" : "") +
              (role.websocket ? " (websocket)" : ""));
    listeners_.push_back(std::move(listener));
  }
}

int Server::run() {
  // Signals first: a SIGTERM that arrives as soon as the listeners are announced must find
  // its handler, not the default action.
  signals_.push_back(std::make_unique<uv::Signal>(loop(), SIGHUP, [this] { reload(); }));
  signals_.push_back(std::make_unique<uv::Signal>(loop(), SIGTERM, [this] { shutdown(); }));
  signals_.push_back(std::make_unique<uv::Signal>(loop(), SIGINT, [this] { shutdown(); }));
  signals_.push_back(std::make_unique<uv::Signal>(loop(), SIGUSR2, [this] { lame_duck(); }));
  try {
    open_listeners();
    open_http();
  } catch (const std::exception& e) {
    log::error(e.what());
    return 1;
  }
  started_ms_ = heap_check_ms_ = now_ms();
  if (cluster_) {
    // The default node id: this host and the port it serves on.
    char host[256] = "roomd";
    gethostname(host, sizeof host - 1);
    std::string port = listeners_.empty() ? "0" : listeners_.front()->bound_name();
    port = port.substr(port.rfind(':') + 1);
    cluster_->start(std::string(host) + ":" + port);
  }
  end_of_turn_ = std::make_unique<uv::Prepare>(loop(), [this] { on_turn(); });
  keep_awake_ = std::make_unique<uv::Idle>(loop());
  ticker_ = std::make_unique<uv::Timer>(loop(), [this] { on_tick(); });
  lazy_flush_ = std::make_unique<uv::Timer>(loop(), [this] { flush_lazy(); });
  ticker_->start(tick_interval_ms(), tick_interval_ms());
  console_ = std::make_unique<Console>(
      loop(), [this, actions = ConsoleActions{.stats_line = [this] { return stats_line(); },
                                              .reload = [this] { reload(); },
                                              .shutdown = [this] { shutdown(); }}](std::string_view line) {
        return run_console_command(*router_, actions, line);
      });
  lag_samples_us_.assign(600, 0);
  lag_probe_ = std::make_unique<uv::Timer>(loop(), [this] { on_lag_probe(); });
  lag_probe_expected_ns_ = uv_hrtime() + 100'000'000;
  lag_probe_->start(100, 100);
  if (auto usec = notify::watchdog_usec()) {
    // Pinged from the loop itself: a stuck loop stops the pings and systemd restarts us.
    std::uint64_t every_ms = std::max<std::uint64_t>(*usec / 2000, 1);
    watchdog_ = std::make_unique<uv::Timer>(loop(), [] { notify::watchdog(); });
    watchdog_->start(0, every_ms);
    log::info("watchdog: pinging systemd every " + std::to_string(every_ms) + " ms");
  }
  notify::ready();
  update_status();
  log::notice("roomd " ROOMD_VERSION " started: " + std::to_string(router_->rooms().size()) + " rooms, " +
              (options_.config_path ? "config " + *options_.config_path : std::string("embedded default config")));

  uv_run(loop(), UV_RUN_DEFAULT);  // until shutdown() has finished and stopped it

  // Teardown outside every callback: nothing here runs inside its own handle's callback.
  watchdog_.reset();
  lag_probe_.reset();
  console_.reset();
  signals_.clear();
  // Closing them gave SIGTERM, SIGINT and SIGHUP back their default actions. A second SIGTERM
  // from here to exit (a supervisor, `systemctl stop` twice, a test's teardown while the
  // sanitizers' exit checks run) must not turn this clean stop into death by signal.
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGUSR2, SIG_IGN);
  ticker_.reset();
  lazy_flush_.reset();
  delays_.reset();
  cluster_.reset();  // pending says are dropped: their clients are gone
  shutdown_deadline_.reset();
  lame_duck_timer_.reset();
  end_of_turn_.reset();
  keep_awake_.reset();
  http_.reset();  // kept through the drain, so /readyz says "shutting down" meanwhile
  listeners_.clear();
  if (history_) history_->close();
  // The run below also waits for every pool task, and a key check waits for its helper,
  // which runs at idle priority and may be kept off the CPU for minutes on a busy machine:
  // the helpers go now, and a check still waiting fails closed.
  key_helpers_->shutdown();
  uv_run(loop(), UV_RUN_DEFAULT);  // runs the close callbacks
  log::notice("roomd stopped");
  return 0;
}

void Server::on_connection(Listener& listener) {
  std::uint64_t id = next_connection_id_++;
  auto owned = std::make_unique<Connection>(
      connection_context_, id, listener.is_unix() ? Connection::Transport::unix_socket : Connection::Transport::tcp,
      listener.role().tls ? tls_context_ : nullptr, listener.role().websocket ? websocket_site_ : nullptr);
  Connection& conn = *owned;
  connections_.emplace(id, std::move(owned));
  if (int rc = uv_accept(listener.stream(), conn.stream()); rc < 0) {
    log::warning("accept failed: " + uv::error_text(rc));
    return conn.close_now();
  }
  ++stats_.connections_total;
  note_accepted(id, listener);
  std::string peer = listener.bound_name(), ip;
  if (!listener.is_unix()) {
    auto* tcp = reinterpret_cast<uv_tcp_t*>(conn.stream());
    sockaddr_storage sa{};
    int len = sizeof sa;
    if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&sa), &len) == 0) peer = format_sockaddr(sa, &ip);
    // Best effort: a socket without them still works.
    if (int rc = uv_tcp_nodelay(tcp, 1); rc < 0) log::debug("TCP_NODELAY: " + uv::error_text(rc));
    if (int rc = uv_tcp_keepalive(tcp, 1, 60); rc < 0) log::debug("SO_KEEPALIVE: " + uv::error_text(rc));
  }
  if (auto refused = refusal(conn, peer, ip)) return conn.reject(make_event(std::move(*refused)));
  ++admitted_;
  if (!ip.empty()) ++clients_per_ip_[ip];
  if (conn.is_websocket()) return conn.start_upgrade(peer, ip);  // its session comes with the upgrade
  SessionId session = router_->connect(conn, listener.admin(), GuessThrottle::source_of(ip));
  conn.start(peer, ip, session);
  log::info("client " + peer + " connected as " + router_->nick_of(session).value_or("?"));
}

// A new connection is refused, its error the only line it gets, when the server is stopping,
// full (for everyone or for its address), running out of file descriptors, or when its address
// opens connections faster than server.connect_rate. Refusals can come by the thousand a
// second, so each kind is logged once per interval with its count.
std::optional<ordered_json> Server::refusal(Connection& conn, const std::string& peer, const std::string& ip) {
  if (shutting_down_) return wire::error_body(ErrorCode::shutting_down, "the server is shutting down");
  const auto& s = config_.server;
  const std::uint64_t now = now_ms();
  // Descriptors are handed out lowest first, so this one's number says that all below it are
  // in use.
  uv_os_fd_t fd = -1;
  if (fd_limit_ > 0 && uv_fileno(reinterpret_cast<uv_handle_t*>(conn.stream()), &fd) == 0 &&
      static_cast<std::uint64_t>(fd) + fd_reserve_ >= fd_limit_) {
    ++stats_.rejected;
    ++stats_.fd_refused;
    if (std::uint64_t count = fd_log_.note(now))
      log::warning("connections refused: file descriptor " + std::to_string(fd) + " of the limit " +
                   std::to_string(fd_limit_) + " (the last " + std::to_string(fd_reserve_) + " are kept in reserve); " +
                   std::to_string(count) + " refused since the last report; raise LimitNOFILE= or lower max_clients");
    return wire::error_body(ErrorCode::server_full, "the server is out of file descriptors");
  }
  const auto per_ip = ip.empty() ? clients_per_ip_.end() : clients_per_ip_.find(ip);
  if (admitted_ >= s.max_clients || (per_ip != clients_per_ip_.end() && per_ip->second >= s.max_clients_per_ip)) {
    ++stats_.rejected;
    if (std::uint64_t count = full_log_.note(now))
      log::warning("client " + peer + " refused: server_full (" + std::to_string(admitted_) + " clients); " +
                   std::to_string(count) + " refused since the last report");
    return wire::error_body(ErrorCode::server_full, admitted_ >= s.max_clients ? "the server is full"
                                                                               : "too many connections from your address");
  }
  if (ip.empty()) return std::nullopt;  // Unix sockets: no address to budget
  if (std::uint64_t wait_ms = connects_.admit(GuessThrottle::source_of(ip), now)) {
    ++stats_.connect_rate_refused;
    const std::uint64_t retry_s = (wait_ms + 999) / 1000;
    if (std::uint64_t count = connect_rate_log_.note(now))
      log::warning("client " + peer + " refused: its address opens connections faster than server.connect_rate; " +
                   std::to_string(count) + " refused since the last report");
    return wire::error_body(ErrorCode::rate_limited,
                            "too many connections from your address: try again in " + std::to_string(retry_s) + " s");
  }
  return std::nullopt;
}

std::uint64_t Server::accept_failures() const {
  std::uint64_t total = stats_.accept_failures;
  for (const auto& l : listeners_) total += l->accept_failures();
  return total;
}

Connection* Server::find_connection(ConnectionId id) {
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

void Server::on_turn() {
  start_upgraded_sessions();
  resume_connections();
  retire_ended_sessions();
  // The cut ones' sessions end: their rooms hear the leave in this turn, before it writes.
  if (enforce_output_budget()) retire_ended_sessions();
  stats_.budgeted_bytes_checked = stats_.connections.budgeted_bytes;
  write_pending();
  // Presence waits a little for more to share its write (Outbox::send_lazy): a burst of
  // joins into rooms of 100 costs each member one write per window, not one per join.
  if (!turn_.lazy.empty() && !lazy_flush_armed_) {
    lazy_flush_armed_ = true;
    lazy_flush_->start(lazy_window_.ms(), 0);
  }
  if (history_) history_->flush();  // this turn's messages: one transaction
  free_closed_connections();
  // What a phase queued for the next turn (output drained by a write, a write error's
  // session) must not wait for the next event: the loop then polls without blocking.
  if (turn_.empty()) keep_awake_->stop();
  else keep_awake_->start();
  if (lame_duck_ && !shutting_down_ && connections_.empty()) {
    log::notice("lame duck: every connection is closed");
    shutdown();
  }
  // The cluster's last commands (the leaves and nick releases of the clients just closed) are
  // answered before the exit, so the other nodes hear of them now, not when this node's lease
  // runs out (bounded by the link's command deadline).
  if (shutting_down_ && connections_.empty() && (!history_ || history_->idle()) && (!cluster_ || cluster_->idle()))
    uv_stop(loop());
}

// The coalescing timer fired: presence queued since it was armed joins this turn's writes
// (timers run before the turn, in the same loop iteration).
void Server::flush_lazy() {
  lazy_flush_armed_ = false;
  std::vector<ConnectionId> batch;
  batch.swap(turn_.lazy);
  std::size_t written = 0;
  for (ConnectionId id : batch)
    if (Connection* c = find_connection(id); c && c->flush_lazy()) ++written;
  lazy_window_.after_flush(written);
}

// WebSocket connections whose upgrade was accepted this turn get their session (and welcome).
void Server::start_upgraded_sessions() {
  std::vector<ConnectionId> batch;
  batch.swap(turn_.upgraded);
  for (ConnectionId id : batch) {
    Connection* c = find_connection(id);
    // One that began closing since its upgrade (a TLS close_notify in the same read, a
    // shutdown) gets no session: nothing would ever retire it from the router.
    if (!c || !c->awaiting_session()) continue;
    SessionId session = router_->connect(*c, false, GuessThrottle::source_of(c->ip()));
    c->start_session(session);
    log::info("client " + c->peer() + " (WebSocket) connected as " + router_->nick_of(session).value_or("?"));
    if (lame_duck_) tell_lame_duck(*c);  // upgraded while the server drains: its time follows the welcome
  }
}

// Connections whose held request came back, or whose output drained, serve what they kept.
// Serving may release another hold at once (an answer already known), hence the loop; each
// connection serves until it stops again, so it ends.
void Server::resume_connections() {
  while (!turn_.resume.empty()) {
    std::vector<ConnectionId> batch;
    batch.swap(turn_.resume);
    for (ConnectionId id : batch)
      if (Connection* c = find_connection(id)) c->resume();
  }
}

// The router hears here, once, of each session whose connection ended; its rooms hear the
// leave now. A leave can make another member a slow consumer, whose session ends too: the
// loop ends because each session ends once.
void Server::retire_ended_sessions() {
  while (!turn_.ended.empty()) {
    std::vector<SessionId> batch;
    batch.swap(turn_.ended);
    for (SessionId id : batch) router_->disconnect(id);
  }
}

// The server-wide output budget (output_budget.hpp), once per turn, before the write phase:
// one comparison of the connections' running total; only over the budget are the queues
// listed and the largest cut, by their policy, until the rest is at or under it. Returns
// whether it cut any.
bool Server::enforce_output_budget() {
  const std::uint64_t budget = config_.limits.max_total_outbound_bytes;
  const std::uint64_t total = stats_.connections.budgeted_bytes;
  if (budget == 0 || total <= budget) return false;
  std::vector<QueuedOutput> queues;
  for (const auto& [id, conn] : connections_)
    if (conn->counts_against_budget() && conn->queued_bytes() > 0) queues.push_back({id, conn->queued_bytes()});
  std::vector<ConnectionId> cut = pick_over_budget(queues, total, budget);
  for (ConnectionId id : cut)
    if (Connection* c = find_connection(id)) c->cut_for_budget(total, budget);
  return !cut.empty();
}

// Everything this turn queued goes out now, one batched write per connection. Writing
// serves nothing: what it frees up (a drained queue) goes on the resume list.
void Server::write_pending() {
  std::vector<ConnectionId> batch;
  batch.swap(turn_.write);
  for (ConnectionId id : batch)
    if (Connection* c = find_connection(id)) c->write();
}

// Last, once the router has forgotten their sessions: connections whose handle closed.
void Server::free_closed_connections() {
  std::vector<ConnectionId> batch;
  batch.swap(turn_.closed);
  for (ConnectionId id : batch) {
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& conn = *it->second;
    if (conn.admitted()) {
      --admitted_;
      if (!conn.ip().empty()) {
        auto per_ip = clients_per_ip_.find(conn.ip());
        if (per_ip != clients_per_ip_.end() && --per_ip->second == 0) clients_per_ip_.erase(per_ip);
      }
      log::info("client " + conn.peer() + " disconnected");
    }
    note_freed(id);
    connections_.erase(it);
  }
}

std::uint64_t Server::tick_interval_ms() const {
  // Fine enough that the ping at half the idle timeout always comes before the close.
  return std::clamp<std::uint64_t>(std::uint64_t{config_.limits.idle_timeout_s} * 1000 / 8, 100, 1000);
}

void Server::on_tick() {
  std::uint64_t now = now_ms();
  for (auto& [id, conn] : connections_) conn->tick(now);
  if (now - last_status_ms_ >= 2000) update_status();
  if (now - heap_check_ms_ >= HeapTrimPolicy::kCheckIntervalMs) trim_heap_when_quiet(now);
}

// The heap's free memory goes back to the system here, in a quiet moment, and never from
// free() on the hot path (main.cpp's M_TRIM_THRESHOLD): after a storm has passed and the
// loop has idled for a while, one malloc_trim(0) returns the free pages (it walks the free
// chunks and madvises them away, which may take milliseconds, so not mid-storm).
void Server::trim_heap_when_quiet(std::uint64_t now) {
  const std::uint64_t idle_ns = uv_metrics_idle_time(loop());
  const double elapsed_ns = static_cast<double>(now - heap_check_ms_) * 1e6;
  const double idle_share = static_cast<double>(idle_ns - heap_check_idle_ns_) / elapsed_ns;
  heap_check_ms_ = now;
  heap_check_idle_ns_ = idle_ns;
  if (!heap_trim_.note_interval(std::clamp(1.0 - idle_share, 0.0, 1.0))) return;
  const struct mallinfo2 heap = mallinfo2();
  const std::uint64_t resident = resident_bytes(), in_use = heap.uordblks + heap.hblkhd;
  if (!heap_trim_.worth_trimming(resident, in_use)) return;
  const std::uint64_t started_ns = uv_hrtime();
  malloc_trim(0);
  const std::uint64_t took_us = (uv_hrtime() - started_ns) / 1000;
  const std::uint64_t after = resident_bytes();
  heap_trim_.trimmed(after);
  auto mib = [](std::uint64_t bytes) { return std::to_string(bytes >> 20); };
  log::info("heap trimmed in a quiet moment: resident " + mib(resident) + " -> " + mib(after) + " MiB (" +
            mib(in_use) + " MiB in use), " + std::to_string(took_us) + " us");
}

void Server::on_lag_probe() {
  // How late this timer fired: the time the loop spent on other work past its deadline.
  std::uint64_t now = uv_hrtime();
  std::uint64_t late_us = now > lag_probe_expected_ns_ ? (now - lag_probe_expected_ns_) / 1000 : 0;
  lag_samples_us_[lag_next_++ % lag_samples_us_.size()] = static_cast<std::uint32_t>(std::min<std::uint64_t>(late_us, UINT32_MAX));
  lag_histogram_.observe(static_cast<double>(late_us) / 1e6);
  lag_probe_expected_ns_ = now + 100'000'000;
}

void Server::update_status() {
  std::uint64_t now = now_ms();
  std::uint64_t count = router_->stats().messages_in;
  if (now > rate_window_ms_)
    messages_per_s_ = static_cast<double>(count - rate_window_count_) * 1000.0 / static_cast<double>(now - rate_window_ms_);
  rate_window_ms_ = now;
  rate_window_count_ = count;
  last_status_ms_ = now;
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", messages_per_s_);
  notify::status(std::string(lame_duck_ && !shutting_down_ ? "lame duck: " : "") + "clients=" +
                 std::to_string(admitted_) + " rooms=" + std::to_string(router_->rooms().size()) + " msgs/s=" + rate);
}

void Server::reload() {
  notify::reloading();
  struct ReadyAgain {  // whatever happens below, systemd hears READY=1 again
    ~ReadyAgain() { notify::ready(); }
  } ready_again;
  if (!options_.config_path) {
    log::notice("reload: running on the embedded default config; nothing to reload");
    return;
  }
  const std::string& path = *options_.config_path;
  ConfigResult result = load_config_file(path);
  if (!result.ok()) {
    for (const auto& e : result.errors) log::error("reload: " + e.to_string(path));
    log::error("reload failed: keeping the old configuration");
    return;
  }
  Config next = std::move(result.config);
  if (!options_.listen_override.empty()) next.server.listen = options_.listen_override;
  if (next.server.listen != config_.server.listen ||
      (options_.listen_override.empty() && next.server.listen_flags != config_.server.listen_flags))
    log::warning("reload: listener changes take effect at the next restart");
  next.server.listen = config_.server.listen;
  next.server.listen_flags = config_.server.listen_flags;
  next.server.admin = config_.server.admin;
  next.server.tls = config_.server.tls;
  next.server.websocket = config_.server.websocket;
  if (next.server.workers != config_.server.workers)
    log::warning("reload: server.workers takes effect at the next restart");
  if (next.http.listen != config_.http.listen)
    log::warning("reload: http.listen takes effect at the next restart");
  next.http.listen = config_.http.listen;
  if (http_) http_->set_idle_timeout(next.http.idle_timeout_s);
  if (next.history.path != config_.history.path)
    log::warning("reload: history.path takes effect at the next restart");
  next.history.path = config_.history.path;
  if (history_) history_->set_max_messages(next.history.max_messages_per_room);
  if (next.cluster != config_.cluster) log::warning("reload: [cluster] takes effect at the next restart");
  next.cluster = config_.cluster;
  config_ = std::move(next);
  // A new context for new connections, if the files load and match; open ones keep theirs.
  if (tls_context_) load_tls(true);
  if (websocket_site_) load_websocket_site(true);
  connection_limits_ = connection_limits(config_);
  for (auto& [id, conn] : connections_) conn->limits_changed();
  log::set_level(*log::parse_level(config_.log.level));
  std::vector<const RoomConfig*> added;  // persisted rooms the file adds go on from the store, as at start
  if (history_)
    for (const auto& room : config_.rooms)
      if (room.persist && !router_->has_room(room.name)) added.push_back(&room);
  router_->reconfigure(router_settings(config_), config_.rooms);
  connects_.reconfigure({config_.server.connect_rate, config_.server.connect_burst});
  for (const RoomConfig* room : added)
    router_->restore(room->name, history_->load(room->name, replay_ring(config_), clustered(config_, *room)));
  ticker_->start(tick_interval_ms(), tick_interval_ms());
  log::notice("reloaded " + path + ": " + std::to_string(config_.rooms.size()) + " configured rooms");
}

void Server::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  notify::stopping();
  log::notice("shutting down: " + std::to_string(connections_.size()) + " connections to close");
  stats_.accept_failures = accept_failures();  // what /metrics keeps showing while connections drain
  listeners_.clear();  // stop accepting; Unix socket paths are removed
  router_->send_all(make_event(wire::system_shutdown()));
  for (auto& [id, conn] : connections_) conn->finish(CloseReason::shutting_down);
  shutdown_deadline_ = std::make_unique<uv::Timer>(loop(), [this] {
    log::warning("shutdown: closing connections that did not drain in time");
    for (auto& [id, conn] : connections_) conn->close_now();
  });
  shutdown_deadline_->start(kShutdownDeadlineMs, 0);
}

ordered_json Server::stats_json() const {
  const auto& r = router_->stats();
  std::size_t members = 0;
  auto rooms = router_->rooms();
  for (const auto& room : rooms) members += room.members;
  std::vector<std::uint32_t> lag(lag_samples_us_.begin(),
                                 lag_samples_us_.begin() + static_cast<std::ptrdiff_t>(std::min(lag_next_, lag_samples_us_.size())));
  std::sort(lag.begin(), lag.end());
  auto pct = [&](double p) -> std::uint32_t { return lag.empty() ? 0 : lag[static_cast<std::size_t>(p * static_cast<double>(lag.size() - 1))]; };
  ordered_json j;
  j["clients"] = admitted_;
  j["connections_total"] = stats_.connections_total;
  j["rooms"] = rooms.size();
  j["members"] = members;
  j["messages_in"] = r.messages_in;
  j["deliveries"] = r.deliveries;
  j["messages_per_s"] = messages_per_s_;
  j["bytes_out"] = stats_.connections.bytes_out;
  j["slow_consumers"] = stats_.connections.slow_consumers;
  j["dropped"] = stats_.connections.dropped;
  j["outbound_bytes"] = stats_.connections.queued_bytes;
  j["outbound_budget_cuts"] = stats_.connections.budget_cuts;
  j["outbound_budgeted_bytes"] = stats_.budgeted_bytes_checked;
  j["rate_limited"] = r.rate_limited;
  j["queries_paced"] = r.queries_paced;
  j["history_paced_by_address"] = r.history_paced_by_address;
  j["presence_summaries"] = r.presence_summaries;
  j["resumes"] = r.resumes;
  j["resumes_refused"] = r.resumes_refused;
  j["says_duplicate"] = r.says_duplicate;
  j["whispers_duplicate"] = r.whispers_duplicate;
  j["says_in_flight"] = router_->says_in_flight();
  j["rejected"] = stats_.rejected;
  j["rejected_fd_limit"] = stats_.fd_refused;
  j["connect_rate_limited"] = stats_.connect_rate_refused;
  j["accept_failures"] = accept_failures();
  j["churn_refused"] = r.churn_refused;
  j["worker_tasks"] = pool_->in_flight();
  j["key_checks"] = router_->key_checker().checks_run();
  j["key_answers_reused"] = router_->key_checker().answers_reused();
  j["key_guesses_refused"] = router_->guess_throttle().refused();
  j["loop_lag_p50_us"] = pct(0.50);
  j["loop_lag_p99_us"] = pct(0.99);
  j["lame_duck"] = lame_duck_ ? 1 : 0;
  j["uptime_s"] = (now_ms() - started_ms_) / 1000;
  j["rss_bytes"] = resident_bytes();
  if (cluster_) {
    const auto& c = cluster_->stats();
    j["cluster_available"] = cluster_->available() ? 1 : 0;
    j["cluster_connects"] = c.connects;
    j["cluster_link_failures"] = c.link_failures;
    j["cluster_says"] = c.says;
    j["cluster_says_refused"] = c.says_refused;
    j["cluster_says_retried"] = c.says_retried;
    j["cluster_say_batches"] = c.say_batches;
    j["cluster_says_queued"] = c.says_queued;
    j["cluster_delivered"] = c.delivered;
    j["cluster_gap_fills"] = c.gap_fills;
    j["cluster_skipped"] = c.skipped;
    j["cluster_nick_claims"] = c.nick_claims;
    j["cluster_nicks_taken"] = c.nicks_taken;
    j["cluster_nicks_refused"] = r.nicks_unavailable;
    j["cluster_nicks_lost"] = c.nicks_lost;
    j["cluster_presence_in"] = c.presence_in;
    j["cluster_member_reads"] = c.member_reads;
    j["cluster_sweeps"] = c.sweeps;
    j["cluster_swept_members"] = c.swept_members;
    j["cluster_reregistered"] = c.reregistered;
    j["cluster_conflicts"] = c.conflicts;
    j["cluster_topics"] = c.topics;
    j["cluster_whispers_out"] = c.whispers_out;
    j["cluster_whispers_in"] = c.whispers_in;
    j["cluster_redis_durable"] = c.redis_durable ? 1 : 0;
  }
  return j;
}

std::string Server::stats_line() const {
  const ordered_json stats = stats_json();
  std::string line;
  for (auto it = stats.cbegin(); it != stats.cend(); ++it) {
    if (!line.empty()) line += ' ';
    line += it.key() + "=" + it.value().dump();
  }
  return line;
}
}  // namespace roomd
