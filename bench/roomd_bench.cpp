// roomd-bench: load generator for roomd (and, for comparison, Redis pub/sub).
//
// Each of --threads workers runs one libuv loop over its share of the connections: worker 0
// holds the publishers and storm clients (and the timers), receivers are dealt round-robin.
// Workers share only atomics (deliveries, readiness, the finish flag) and wake each other
// with uv_async. Receivers count deliveries and read the send time from the payload
// ("t=<ns>;…") without parsing the JSON, so the generator stays cheap.
// Scenarios: fanout, rooms, latency, idle, storm, churn. Every run is bounded by --timeout.
// latency --versus-port measures a second server in the same run, in alternating phases.
// --transport tls|ws|wss runs any roomd scenario over TLS (roomd's own TlsChannel, memory
// BIOs), WebSocket (wslay: one text message per JSON line) or WebSocket over TLS.
// --member-port spreads the members over other servers (the nodes of a roomd cluster) while
// the publisher stays on --port; --cpu-pid reads processes' CPU time over the run.
#include <CLI/CLI.hpp>
#include <uv.h>
#include <openssl/ssl.h>
#include <wslay/wslay.h>

#include "roomd/net/tls.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace {

enum class Target { roomd, redis };
enum class Role { publisher, receiver, idle, storm, churner };
enum class Transport { tcp, tls, ws, wss };

const char* name_of(Target t) { return t == Target::roomd ? "roomd" : "redis"; }

struct Options {
  Target target = Target::roomd;
  std::string scenario = "fanout";
  std::string host = "127.0.0.1";
  int port = 7000;
  int members = 100;
  int rooms = 1;
  int publishers = 1;
  long messages = 10000;
  int payload = 64;
  double rate = 1000;
  double publish_rate = 0;  // fanout, rooms: messages/s per publisher; 0 = as fast as the window allows
  double duration = 5;
  int connections = 1000;
  long server_pid = 0;
  double timeout = 60;
  long window = 2000;
  int storm_clients = 8;
  int threads = 1;
  std::string storm_mix = "both";  // joins | searches | both
  bool storm_distinct_keys = false;  // a brute-force attack rather than a reconnect storm
  std::string storm_key_room = "vault";
  std::string storm_history_room = "lobby";
  long storm_seed = 2000;  // messages said in the history room first, so searches find something
  // The storm run alternates quiet and storm phases of duration/phases each, so its p99 is
  // compared with the same run's quiet p99: the machine's drift cancels out. latency with a
  // versus server alternates the two servers' phases the same way.
  int phases = 14;
  // churn: --members idle receivers in one room, --churners clients that join and leave it
  // (--churn-rate joins + leaves a second, all together; 0: the control run) while the
  // publisher says --rate messages a second. The run starts --settle seconds after the last
  // member joined, so presence left over from the setup is not counted as the churn's.
  int churners = 20;
  // Connections being set up at once, per loop: as many as the servers' listen backlog holds
  // (roomd and Redis both listen with 511). Fewer make a server that batches a turn's joins
  // (roomd's presence to a room's members) look slower than its clients would find it: 128
  // made 10,000 joins over 100 rooms take 3x as long as 500 did, with Redis' time unchanged.
  int connect_window = 500;
  double churn_rate = 200;
  double settle = 2;
  int versus_port = 0;                    // latency: a second server, measured in alternate phases
  // A cluster: receivers (and idle connections) connect to these ports in turn instead of
  // --port, where the publisher, the storm and the churners stay (the origin node).
  std::vector<int> member_ports;
  // Processes whose CPU time (utime + stime) is read at the start and the end of the run:
  // NAME=PID each, reported as NAME_cpu_s and NAME_cpu_us_per_msg.
  std::vector<std::pair<std::string, long>> cpu_pids;
  Target versus_target = Target::redis;
  Transport transport = Transport::tcp;
  std::string ca;         // tls, wss: the CA bundle to verify the server against
  bool insecure = false;  // tls, wss: no certificate check (a self-signed benchmark server)
  bool tls() const { return transport == Transport::tls || transport == Transport::wss; }
  bool ws() const { return transport == Transport::ws || transport == Transport::wss; }
};

struct WsDeleter {
  void operator()(wslay_event_context* ctx) const { wslay_event_context_free(ctx); }
  void operator()(wslay_frame_context* ctx) const { wslay_frame_context_free(ctx); }
};

struct Worker;

struct Conn {
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  Worker* worker = nullptr;
  Role role = Role::receiver;
  bool versus = false;     // latency --versus-port: this connection is to the second server
  int port = 0;            // the server's: --port, a --member-port, or --versus-port
  int room = 0;
  bool ready = false;
  bool seeder = false;     // storm: fills the history room before the run
  bool storm_waiting = false;  // storm: answered during a quiet phase, resumes with the next storm
  bool in_room = false;    // churner: its last join (true) or leave (false) was answered
  bool churn_pending = false;  // churner: a join or leave not answered yet
  std::uint64_t last_seq = 0;  // churn receiver: the last message's seq (Redis: the payload's n=)
  std::string in;          // unparsed input (ws: the HTTP response's head until it is complete)
  long sent = 0;           // publisher: messages sent
  // --transport tls, wss: the connection's TLS state, and what was sent before its handshake.
  std::unique_ptr<roomd::TlsChannel> tls;
  std::string tls_pending;
  // --transport ws, wss: the WebSocket framing, once the server's 101 has been read.
  std::unique_ptr<wslay_event_context, WsDeleter> ws;
  bool upgraded = false;
  std::unique_ptr<wslay_frame_context, WsDeleter> ws_frames;
  bool ws_in_frame = false, ws_text = false, ws_fin = false;  // the frame being received
  std::uint8_t ws_opcode = 0;
  std::uint64_t ws_left = 0;   // its payload bytes still to come
  std::string ws_control;      // a ping's or close's payload
};

struct Write {
  uv_write_t req;
  std::string data;
};

std::uint64_t now_ns() { return uv_hrtime(); }

// A libuv call that fails only from a bug or an exhausted machine, made before the loops run
// (on the main thread): a failure throws, and main reports it. On a loop, Shared::check.
void must(int rc, const char* what) {
  if (rc < 0) throw std::runtime_error(std::string(what) + ": " + uv_strerror(rc));
}

long rss_kb(long pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long value = 0;
  while (f >> key) {
    if (key == "VmRSS:") {
      f >> value;
      return value;
    }
    f.ignore(4096, '\n');
  }
  return -1;
}

// A process's CPU time so far, user + system, in clock ticks (/proc/PID/stat fields 14 and
// 15, counted after the command name's closing parenthesis, which may itself hold spaces);
// -1 if it cannot be read.
long cpu_ticks(long pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  long utime = -1, stime = -1;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 (state) comes first
    if (i == 14) utime = std::strtol(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtol(field.c_str(), nullptr, 10);
  }
  return utime < 0 || stime < 0 ? -1 : utime + stime;
}

// What the workers share. Everything a worker thread touches here is atomic or locked.
struct Shared {
  Options o;
  std::vector<std::unique_ptr<Worker>> workers;
  int total_conns = 0;
  std::atomic<int> ready{0};
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};
  std::atomic<bool> publisher_waiting{false};  // worker 0 stopped at the window
  std::atomic<std::uint64_t> deliveries{0};
  std::atomic<std::uint64_t> versus_deliveries{0};  // the part of deliveries from the versus server
  std::atomic<std::uint64_t> start_ns{0}, end_ns{0};
  // Setup: from the first connect until every connection is ready (joined: its `joined`
  // reply, or Redis' SUBSCRIBE confirmation, has been read). join_s in the report.
  std::uint64_t connect_ns = 0;
  std::atomic<std::uint64_t> ready_ns{0};
  std::shared_ptr<roomd::TlsContext> tls_context;  // --transport tls, wss (one SSL_CTX, all threads)
  std::uint64_t expected = 0;                  // set before any delivery can arrive
  int next_member_port = 0;                    // setup (main thread): the next --member-port
  // --cpu-pid: each process's ticks when the run started and when it finished (written once
  // each: by worker 0 at the start, by whichever thread finishes; read after the joins).
  std::vector<long> cpu_start, cpu_end;
  void read_cpu(std::vector<long>& into) {
    into.clear();
    for (const auto& named : o.cpu_pids) into.push_back(cpu_ticks(named.second));
  }
  std::mutex error_mutex;
  std::string error_text;

  Worker& first() { return *workers.front(); }
  void wake_all();
  void finish() {
    bool was = false;
    if (!finished.compare_exchange_strong(was, true)) return;
    end_ns = now_ns();
    if (started) read_cpu(cpu_end);
    wake_all();
  }
  void fail(const std::string& why) {
    {
      std::lock_guard lock(error_mutex);
      if (error_text.empty()) error_text = why;
    }
    finish();
  }
  // A libuv call on a loop: one that failed ends the run with it as the error. False then.
  bool check(int rc, const char* what) {
    if (rc < 0) fail(std::string(what) + ": " + uv_strerror(rc));
    return rc >= 0;
  }
  void add_deliveries(std::uint64_t n);
};

// One thread's loop and connections.
struct Worker {
  Shared& sh;
  const Options& o;
  const int index;
  uv_loop_t loop{};
  uv_async_t wake{};
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<Conn*> publishers;
  int next_to_connect = 0;
  // Connections connecting or joining (not ready yet), at most --connect-window (500).
  // Counting them until they are ready, not only until connected, keeps the server's accept
  // queue short: a client that only waited for its connect could outrun the server's accepts,
  // overflow the listen backlog and wait a second for the SYN-ACK to be resent, which join_s
  // would then measure.
  int setting_up = 0;
  std::uint64_t pending_deliveries = 0;  // counted during one read, then added to sh.deliveries
  long published = 0;                  // worker 0
  bool began = false;                  // worker 0: all_ready() ran
  std::vector<std::uint32_t> latencies_us;
  std::vector<std::uint32_t> quiet_latencies_us;  // storm: sent during a quiet phase
  std::vector<std::uint32_t> versus_latencies_us;  // latency --versus-port: the second server's
  std::uint64_t storm_requests = 0;
  std::uint64_t bytes_read = 0;        // everything this loop's connections were sent
  // churn: counted by the members (receivers) once the run has started
  std::uint64_t presence_events = 0;     // one presence event per change
  std::uint64_t presence_summaries = 0;  // "event":"summary" (a big room's aggregate)
  std::uint64_t gaps = 0;                // a message whose seq is not the last one's + 1
  std::uint64_t churn_ops = 0;           // churner loop: joins and leaves sent
  std::size_t churn_next = 0;            // churner loop: the next churner to act, round-robin
  uv_timer_t churn_timer{};
  bool storm_began = false;
  std::string filler;
  uv_timer_t timeout_timer{}, rate_timer{}, settle_timer{}, phase_timer{};
  long rss_after_kb = -1;
  char read_buffer[1 << 16];           // one per loop: this loop's reads all land here
  std::string plain;                   // tls, wss: one read's plaintext
  std::string_view ws_in;              // ws, wss: what wslay's recv callback hands out
  std::string ws_out;                  // ws, wss: what wslay's send callback collected
  std::uint64_t mask_state = 0x9e3779b97f4a7c15ull;  // ws, wss: xorshift64 for the frames' masks
  std::thread thread;

  Worker(Shared& shared, int i) : sh(shared), o(shared.o), index(i) {
    must(uv_loop_init(&loop), "uv_loop_init");
    must(uv_async_init(&loop, &wake, [](uv_async_t* a) { static_cast<Worker*>(a->data)->on_wake(); }),
         "uv_async_init");
    wake.data = this;
    filler.assign(static_cast<std::size_t>(std::max(o.payload, 1)), 'x');
  }

  void on_wake() {
    if (sh.finished) return uv_stop(&loop);
    if (index != 0) return o.scenario == "churn" ? start_churn() : start_storm();
    if (!began && sh.ready == sh.total_conns) return all_ready();
    if (sh.started) pump();
  }

  std::string room_name(int r) const { return "bench" + std::to_string(r); }
  Target target_of(const Conn& c) const { return c.versus ? o.versus_target : o.target; }

  // What the protocol sends: JSON lines (one or more), or a Redis command. Over ws and wss
  // each line is one text message (framed and masked by wslay); over tls and wss the bytes
  // are encrypted before they are written.
  void send(Conn& c, std::string data) {
    if (!o.ws()) return send_bytes(c, std::move(data));
    std::string_view rest = data;
    while (!rest.empty()) {
      auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      if (line.empty()) continue;
      wslay_event_msg msg{WSLAY_TEXT_FRAME, reinterpret_cast<const std::uint8_t*>(line.data()), line.size()};
      if (wslay_event_queue_msg(c.ws.get(), &msg) != 0) return sh.fail("wslay_event_queue_msg failed");
    }
    if (c.upgraded) ws_flush(c);  // (before the 101, the messages wait in wslay's queue)
  }

  // wslay's queued frames (messages, pongs, a close) out through the transport.
  void ws_flush(Conn& c) {
    if (wslay_event_send(c.ws.get()) != 0) return sh.fail("wslay_event_send failed");
    if (!ws_out.empty()) send_bytes(c, std::exchange(ws_out, std::string()));
  }

  // Bytes for the server: encrypted first over tls and wss (held until the handshake is done).
  void send_bytes(Conn& c, std::string data) {
    if (!c.tls) return write_raw(c, std::move(data));
    if (!c.tls->handshake_done()) return void(c.tls_pending += data);
    c.tls->encrypt(data);
    tls_flush(c);
  }

  void tls_flush(Conn& c) {
    if (c.tls->has_output()) write_raw(c, c.tls->take_output());
  }

  void write_raw(Conn& c, std::string data) {
    auto* w = new Write{{}, std::move(data)};
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    w->req.data = w;
    // A write that cannot start needs nothing more: the connection is gone, and its read says so.
    if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c.tcp), &buf, 1,
                 [](uv_write_t* req, int) { delete static_cast<Write*>(req->data); }) < 0)
      delete w;
  }

  std::string redis_command(std::initializer_list<std::string_view> parts) {
    std::string s = "*" + std::to_string(parts.size()) + "\r\n";
    for (auto p : parts) {
      s += "$" + std::to_string(p.size()) + "\r\n";
      s.append(p);
      s += "\r\n";
    }
    return s;
  }

  // "t=<send ns>;" then filler up to the payload size. churn adds "n=<message number>;", the
  // seq a Redis receiver checks (roomd's messages carry the room's own seq).
  std::string payload() {
    char head[64];
    int n = o.scenario == "churn"
                ? std::snprintf(head, sizeof head, "t=%" PRIu64 ";n=%ld;", now_ns(), published + 1)
                : std::snprintf(head, sizeof head, "t=%" PRIu64 ";", now_ns());
    std::string p(head, static_cast<std::size_t>(n));
    if (static_cast<int>(p.size()) < o.payload) p.append(filler, 0, static_cast<std::size_t>(o.payload) - p.size());
    return p;
  }

  void publish(Conn& c) {
    std::string room = room_name(c.room);
    if (target_of(c) == Target::roomd)
      send(c, "{\"op\":\"say\",\"room\":\"" + room + "\",\"text\":\"" + payload() + "\"}\n");
    else
      send(c, redis_command({"PUBLISH", room, payload()}));
    ++c.sent;
    ++published;
  }

  // The churners have a loop of their own, as the storm clients do. Every millisecond they
  // send what the rate owes since the start, one join or leave per churner in turn; a churner
  // whose last request is unanswered is skipped (the debt stays, so churn_ops shows a server
  // that cannot keep up). Churn ends with the publishing, after --duration.
  void start_churn() {
    if (!sh.started || storm_began) return;
    storm_began = true;
    if (o.churn_rate <= 0 || conns.empty() || conns.front()->role != Role::churner) return;
    if (!sh.check(uv_timer_init(&loop, &churn_timer), "uv_timer_init")) return;
    churn_timer.data = this;
    sh.check(uv_timer_start(&churn_timer, [](uv_timer_t* t) {
      auto* w = static_cast<Worker*>(t->data);
      double elapsed = static_cast<double>(now_ns() - w->sh.start_ns) / 1e9;
      if (elapsed >= w->o.duration || w->sh.finished) return void(w->sh.check(uv_timer_stop(t), "uv_timer_stop"));
      auto owed = static_cast<std::uint64_t>(elapsed * w->o.churn_rate);
      while (w->churn_ops < owed && w->churn_step()) {
      }
    }, 1, 1), "uv_timer_start");
  }

  // One join or leave by the next churner that is not waiting for an answer; false if all are.
  bool churn_step() {
    for (std::size_t tried = 0; tried < conns.size(); ++tried) {
      Conn& c = *conns[churn_next];
      churn_next = (churn_next + 1) % conns.size();
      if (c.churn_pending) continue;
      c.churn_pending = true;
      ++churn_ops;
      std::string room = room_name(c.room);
      if (o.target == Target::roomd)
        send(c, std::string("{\"op\":\"") + (c.in_room ? "leave" : "join") + "\",\"room\":\"" + room + "\"}\n");
      else
        send(c, redis_command({c.in_room ? "UNSUBSCRIBE" : "SUBSCRIBE", room}));
      return true;
    }
    return false;
  }

  void on_churn_answer(Conn& c, bool in) {
    c.in_room = in;
    c.churn_pending = false;
  }

  // A receiver's messages come in seq order with no gap (roomd: the room's seq; Redis: n=).
  void check_seq(Conn& c, std::string_view text, std::string_view key) {
    auto at = text.find(key);
    if (at == std::string_view::npos) return void(++gaps);
    std::uint64_t seq = std::strtoull(text.data() + at + key.size(), nullptr, 10);
    if (c.last_seq && seq != c.last_seq + 1) ++gaps;
    c.last_seq = seq;
  }

  void on_presence(std::string_view line) {
    if (!sh.started) return;  // the setup's, or what it left for the settle
    if (line.find("\"event\":\"summary\"") != std::string_view::npos) ++presence_summaries;
    else ++presence_events;
  }

  // The storm clients have a thread of their own: in a deployment they are other machines,
  // and their replies (a search's are ~10 KB) must not delay the receivers' reads here.
  void start_storm() {
    if (!sh.started || storm_began) return;
    storm_began = true;
    for (auto& c : conns)
      if (c->role == Role::storm) c->storm_waiting = true;
    // Checks the phase every millisecond; storm clients wait out the quiet phases.
    if (!sh.check(uv_timer_init(&loop, &phase_timer), "uv_timer_init")) return;
    phase_timer.data = this;
    sh.check(uv_timer_start(&phase_timer, [](uv_timer_t* t) {
      auto* w = static_cast<Worker*>(t->data);
      if (!w->phase_b(now_ns())) return;
      for (auto& c : w->conns)
        if (c->storm_waiting) w->storm_request(*c);
    }, 1, 1), "uv_timer_start");
  }

  // Phases come in pairs, one of each kind (storm: quiet and storm; latency with a versus
  // server: the first server's and the second's), in an order that varies from pair to pair
  // (a fixed pseudo-random pattern), so nothing periodic on the machine lines up with one kind.
  long phase_of(std::uint64_t t_ns) const {
    double phase_s = o.duration / std::max(o.phases, 1);
    return static_cast<long>(static_cast<double>(t_ns - std::min(t_ns, sh.start_ns.load())) / 1e9 / phase_s);
  }
  // The second kind: a storm phase, or the versus server's phase.
  bool phase_b(std::uint64_t t_ns) const {
    if (o.phases <= 1) return o.scenario == "storm";
    long phase = phase_of(t_ns);
    bool b_first = (static_cast<std::uint32_t>(phase / 2) * 2654435761u >> 15) & 1u;
    return (phase % 2 == 0) == b_first;
  }
  // The first tenth of each phase belongs to neither: what the previous phase left in flight.
  bool settled(std::uint64_t t_ns) const {
    if (o.phases <= 1) return true;
    double phase_s = o.duration / o.phases;
    double into = static_cast<double>(t_ns - std::min(t_ns, sh.start_ns.load())) / 1e9;
    return into - static_cast<double>(phase_of(t_ns)) * phase_s >= phase_s / 10;
  }

  void storm_request(Conn& c) {
    c.storm_waiting = !phase_b(now_ns());
    if (c.storm_waiting) return;
    ++storm_requests;
    if (o.target != Target::roomd) return;
    bool join = o.storm_mix == "joins" || (o.storm_mix == "both" && storm_requests % 2);
    if (join)
      send(c, "{\"op\":\"join\",\"room\":\"" + o.storm_key_room + "\",\"key\":\"wrong guess" +
                  (o.storm_distinct_keys ? " " + std::to_string(storm_requests) : std::string()) + "\"}\n");
    else
      send(c, "{\"op\":\"history\",\"room\":\"" + o.storm_history_room + "\",\"search\":\"payload\",\"limit\":50}\n");
  }

  // Searches must have something to search: the storm's history room gets storm_seed
  // messages, all in one write; the last one asks for an ok.
  void seed_history(Conn& c) {
    std::string says;
    for (long i = 1; i <= o.storm_seed; ++i)
      says += "{\"op\":\"say\",\"room\":\"" + o.storm_history_room + "\",\"text\":\"payload " + std::to_string(i) +
              " of the storm's history: searches look for this word\"" +
              (i == o.storm_seed ? std::string(",\"id\":1") : std::string()) + "}\n";
    send(c, std::move(says));
  }

  void on_delivery(Conn& c, std::string_view payload_part) {
    ++pending_deliveries;
    if (o.scenario == "churn") check_seq(c, payload_part, target_of(c) == Target::roomd ? "\"seq\":" : "n=");
    if (o.scenario == "latency" || o.scenario == "storm" || o.scenario == "churn") {
      auto t = payload_part.find("t=");
      if (t != std::string_view::npos) {
        std::uint64_t sent = std::strtoull(payload_part.data() + t + 2, nullptr, 10);
        auto us = static_cast<std::uint32_t>((now_ns() - sent) / 1000);
        if (o.scenario == "storm") {
          if (settled(sent)) (phase_b(sent) ? latencies_us : quiet_latencies_us).push_back(us);
        } else if (o.versus_port) {
          if (settled(sent)) (c.versus ? versus_latencies_us : latencies_us).push_back(us);
        } else {
          latencies_us.push_back(us);
        }
      }
    }
  }

  // ---- input --------------------------------------------------------------------------

  void on_roomd_line(Conn& c, std::string_view line) {
    if (line.starts_with("{\"op\":\"message\"")) {
      if (c.role == Role::receiver) on_delivery(c, line);
      return;
    }
    if (line.starts_with("{\"op\":\"presence\"")) {
      if (c.role == Role::receiver && o.scenario == "churn") on_presence(line);
      return;
    }
    if (!c.ready) {
      if (line.starts_with("{\"op\":\"welcome\"")) {
        if (c.seeder) return send(c, "{\"op\":\"join\",\"room\":\"" + o.storm_history_room + "\"}\n");
        if (c.role == Role::storm || c.role == Role::churner) return mark_ready(c);  // they start outside
        send(c, "{\"op\":\"join\",\"room\":\"" + room_name(c.room) + "\"}\n");
      } else if (line.starts_with("{\"op\":\"joined\"")) {
        if (c.seeder) return seed_history(c);
        mark_ready(c);
      } else if (c.seeder && line.starts_with("{\"op\":\"ok\"")) {
        mark_ready(c);  // the last seed message is stored (an ok comes after its commit)
      } else if (line.starts_with("{\"op\":\"error\"")) {
        sh.fail(std::string(line));
      }
      return;
    }
    if (c.role == Role::churner && line.starts_with("{\"op\":\"joined\"")) return on_churn_answer(c, true);
    if (c.role == Role::churner && line.starts_with("{\"op\":\"left\"")) return on_churn_answer(c, false);
    if (c.role == Role::storm && (line.starts_with("{\"op\":\"error\"") || line.starts_with("{\"op\":\"history\"")))
      if (sh.started && !sh.finished) storm_request(c);
    if (line.starts_with("{\"op\":\"error\"") && c.role != Role::storm) sh.fail(std::string(line));
  }

  // Parses one complete RESP frame at the start of `in`; returns bytes consumed (0: need more).
  std::size_t redis_frame(Conn& c, std::string_view in) {
    auto line_end = [&](std::size_t from) { return in.find("\r\n", from); };
    if (in.empty()) return 0;
    if (in[0] == ':' || in[0] == '+' || in[0] == '-') {
      auto e = line_end(0);
      if (e == std::string_view::npos) return 0;
      if (in[0] == '-') sh.fail(std::string(in.substr(0, e)));
      return e + 2;
    }
    if (in[0] != '*') {
      sh.fail("unexpected RESP");
      return in.size();
    }
    auto e = line_end(0);
    if (e == std::string_view::npos) return 0;
    long n = std::strtol(in.data() + 1, nullptr, 10);
    std::size_t pos = e + 2;
    std::string_view first, last;
    for (long i = 0; i < n; ++i) {
      if (pos >= in.size()) return 0;
      auto le = line_end(pos);
      if (le == std::string_view::npos) return 0;
      if (in[pos] == '$') {
        long len = std::strtol(in.data() + pos + 1, nullptr, 10);
        std::size_t start = le + 2;
        if (start + static_cast<std::size_t>(len) + 2 > in.size()) return 0;
        std::string_view item = in.substr(start, static_cast<std::size_t>(len));
        if (i == 0) first = item;
        last = item;
        pos = start + static_cast<std::size_t>(len) + 2;
      } else {
        pos = le + 2;
      }
    }
    if (first == "message") {
      if (c.role == Role::receiver) on_delivery(c, last);
    } else if (c.role == Role::churner && (first == "subscribe" || first == "unsubscribe")) {
      on_churn_answer(c, first == "subscribe");
    } else if (first == "subscribe" && !c.ready) {
      mark_ready(c);
    }
    return pos;
  }

  // Everything a connection is sent is read and parsed, joined or not: a flood of presence
  // or of member lists slows the generator as it would slow a client, and shows in join_s.
  // bytes_read counts what came off the socket (over tls and wss: ciphertext).
  void on_bytes(Conn& c, const char* data, std::size_t n) {
    bytes_read += n;
    if (!c.tls) {
      on_plain(c, std::string_view(data, n));
    } else {
      plain.clear();
      auto status = c.tls->feed(std::string_view(data, n), plain);
      if (c.tls->take_handshake_news()) {
        if (o.ws()) send_upgrade(c);
        if (!c.tls_pending.empty()) c.tls->encrypt(std::exchange(c.tls_pending, std::string()));
      }
      tls_flush(c);
      if (status == roomd::TlsChannel::Status::failed) return sh.fail("TLS: " + c.tls->error());
      if (!plain.empty()) on_plain(c, plain);
      if (status == roomd::TlsChannel::Status::closed && !sh.finished) return sh.fail("TLS closed by the server");
    }
    if (pending_deliveries) {  // one atomic add per read, not per delivery
      if (c.versus) sh.versus_deliveries += pending_deliveries;
      sh.add_deliveries(std::exchange(pending_deliveries, 0));
    }
    if (index == 0 && sh.started && !sh.finished) pump();
  }

  // ws, wss: the upgrade request, once the connection (and its TLS) is up. The key is fixed:
  // the bench does not check the server's Sec-WebSocket-Accept, only its 101.
  void send_upgrade(Conn& c) {
    std::string authority = o.host + ":" + std::to_string(c.port);
    send_bytes(c, "GET / HTTP/1.1\r\nHost: " + authority +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      "Origin: http://" + authority + "\r\n\r\n");
  }

  // Plaintext from the server. ws, wss: first the HTTP response's head, then WebSocket frames,
  // each text message one JSON line (without its newline).
  void on_plain(Conn& c, std::string_view data) {
    if (!o.ws()) return on_stream(c, data);
    if (!c.upgraded) {
      c.in.append(data);
      if (c.in.size() >= 5 && !c.in.starts_with("HTTP/"))  // not a WebSocket listener: say so now
        return sh.fail("no HTTP response: " + c.in.substr(0, std::min<std::size_t>(c.in.find('\n'), 60)));
      auto end = c.in.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (c.in.size() > 16384) sh.fail("no end to the HTTP response's head");
        return;
      }
      if (!c.in.starts_with("HTTP/1.1 101")) return sh.fail("no upgrade: " + c.in.substr(0, c.in.find('\r')));
      c.upgraded = true;
      std::string rest = c.in.substr(end + 4);
      c.in.clear();
      c.in.shrink_to_fit();
      ws_flush(c);  // anything queued before the 101
      if (rest.empty()) return;
      return ws_receive(c, rest);
    }
    ws_receive(c, data);
  }

  // Frames from the server, with wslay's frame layer: wslay_event_recv would also check
  // every text message's UTF-8 byte by byte (68 % of the generator's time in a ws fan-out
  // 1->1000, measured with perf), which the tcp path does not do either. A data frame's
  // payload goes into c.in (one copy, as on the tcp path); a text message is one line at its
  // last frame's end. A ping is answered with a pong, a close ends the run.
  void ws_receive(Conn& c, std::string_view data) {
    ws_in = data;
    for (;;) {
      wslay_frame_iocb iocb{};
      ssize_t r = wslay_frame_recv(c.ws_frames.get(), &iocb);
      if (r < 0) {
        if (r != WSLAY_ERR_WANT_READ || !ws_in.empty()) sh.fail("WebSocket: a bad frame from the server");
        return;
      }
      if (!c.ws_in_frame) {  // a frame's first chunk: its header
        c.ws_in_frame = true;
        c.ws_left = iocb.payload_length;
        c.ws_opcode = iocb.opcode;
        c.ws_fin = iocb.fin;
        if (iocb.opcode == WSLAY_TEXT_FRAME || iocb.opcode == WSLAY_BINARY_FRAME) {
          c.in.clear();
          c.ws_text = iocb.opcode == WSLAY_TEXT_FRAME;
        }
        if (wslay_is_ctrl_frame(iocb.opcode)) c.ws_control.clear();
      }
      const bool control = wslay_is_ctrl_frame(c.ws_opcode);
      (control ? c.ws_control : c.in).append(reinterpret_cast<const char*>(iocb.data), iocb.data_length);
      c.ws_left -= std::min<std::uint64_t>(c.ws_left, iocb.data_length);
      if (c.ws_left > 0) continue;
      c.ws_in_frame = false;
      if (c.ws_opcode == WSLAY_PING) {
        wslay_event_msg pong{WSLAY_PONG, reinterpret_cast<const std::uint8_t*>(c.ws_control.data()), c.ws_control.size()};
        if (wslay_event_queue_msg(c.ws.get(), &pong) != 0) return sh.fail("wslay_event_queue_msg failed");
        ws_flush(c);
      } else if (c.ws_opcode == WSLAY_CONNECTION_CLOSE) {
        if (!sh.finished) sh.fail("WebSocket closed by the server");
        return;
      } else if (!control && c.ws_fin) {
        if (c.ws_text) on_roomd_line(c, c.in);
        c.in.clear();
      }
    }
  }

  // wslay_event for sending (queued messages, masked, and the pongs), wslay_frame for receiving.
  void make_ws(Conn& c) {
    static const wslay_event_callbacks callbacks{
        nullptr,  // (nothing is received through the event context)
        // send: collected in ws_out, which ws_flush then sends
        [](wslay_event_context_ptr, const std::uint8_t* data, std::size_t len, int, void* user) -> ssize_t {
          static_cast<Conn*>(user)->worker->ws_out.append(reinterpret_cast<const char*>(data), len);
          return static_cast<ssize_t>(len);
        },
        // genmask: xorshift64, cheap (a bench's masks need not be unpredictable)
        [](wslay_event_context_ptr, std::uint8_t* buf, std::size_t len, void* user) -> int {
          std::uint64_t& x = static_cast<Conn*>(user)->worker->mask_state;
          for (std::size_t i = 0; i < len; ++i) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = static_cast<std::uint8_t>(x);
          }
          return 0;
        },
        nullptr, nullptr, nullptr, nullptr,
    };
    static const wslay_frame_callbacks frame_callbacks{
        nullptr,  // (nothing is sent through the frame context)
        // recv: what ws_receive was given; none left: "want read"
        [](std::uint8_t* buf, std::size_t len, int, void* user) -> ssize_t {
          Worker& w = *static_cast<Conn*>(user)->worker;
          if (w.ws_in.empty()) return -1;
          std::size_t n = std::min(len, w.ws_in.size());
          std::memcpy(buf, w.ws_in.data(), n);
          w.ws_in.remove_prefix(n);
          return static_cast<ssize_t>(n);
        },
        nullptr,
    };
    wslay_event_context_ptr ctx = nullptr;
    if (wslay_event_context_client_init(&ctx, &callbacks, &c) != 0) throw std::runtime_error("wslay: out of memory");
    c.ws.reset(ctx);
    wslay_frame_context_ptr frames = nullptr;
    if (wslay_frame_context_init(&frames, &frame_callbacks, &c) != 0) throw std::runtime_error("wslay: out of memory");
    c.ws_frames.reset(frames);
  }

  // The stream of a tcp or tls connection: JSON lines, or RESP.
  // Complete lines (roomd) or RESP frames (Redis) are parsed where the read put them; only a
  // partial one waits in c.in, which is completed a piece at a time, so it stays about one
  // line long. Copying every read into c.in instead grew 10,000 buffers to 64 KB each: in a
  // fan-out to 10,000 the generator spent over half its time faulting them in and unmapping
  // them (perf), and was the run's limit, not the server.
  void on_stream(Conn& c, std::string_view data) {
    const bool roomd = target_of(c) == Target::roomd;
    auto parse = [&](std::string_view view) {  // returns the bytes of complete lines or frames
      std::size_t consumed = 0;
      if (roomd) {
        for (;;) {
          auto nl = view.find('\n', consumed);
          if (nl == std::string_view::npos) break;
          on_roomd_line(c, view.substr(consumed, nl - consumed));
          consumed = nl + 1;
        }
      } else {
        for (;;) {
          std::size_t used = redis_frame(c, view.substr(consumed));
          if (used == 0) break;
          consumed += used;
        }
      }
      return consumed;
    };
    while (!c.in.empty() && !data.empty()) {
      auto piece = data.substr(0, std::max<std::size_t>(4096, c.in.size()));  // a long line: doubling
      data.remove_prefix(piece.size());
      c.in.append(piece);
      c.in.erase(0, parse(c.in));
    }
    if (data.empty()) return;
    c.in.assign(data.substr(parse(data)));
  }

  // ---- connecting ---------------------------------------------------------------------

  void add(Role role, int room, bool versus = false) {
    auto c = std::make_unique<Conn>();
    c->worker = this;
    c->role = role;
    c->versus = versus;
    c->room = room;
    c->port = versus ? o.versus_port : o.port;
    if (!versus && (role == Role::receiver || role == Role::idle) && !o.member_ports.empty())
      c->port = o.member_ports[static_cast<std::size_t>(sh.next_member_port++) % o.member_ports.size()];
    if (o.ws()) make_ws(*c);
    if (role == Role::publisher) publishers.push_back(c.get());
    conns.push_back(std::move(c));
  }

  void connect_more() {
    while (next_to_connect < static_cast<int>(conns.size()) && setting_up < o.connect_window) {
      Conn& c = *conns[static_cast<std::size_t>(next_to_connect++)];
      sockaddr_in addr{};
      if (!sh.check(uv_ip4_addr(o.host.c_str(), c.port, &addr), "--host")) return;
      if (!sh.check(uv_tcp_init(&loop, &c.tcp), "uv_tcp_init")) return;
      c.tcp.data = &c;
      c.connect_req.data = &c;
      int rc = uv_tcp_connect(&c.connect_req, &c.tcp, reinterpret_cast<sockaddr*>(&addr),
                              [](uv_connect_t* req, int status) {
        auto* c = static_cast<Conn*>(req->data);
        Worker& w = *c->worker;
        if (!w.sh.check(status, "connect")) return;
        if (!w.sh.check(uv_tcp_nodelay(&c->tcp, 1), "uv_tcp_nodelay")) return;
        int read = uv_read_start(
            reinterpret_cast<uv_stream_t*>(&c->tcp),
            [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
              Worker& w = *static_cast<Conn*>(h->data)->worker;
              *buf = uv_buf_init(w.read_buffer, sizeof w.read_buffer);
            },
            [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
              auto* c = static_cast<Conn*>(s->data);
              if (n > 0) c->worker->on_bytes(*c, buf->base, static_cast<std::size_t>(n));
              else if (n < 0 && !c->worker->sh.finished) c->worker->sh.fail("connection closed by the server");
            });
        if (!w.sh.check(read, "uv_read_start")) return;
        if (w.sh.tls_context) {  // the ClientHello; the upgrade (wss) follows the handshake
          c->tls = std::make_unique<roomd::TlsChannel>(w.sh.tls_context, w.o.host);
          c->tls->start_handshake();
          if (c->tls->failed()) return w.sh.fail("TLS: " + c->tls->error());
          w.tls_flush(*c);
        } else if (w.o.ws()) {
          w.send_upgrade(*c);
        }
        if (w.target_of(*c) == Target::redis) {
          if (c->role == Role::receiver || c->role == Role::idle)
            w.send(*c, w.redis_command({"SUBSCRIBE", w.room_name(c->room)}));
          else
            w.mark_ready(*c);  // (which connects the next)
        }
      });
      if (!sh.check(rc, "connect")) return;
      ++setting_up;
    }
  }

  void mark_ready(Conn& c) {
    if (c.ready) return;
    c.ready = true;
    --setting_up;
    connect_more();
    if (++sh.ready == sh.total_conns) {
      sh.ready_ns = now_ns();
      sh.check(uv_async_send(&sh.first().wake), "uv_async_send");
    }
  }

  // ---- running (worker 0) -------------------------------------------------------------

  void all_ready() {
    began = true;
    if (o.scenario == "idle") {
      // Let the server settle, then read its memory.
      if (!sh.check(uv_timer_init(&loop, &settle_timer), "uv_timer_init")) return;
      settle_timer.data = this;
      sh.check(uv_timer_start(&settle_timer, [](uv_timer_t* t) {
        auto* w = static_cast<Worker*>(t->data);
        if (w->o.server_pid) w->rss_after_kb = rss_kb(w->o.server_pid);
        w->sh.finish();
      }, 1000, 0), "uv_timer_start");
      return;
    }
    if (o.scenario == "churn" && o.settle > 0) {
      if (!sh.check(uv_timer_init(&loop, &settle_timer), "uv_timer_init")) return;
      settle_timer.data = this;
      sh.check(uv_timer_start(&settle_timer, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->start_run(); },
                              static_cast<std::uint64_t>(o.settle * 1000), 0), "uv_timer_start");
      return;
    }
    start_run();
  }

  void start_run() {
    sh.read_cpu(sh.cpu_start);
    sh.start_ns = now_ns();
    sh.started = true;
    sh.wake_all();  // the storm's or the churners' thread starts
    if (o.scenario == "latency" || o.scenario == "storm" || o.scenario == "churn") {
      if (!sh.check(uv_timer_init(&loop, &rate_timer), "uv_timer_init")) return;
      rate_timer.data = this;
      // A 1 ms tick sends what the rate owes since the start: steady, whatever the tick jitter.
      sh.check(uv_timer_start(&rate_timer, [](uv_timer_t* t) {
        auto* w = static_cast<Worker*>(t->data);
        double elapsed = static_cast<double>(now_ns() - w->sh.start_ns) / 1e9;
        long total = static_cast<long>(w->o.rate * w->o.duration);
        long owed = std::min<long>(static_cast<long>(elapsed * w->o.rate), total);
        while (w->published < owed) {  // with a versus server, to the server whose phase it is
          bool versus = w->o.versus_port && w->phase_b(now_ns());
          w->publish(*w->publishers[versus ? 1 : 0]);
        }
        if (w->published >= total) w->sh.check(uv_timer_stop(t), "uv_timer_stop");
      }, 1, 1), "uv_timer_start");
    } else {
      if (o.publish_rate > 0) {  // a capped publisher is also resumed by a 1 ms tick
        if (!sh.check(uv_timer_init(&loop, &rate_timer), "uv_timer_init")) return;
        rate_timer.data = this;
        if (!sh.check(uv_timer_start(&rate_timer, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->pump(); }, 1, 1),
                      "uv_timer_start"))
          return;
      }
      pump();
    }
  }

  // Publishers send while the receivers are less than `window` messages behind.
  void pump() {
    if (o.scenario != "fanout" && o.scenario != "rooms") return;
    std::uint64_t per_msg = static_cast<std::uint64_t>(o.members);
    long allowed = o.messages;
    if (o.publish_rate > 0)
      allowed = std::min<long>(o.messages, 1 + static_cast<long>(static_cast<double>(now_ns() - sh.start_ns) / 1e9 *
                                                                o.publish_rate));
    bool progress = true;
    while (progress) {
      progress = false;
      for (Conn* p : publishers) {
        if (p->sent >= allowed) continue;
        sh.publisher_waiting = true;  // before reading the count, so no wake-up is missed
        std::uint64_t behind = static_cast<std::uint64_t>(published) - sh.deliveries / per_msg;
        if (behind >= static_cast<std::uint64_t>(o.window)) return;
        sh.publisher_waiting = false;
        publish(*p);
        progress = true;
      }
    }
  }

  void run() { uv_run(&loop, UV_RUN_DEFAULT); }

  // Once no thread runs or wakes this loop: close every handle (pending writes complete
  // as cancelled and free themselves), then the loop.
  void close() {
    uv_walk(&loop, [](uv_handle_t* h, void*) { if (!uv_is_closing(h)) uv_close(h, nullptr); }, nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (int rc = uv_loop_close(&loop); rc < 0)
      std::fprintf(stderr, "roomd-bench: a loop did not close: %s\n", uv_strerror(rc));
  }
};

void Shared::wake_all() {
  for (auto& w : workers) check(uv_async_send(&w->wake), "uv_async_send");
}

void Shared::add_deliveries(std::uint64_t n) {
  std::uint64_t total = deliveries += n;
  if (expected > 0 && total >= expected) return finish();
  if (publisher_waiting) check(uv_async_send(&first().wake), "uv_async_send");
}

int report(Shared& sh, long rss_before_kb) {
  const Options& o = sh.o;
  Worker& w0 = sh.first();
  std::vector<std::uint32_t> latencies_us, quiet_us, versus_us;
  for (auto& w : sh.workers) {
    latencies_us.insert(latencies_us.end(), w->latencies_us.begin(), w->latencies_us.end());
    quiet_us.insert(quiet_us.end(), w->quiet_latencies_us.begin(), w->quiet_latencies_us.end());
    versus_us.insert(versus_us.end(), w->versus_latencies_us.begin(), w->versus_latencies_us.end());
  }
  double secs = sh.started ? static_cast<double>(sh.end_ns - sh.start_ns) / 1e9 : 0.0;
  std::uint64_t deliveries = sh.deliveries;
  std::uint64_t lost = sh.expected > deliveries ? sh.expected - deliveries : 0;
  std::uint64_t versus_lost = 0;  // with a versus server, lost is split between the two
  if (o.versus_port && w0.publishers.size() == 2) {
    auto versus_expected = static_cast<std::uint64_t>(w0.publishers[1]->sent) * static_cast<std::uint64_t>(o.members);
    versus_lost = versus_expected - std::min(versus_expected, sh.versus_deliveries.load());
    lost -= std::min(lost, versus_lost);
  }
  std::string target = name_of(o.target);
  std::string kv = "target=" + target + " scenario=" + o.scenario;
  auto add = [&](const std::string& k, const std::string& v) { kv += " " + k + "=" + v; };
  const char* transports[] = {"tcp", "tls", "ws", "wss"};
  add("transport", transports[static_cast<int>(o.transport)]);
  std::printf("roomd-bench  target=%s  scenario=%s  transport=%s  threads=%d\n", target.c_str(), o.scenario.c_str(),
              transports[static_cast<int>(o.transport)], o.threads);
  std::printf("  %-22s %s\n", "figure", "value");
  auto row = [&](const char* name, const std::string& value) {
    std::printf("  %-22s %s\n", name, value.c_str());
    add(name, value);
  };
  char buf[64];
  std::uint64_t bytes_read = 0;
  for (auto& w : sh.workers) bytes_read += w->bytes_read;
  if (sh.ready_ns) {
    std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(sh.ready_ns - sh.connect_ns) / 1e9);
    row("join_s", buf);
  }
  if (o.scenario == "idle") {
    row("connections", std::to_string(sh.total_conns));
    row("ready", std::to_string(sh.ready));
    if (rss_before_kb >= 0 && w0.rss_after_kb >= 0) {
      row("server_rss_before_kb", std::to_string(rss_before_kb));
      row("server_rss_after_kb", std::to_string(w0.rss_after_kb));
      std::snprintf(buf, sizeof buf, "%.0f", (static_cast<double>(w0.rss_after_kb - rss_before_kb) * 1024.0) / static_cast<double>(std::max(sh.ready.load(), 1)));
      row("bytes_per_conn", buf);
    }
    row("bytes_read", std::to_string(bytes_read));
  } else {
    row("members", std::to_string(o.members));
    row("published", std::to_string(w0.published));
    row("deliveries", std::to_string(deliveries));
    row("lost", std::to_string(lost));
    std::snprintf(buf, sizeof buf, "%.3f", secs);
    row("seconds", buf);
    std::snprintf(buf, sizeof buf, "%.0f", secs > 0 ? static_cast<double>(deliveries) / secs : 0.0);
    row("deliveries_per_s", buf);
    auto pct = [](std::vector<std::uint32_t>& v, double p) {
      return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
    };
    std::sort(latencies_us.begin(), latencies_us.end());
    std::sort(quiet_us.begin(), quiet_us.end());
    std::sort(versus_us.begin(), versus_us.end());
    if (!latencies_us.empty()) {  // storm: the storm phases'; versus: the first server's phases'
      row("p50_us", std::to_string(pct(latencies_us, 0.50)));
      row("p90_us", std::to_string(pct(latencies_us, 0.90)));
      row("p99_us", std::to_string(pct(latencies_us, 0.99)));
      row("max_us", std::to_string(latencies_us.back()));
    }
    if (o.versus_port) {  // lost deliveries are reported whether or not anything arrived
      row("versus", name_of(o.versus_target));
      row("versus_lost", std::to_string(versus_lost));
      if (!latencies_us.empty() && !versus_us.empty()) {
        row("versus_p50_us", std::to_string(pct(versus_us, 0.50)));
        row("versus_p90_us", std::to_string(pct(versus_us, 0.90)));
        row("versus_p99_us", std::to_string(pct(versus_us, 0.99)));
        row("versus_max_us", std::to_string(versus_us.back()));
        for (double p : {0.50, 0.99}) {
          std::snprintf(buf, sizeof buf, "%.2f",
                        static_cast<double>(pct(latencies_us, p)) / std::max<double>(1, pct(versus_us, p)));
          row(p == 0.50 ? "p50_ratio" : "p99_ratio", buf);
        }
      }
    }
    if (o.scenario == "churn") {
      std::uint64_t events = 0, summaries = 0, gaps = 0;
      for (auto& w : sh.workers) {
        events += w->presence_events;
        summaries += w->presence_summaries;
        gaps += w->gaps;
      }
      row("gaps", std::to_string(gaps));
      row("churners", std::to_string(o.churners));
      row("churn_ops", std::to_string(sh.workers.back()->churn_ops));
      std::snprintf(buf, sizeof buf, "%.0f", o.duration > 0 ? static_cast<double>(sh.workers.back()->churn_ops) / o.duration : 0.0);
      row("churn_ops_per_s", buf);
      row("presence_events", std::to_string(events));
      row("presence_summaries", std::to_string(summaries));
    }
    if (o.scenario == "storm") {
      row("storm_requests", std::to_string(sh.workers.back()->storm_requests));
      if (!quiet_us.empty() && !latencies_us.empty()) {
        row("quiet_p50_us", std::to_string(pct(quiet_us, 0.50)));
        row("quiet_p99_us", std::to_string(pct(quiet_us, 0.99)));
        std::snprintf(buf, sizeof buf, "%.2f",
                      static_cast<double>(pct(latencies_us, 0.99)) / std::max<double>(1, pct(quiet_us, 0.99)));
        row("storm_p99_ratio", buf);
      }
    }
  }
  // --cpu-pid: each process's CPU time over the run (from the first message until the last
  // delivery), and per message published. The kernel counts in ticks (10 ms at 100 Hz).
  if (sh.cpu_start.size() == o.cpu_pids.size() && sh.cpu_end.size() == o.cpu_pids.size()) {
    const double tick_s = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
    for (std::size_t i = 0; i < o.cpu_pids.size(); ++i) {
      if (sh.cpu_start[i] < 0 || sh.cpu_end[i] < 0) continue;  // the process went meanwhile
      const double cpu_s = static_cast<double>(sh.cpu_end[i] - sh.cpu_start[i]) * tick_s;
      const std::string& name = o.cpu_pids[i].first;
      std::snprintf(buf, sizeof buf, "%.3f", cpu_s);
      row((name + "_cpu_s").c_str(), buf);
      std::snprintf(buf, sizeof buf, "%.2f", w0.published > 0 ? cpu_s * 1e6 / static_cast<double>(w0.published) : 0.0);
      row((name + "_cpu_us_per_msg").c_str(), buf);
    }
  }
  if (!sh.error_text.empty()) {  // quoted; a quote inside (a JSON error line) becomes ' for the parsers
    std::string why = sh.error_text.substr(0, 80);
    std::replace(why.begin(), why.end(), '"', '\'');
    add("error", "\"" + why + "\"");
  }
  std::printf("%s\n", kv.c_str());
  std::fflush(stdout);
  return sh.error_text.empty() || (o.scenario == "idle" && sh.ready == sh.total_conns) ? 0 : 1;
}

int run(Shared& sh) {
  const Options& o = sh.o;
  const bool side_loop = o.scenario == "storm" || o.scenario == "churn";
  const int loops = o.threads + (side_loop ? 1 : 0);  // the storm's or the churners' own, last
  for (int i = 0; i < loops; ++i) sh.workers.push_back(std::make_unique<Worker>(sh, i));
  Worker& w0 = sh.first();
  int next_receiver = 0;
  auto receiver_worker = [&]() -> Worker& {
    return *sh.workers[static_cast<std::size_t>(next_receiver++ % o.threads)];
  };
  if (o.scenario == "fanout" || o.scenario == "latency" || o.scenario == "storm" || o.scenario == "churn") {
    // fanout: --publishers of them in the one room, each saying --messages
    const int publishers = o.scenario == "fanout" ? o.publishers : 1;
    for (int i = 0; i < publishers; ++i) w0.add(Role::publisher, 0);
    for (int i = 0; i < o.members; ++i) receiver_worker().add(Role::receiver, 0);
    if (o.versus_port) {  // the same room and members on the second server: publishers[1]
      w0.add(Role::publisher, 0, true);
      for (int i = 0; i < o.members; ++i) receiver_worker().add(Role::receiver, 0, true);
    }
    if (o.scenario == "storm")
      for (int i = 0; i < o.storm_clients; ++i) {
        Worker& storm = *sh.workers.back();
        storm.add(Role::storm, 0);
        storm.conns.back()->seeder = i == 0 && o.storm_seed > 0 && o.target == Target::roomd;
      }
    if (o.scenario == "churn")
      for (int i = 0; i < o.churners; ++i) sh.workers.back()->add(Role::churner, 0);
    sh.expected = o.scenario == "fanout"
                      ? static_cast<std::uint64_t>(o.messages) * static_cast<std::uint64_t>(o.members) *
                            static_cast<std::uint64_t>(publishers)
                      : static_cast<std::uint64_t>(o.rate * o.duration) * static_cast<std::uint64_t>(o.members);
  } else if (o.scenario == "rooms") {
    for (int r = 0; r < o.rooms; ++r) {
      if (r < o.publishers) w0.add(Role::publisher, r);
      for (int i = 0; i < o.members; ++i) receiver_worker().add(Role::receiver, r);
    }
    // Only the rooms with a publisher get messages.
    sh.expected = static_cast<std::uint64_t>(o.messages) * static_cast<std::uint64_t>(o.members) *
                  static_cast<std::uint64_t>(std::min(o.rooms, o.publishers));
  } else if (o.scenario == "idle") {
    // Spread over --rooms; with --rooms 1 all join one room, and the setup then measures the
    // server's cost of a big room: every `joined` reply's member list and every presence
    // event, all of which the generator reads (join_s), and what is still queued (bytes_per_conn).
    for (int i = 0; i < o.connections; ++i) receiver_worker().add(Role::idle, i % std::max(o.rooms, 1));
  } else {
    std::fprintf(stderr, "roomd-bench: unknown scenario '%s'\n", o.scenario.c_str());
    return 2;
  }
  for (auto& w : sh.workers) sh.total_conns += static_cast<int>(w->conns.size());
  long rss_before_kb = o.server_pid ? rss_kb(o.server_pid) : -1;

  must(uv_timer_init(&w0.loop, &w0.timeout_timer), "uv_timer_init");
  w0.timeout_timer.data = &sh;
  must(uv_timer_start(&w0.timeout_timer, [](uv_timer_t* t) { static_cast<Shared*>(t->data)->fail("timeout"); },
                      static_cast<std::uint64_t>(o.timeout * 1000), 0),
       "uv_timer_start");
  sh.connect_ns = now_ns();
  for (auto& w : sh.workers) w->connect_more();
  for (std::size_t i = 1; i < sh.workers.size(); ++i) {
    Worker* w = sh.workers[i].get();
    w->thread = std::thread([w] { w->run(); });
  }
  w0.run();
  sh.finish();  // stops the others if worker 0 stopped first
  for (std::size_t i = 1; i < sh.workers.size(); ++i) sh.workers[i]->thread.join();
  int rc = report(sh, rss_before_kb);
  for (auto& w : sh.workers) w->close();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"roomd-bench: fan-out, latency, idle-memory and storm benchmarks for roomd (or Redis)"};
  Options o;
  std::string target = "roomd";
  app.add_option("scenario", o.scenario, "fanout | rooms | latency | idle | storm | churn")->required();
  app.add_option("--target", target, "roomd or redis");
  app.add_option("--host", o.host, "server address (IPv4)");
  app.add_option("--port", o.port, "server port");
  app.add_option("--members", o.members, "receivers per room (churn: 10000 unless given)");
  app.add_option("--rooms", o.rooms, "rooms (rooms scenario; idle connections are spread over them)");
  app.add_option("--publishers", o.publishers, "publishers: one per room (rooms), all in the one room (fanout)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--messages", o.messages, "messages per publisher (fanout, rooms)");
  app.add_option("--payload", o.payload, "payload bytes per message");
  app.add_option("--rate", o.rate, "messages per second (latency, storm; churn: 100 unless given)");
  app.add_option("--publish-rate", o.publish_rate, "messages per second per publisher (fanout, rooms; default: unlimited)");
  app.add_option("--duration", o.duration, "seconds of publishing (latency, storm, churn)");
  app.add_option("--churners", o.churners, "clients joining and leaving the room (churn)")->check(CLI::Range(0, 100000));
  app.add_option("--churn-rate", o.churn_rate, "joins + leaves per second, all churners together (churn; 0: none, the control)")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--settle", o.settle, "seconds between the last member's join and the start of the run (churn)")
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--connections", o.connections, "idle connections (idle)");
  app.add_option("--server-pid", o.server_pid, "read the server's RSS from /proc (idle)");
  app.add_option("--window", o.window, "messages a publisher may be ahead of its receivers");
  app.add_option("--storm-clients", o.storm_clients, "clients flooding keyed joins and searches (storm)");
  app.add_option("--storm-mix", o.storm_mix, "what the storm clients send: joins, searches or both")
      ->check(CLI::IsMember({"joins", "searches", "both"}));
  app.add_option("--storm-seed", o.storm_seed, "messages said in the history room before a storm (0: none)");
  app.add_option("--phases,--storm-phases", o.phases,
                 "storm: quiet and storm phases alternate, this many in all (1: storm throughout); "
                 "latency with --versus-port: the two servers' phases")
      ->check(CLI::Range(1, 1000));
  app.add_option("--versus-port", o.versus_port,
                 "latency: also measure the server on this port, in alternate phases of the same run");
  std::string versus_target = "redis";
  app.add_option("--versus-target", versus_target, "what listens on --versus-port: redis or roomd")
      ->check(CLI::IsMember({"redis", "roomd"}));
  app.add_option("--member-port", o.member_ports,
                 "a cluster: the members connect to these ports in turn (repeat it, or PORT,PORT), "
                 "the publisher to --port")
      ->allow_extra_args(false)  // one value a time: the scenario after it is not a port
      ->delimiter(',')
      ->check(CLI::Range(1, 65535));
  std::vector<std::string> cpu_pids;
  app.add_option("--cpu-pid", cpu_pids,
                 "NAME=PID: the process's CPU time over the run, as NAME_cpu_s and NAME_cpu_us_per_msg (repeatable)")
      ->allow_extra_args(false);
  app.add_flag("--storm-distinct-keys", o.storm_distinct_keys,
               "every storm join guesses a new key (a brute-force attack: each is an argon2id check)");
  app.add_option("--connect-window", o.connect_window,
                 "connections being set up (connecting or joining) at once, per generator thread")
      ->check(CLI::Range(1, 100000));
  app.add_option("--threads", o.threads, "generator threads, each with its own loop (receivers are dealt among them)");
  app.add_option("--timeout", o.timeout, "give up after this many seconds");
  std::string transport = "tcp";
  app.add_option("--transport", transport,
                 "roomd: tcp, tls, ws (WebSocket) or wss (WebSocket over TLS); --port is that listener's")
      ->check(CLI::IsMember({"tcp", "tls", "ws", "wss"}));
  app.add_option("--ca", o.ca, "tls, wss: the CA bundle to verify the server against (default: the system's)");
  app.add_flag("--insecure", o.insecure, "tls, wss: do not verify the server's certificate (a self-signed bench server)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.target = target == "redis" ? Target::redis : Target::roomd;
  if (o.scenario == "churn") {  // issue 17's case: a 10,000-member room, 100 messages a second
    if (!app.count("--members")) o.members = 10000;
    if (!app.count("--rate")) o.rate = 100;
  }
  o.versus_target = versus_target == "redis" ? Target::redis : Target::roomd;
  o.transport = transport == "tls" ? Transport::tls : transport == "ws" ? Transport::ws
                : transport == "wss" ? Transport::wss : Transport::tcp;
  if (o.transport != Transport::tcp && (o.target == Target::redis || (o.versus_port && o.versus_target == Target::redis))) {
    std::fprintf(stderr, "roomd-bench: --transport %s is for roomd targets only\n", transport.c_str());
    return 2;
  }
  if ((!o.ca.empty() || o.insecure) && !o.tls()) {
    std::fprintf(stderr, "roomd-bench: --ca and --insecure are for --transport tls or wss\n");
    return 2;
  }
  if (o.versus_port && (o.scenario != "latency" || o.phases < 2)) {
    std::fprintf(stderr, "roomd-bench: --versus-port is for the latency scenario, with --phases of 2 or more\n");
    return 2;
  }
  if (!o.member_ports.empty() && o.versus_port) {
    std::fprintf(stderr, "roomd-bench: --member-port and --versus-port do not go together\n");
    return 2;
  }
  for (const auto& named : cpu_pids) {
    auto eq = named.find('=');
    std::string name = named.substr(0, eq);
    char* end = nullptr;
    long pid = eq == std::string::npos ? 0 : std::strtol(named.c_str() + eq + 1, &end, 10);
    bool good_name = !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char ch) {
      return std::islower(ch) || std::isdigit(ch) || ch == '_';
    });
    if (!good_name || pid <= 0 || *end != '\0') {
      std::fprintf(stderr, "roomd-bench: --cpu-pid is NAME=PID, NAME of a-z, 0-9 and _ (got '%s')\n", named.c_str());
      return 2;
    }
    if (cpu_ticks(pid) < 0) {
      std::fprintf(stderr, "roomd-bench: --cpu-pid %s: cannot read /proc/%ld/stat\n", named.c_str(), pid);
      return 2;
    }
    o.cpu_pids.emplace_back(name, pid);
  }
  if (target != "redis" && target != "roomd") {
    std::fprintf(stderr, "roomd-bench: --target is roomd or redis\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (o.threads < 1 || o.threads > 64) {
    std::fprintf(stderr, "roomd-bench: --threads is 1 to 64\n");
    return 2;
  }
  if (sockaddr_in probe{}; uv_ip4_addr(o.host.c_str(), o.port, &probe) < 0) {
    std::fprintf(stderr, "roomd-bench: --host is an IPv4 address\n");
    return 2;
  }
  Shared shared;
  shared.o = o;
  if (o.tls()) {
    roomd::TlsFiles files;
    files.ca = o.ca;
    files.verify = !o.insecure;
    auto loaded = roomd::TlsContext::load(roomd::TlsContext::Side::client, files);
    if (auto* why = std::get_if<std::string>(&loaded)) {
      std::fprintf(stderr, "roomd-bench: TLS: %s\n", why->c_str());
      return 2;
    }
    shared.tls_context = std::get<std::shared_ptr<roomd::TlsContext>>(std::move(loaded));
    // roomd's contexts give an idle connection's buffers back (SSL_MODE_RELEASE_BUFFERS); a
    // receiver that reads all the time would then allocate, fault in and free a 16 KB record
    // buffer for every read (a quarter of the generator's time in a TLS fan-out 1->1000,
    // measured with perf). The generator keeps them, except for idle's many connections.
    if (o.scenario != "idle") SSL_CTX_clear_mode(shared.tls_context->get(), SSL_MODE_RELEASE_BUFFERS);
  }
  try {
    return run(shared);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "roomd-bench: %s\n", e.what());
    return 1;
  }
}
