// roomd-bench: load generator for roomd (and, for comparison, Redis pub/sub).
//
// One libuv loop drives every connection. Receivers count deliveries and read the send
// time from the payload ("t=<ns>;…") without parsing the JSON, so the generator stays cheap.
// Scenarios: fanout, rooms, latency, idle, storm. Every run is bounded by --timeout.
#include <CLI/CLI.hpp>
#include <uv.h>

#include <algorithm>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <sys/resource.h>
#include <vector>

namespace {

enum class Target { roomd, redis };
enum class Role { publisher, receiver, idle, storm };

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
  double duration = 5;
  int connections = 1000;
  long server_pid = 0;
  double timeout = 60;
  long window = 2000;
  int storm_clients = 8;
  std::string storm_mix = "both";  // joins | searches | both
  bool storm_distinct_keys = false;  // a brute-force attack rather than a reconnect storm
  std::string storm_key_room = "vault";
  std::string storm_history_room = "lobby";
};

struct Bench;

struct Conn {
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  Bench* bench = nullptr;
  Role role = Role::receiver;
  int room = 0;
  bool ready = false;
  std::string in;          // unparsed input
  std::uint64_t received = 0;
  long sent = 0;           // publisher: messages sent
};

struct Write {
  uv_write_t req;
  std::string data;
};

std::uint64_t now_ns() { return uv_hrtime(); }

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

struct Bench {
  Options o;
  uv_loop_t* loop = uv_default_loop();
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<Conn*> publishers;
  int receivers = 0;
  int ready = 0;
  int connected_or_failed = 0;
  int next_to_connect = 0;
  int in_flight_connects = 0;
  bool started = false;
  bool finished = false;
  std::uint64_t start_ns = 0, end_ns = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t expected = 0;
  long published = 0;
  std::vector<std::uint32_t> latencies_us;
  std::uint64_t storm_requests = 0;
  std::string filler;
  uv_timer_t timeout_timer{}, rate_timer{}, settle_timer{};
  long rss_before_kb = -1, rss_after_kb = -1;
  int errors = 0;
  std::string error_text;

  std::string room_name(int r) const { return "bench" + std::to_string(r); }

  void send(Conn& c, std::string data) {
    auto* w = new Write{{}, std::move(data)};
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    w->req.data = w;
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

  // "t=<send ns>;" then filler up to the payload size.
  std::string payload() {
    char head[40];
    int n = std::snprintf(head, sizeof head, "t=%" PRIu64 ";", now_ns());
    std::string p(head, static_cast<std::size_t>(n));
    if (static_cast<int>(p.size()) < o.payload) p.append(filler, 0, static_cast<std::size_t>(o.payload) - p.size());
    return p;
  }

  void publish(Conn& c) {
    std::string room = room_name(c.room);
    if (o.target == Target::roomd)
      send(c, "{\"op\":\"say\",\"room\":\"" + room + "\",\"text\":\"" + payload() + "\"}\n");
    else
      send(c, redis_command({"PUBLISH", room, payload()}));
    ++c.sent;
    ++published;
  }

  void storm_request(Conn& c) {
    ++storm_requests;
    if (o.target != Target::roomd) return;
    bool join = o.storm_mix == "joins" || (o.storm_mix == "both" && storm_requests % 2);
    if (join)
      send(c, "{\"op\":\"join\",\"room\":\"" + o.storm_key_room + "\",\"key\":\"wrong guess" +
                  (o.storm_distinct_keys ? " " + std::to_string(storm_requests) : std::string()) + "\"}\n");
    else
      send(c, "{\"op\":\"history\",\"room\":\"" + o.storm_history_room + "\",\"search\":\"payload\",\"limit\":50}\n");
  }

  void on_delivery(std::string_view payload_part) {
    ++deliveries;
    if (o.scenario == "latency" || o.scenario == "storm") {
      auto t = payload_part.find("t=");
      if (t != std::string_view::npos) {
        std::uint64_t sent = std::strtoull(payload_part.data() + t + 2, nullptr, 10);
        latencies_us.push_back(static_cast<std::uint32_t>((now_ns() - sent) / 1000));
      }
    }
  }

  // ---- input --------------------------------------------------------------------------

  void on_roomd_line(Conn& c, std::string_view line) {
    if (line.starts_with("{\"op\":\"message\"")) {
      if (c.role == Role::receiver) on_delivery(line);
      return;
    }
    if (!c.ready) {
      if (line.starts_with("{\"op\":\"welcome\"")) {
        if (c.role == Role::storm) return mark_ready(c);
        send(c, "{\"op\":\"join\",\"room\":\"" + room_name(c.room) + "\"}\n");
      } else if (line.starts_with("{\"op\":\"joined\"")) {
        mark_ready(c);
      } else if (line.starts_with("{\"op\":\"error\"")) {
        fail(std::string(line));
      }
      return;
    }
    if (c.role == Role::storm && (line.starts_with("{\"op\":\"error\"") || line.starts_with("{\"op\":\"history\"")))
      if (started && !finished) storm_request(c);
    if (line.starts_with("{\"op\":\"error\"") && c.role != Role::storm) fail(std::string(line));
  }

  // Parses complete RESP frames from c.in; returns bytes consumed (0: need more).
  std::size_t redis_frame(Conn& c, std::string_view in) {
    auto line_end = [&](std::size_t from) { return in.find("\r\n", from); };
    if (in.empty()) return 0;
    if (in[0] == ':' || in[0] == '+' || in[0] == '-') {
      auto e = line_end(0);
      if (e == std::string_view::npos) return 0;
      if (in[0] == '-') fail(std::string(in.substr(0, e)));
      return e + 2;
    }
    if (in[0] != '*') {
      fail("unexpected RESP");
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
      if (c.role == Role::receiver) on_delivery(last);
    } else if (first == "subscribe" && !c.ready) {
      mark_ready(c);
    }
    return pos;
  }

  void on_bytes(Conn& c, const char* data, std::size_t n) {
    c.in.append(data, n);
    std::string_view view = c.in;
    std::size_t consumed = 0;
    if (o.target == Target::roomd) {
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
    c.in.erase(0, consumed);
    if (started && !finished) pump();
  }

  // ---- connecting ---------------------------------------------------------------------

  void add(Role role, int room) {
    auto c = std::make_unique<Conn>();
    c->bench = this;
    c->role = role;
    c->room = room;
    if (role == Role::publisher) publishers.push_back(c.get());
    if (role == Role::receiver) ++receivers;
    conns.push_back(std::move(c));
  }

  void connect_more() {
    sockaddr_in addr{};
    uv_ip4_addr(o.host.c_str(), o.port, &addr);
    while (next_to_connect < static_cast<int>(conns.size()) && in_flight_connects < 128) {
      Conn& c = *conns[static_cast<std::size_t>(next_to_connect++)];
      uv_tcp_init(loop, &c.tcp);
      c.tcp.data = &c;
      c.connect_req.data = &c;
      ++in_flight_connects;
      uv_tcp_connect(&c.connect_req, &c.tcp, reinterpret_cast<sockaddr*>(&addr), [](uv_connect_t* req, int status) {
        auto* c = static_cast<Conn*>(req->data);
        Bench& b = *c->bench;
        --b.in_flight_connects;
        if (status < 0) return b.fail(std::string("connect: ") + uv_strerror(status));
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start(
            reinterpret_cast<uv_stream_t*>(&c->tcp),
            [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
              static char shared[1 << 16];  // one buffer: the bench is single-threaded
              *buf = uv_buf_init(shared, sizeof shared);
            },
            [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
              auto* c = static_cast<Conn*>(s->data);
              if (n > 0) c->bench->on_bytes(*c, buf->base, static_cast<std::size_t>(n));
              else if (n < 0 && !c->bench->finished) c->bench->fail("connection closed by the server");
            });
        if (b.o.target == Target::redis) {
          if (c->role == Role::receiver || c->role == Role::idle)
            b.send(*c, b.redis_command({"SUBSCRIBE", b.room_name(c->room)}));
          else
            b.mark_ready(*c);
        }
        b.connect_more();
      });
    }
  }

  void mark_ready(Conn& c) {
    if (c.ready) return;
    c.ready = true;
    if (++ready == static_cast<int>(conns.size())) all_ready();
  }

  // ---- running ------------------------------------------------------------------------

  void all_ready() {
    if (o.scenario == "idle") {
      // Let the server settle, then read its memory.
      uv_timer_init(loop, &settle_timer);
      settle_timer.data = this;
      uv_timer_start(&settle_timer, [](uv_timer_t* t) {
        auto* b = static_cast<Bench*>(t->data);
        if (b->o.server_pid) b->rss_after_kb = rss_kb(b->o.server_pid);
        b->finish();
      }, 1000, 0);
      return;
    }
    started = true;
    start_ns = now_ns();
    for (auto& c : conns)
      if (c->role == Role::storm) storm_request(*c);
    if (o.scenario == "latency" || o.scenario == "storm") {
      expected = static_cast<std::uint64_t>(o.rate * o.duration) * static_cast<std::uint64_t>(o.members);
      uv_timer_init(loop, &rate_timer);
      rate_timer.data = this;
      // A 1 ms tick sends what the rate owes since the start: steady, whatever the tick jitter.
      uv_timer_start(&rate_timer, [](uv_timer_t* t) {
        auto* b = static_cast<Bench*>(t->data);
        double elapsed = static_cast<double>(now_ns() - b->start_ns) / 1e9;
        long owed = std::min<long>(static_cast<long>(elapsed * b->o.rate), static_cast<long>(b->o.rate * b->o.duration));
        while (b->published < owed) b->publish(*b->publishers[0]);
        if (b->published >= static_cast<long>(b->o.rate * b->o.duration)) uv_timer_stop(t);
        b->check_done();
      }, 1, 1);
    } else {
      expected = static_cast<std::uint64_t>(o.messages) * static_cast<std::uint64_t>(o.members) *
                 static_cast<std::uint64_t>(o.scenario == "rooms" ? o.rooms : 1);
      pump();
    }
  }

  // Publishers send while the receivers are less than `window` messages behind.
  void pump() {
    if (o.scenario == "fanout" || o.scenario == "rooms") {
      std::uint64_t per_msg = static_cast<std::uint64_t>(o.members);
      bool progress = true;
      while (progress) {
        progress = false;
        for (Conn* p : publishers) {
          if (p->sent >= o.messages) continue;
          std::uint64_t behind = static_cast<std::uint64_t>(published) - deliveries / per_msg;
          if (behind >= static_cast<std::uint64_t>(o.window)) return check_done();
          publish(*p);
          progress = true;
        }
      }
    }
    check_done();
  }

  void check_done() {
    if (!finished && started && deliveries >= expected && expected > 0) finish();
  }

  void fail(const std::string& why) {
    ++errors;
    if (error_text.empty()) error_text = why;
    finish();
  }

  void finish() {
    if (finished) return;
    finished = true;
    end_ns = now_ns();
    uv_stop(loop);
  }

  int run() {
    filler.assign(static_cast<std::size_t>(std::max(o.payload, 1)), 'x');
    if (o.server_pid) rss_before_kb = rss_kb(o.server_pid);
    if (o.scenario == "fanout" || o.scenario == "latency" || o.scenario == "storm") {
      add(Role::publisher, 0);
      for (int i = 0; i < o.members; ++i) add(Role::receiver, 0);
      if (o.scenario == "storm")
        for (int i = 0; i < o.storm_clients; ++i) add(Role::storm, 0);
    } else if (o.scenario == "rooms") {
      for (int r = 0; r < o.rooms; ++r) {
        if (r < o.publishers) add(Role::publisher, r);
        for (int i = 0; i < o.members; ++i) add(Role::receiver, r);
      }
    } else if (o.scenario == "idle") {
      // Spread over rooms: a join answers with the member list, so one 10,000-member room
      // would measure those replies rather than idle memory.
      for (int i = 0; i < o.connections; ++i) add(Role::idle, i % std::max(o.rooms, 1));
    } else {
      std::fprintf(stderr, "roomd-bench: unknown scenario '%s'\n", o.scenario.c_str());
      return 2;
    }
    if (o.scenario == "rooms") o.rooms = std::min(o.rooms, o.publishers);  // rooms that get messages
    uv_timer_init(loop, &timeout_timer);
    timeout_timer.data = this;
    uv_timer_start(&timeout_timer, [](uv_timer_t* t) {
      auto* b = static_cast<Bench*>(t->data);
      if (b->error_text.empty()) b->error_text = "timeout";
      b->finish();
    }, static_cast<std::uint64_t>(o.timeout * 1000), 0);
    connect_more();
    uv_run(loop, UV_RUN_DEFAULT);
    return report();
  }

  int report() {
    double secs = static_cast<double>(end_ns - start_ns) / 1e9;
    std::uint64_t lost = expected > deliveries ? expected - deliveries : 0;
    std::string target = o.target == Target::roomd ? "roomd" : "redis";
    std::string kv = "target=" + target + " scenario=" + o.scenario;
    auto add = [&](const std::string& k, const std::string& v) { kv += " " + k + "=" + v; };
    std::printf("roomd-bench  target=%s  scenario=%s\n", target.c_str(), o.scenario.c_str());
    std::printf("  %-22s %s\n", "figure", "value");
    auto row = [&](const char* name, const std::string& value) {
      std::printf("  %-22s %s\n", name, value.c_str());
      add(name, value);
    };
    char buf[64];
    if (o.scenario == "idle") {
      row("connections", std::to_string(conns.size()));
      row("ready", std::to_string(ready));
      if (rss_before_kb >= 0 && rss_after_kb >= 0) {
        row("server_rss_before_kb", std::to_string(rss_before_kb));
        row("server_rss_after_kb", std::to_string(rss_after_kb));
        std::snprintf(buf, sizeof buf, "%.0f", (static_cast<double>(rss_after_kb - rss_before_kb) * 1024.0) / static_cast<double>(std::max(ready, 1)));
        row("bytes_per_conn", buf);
      }
    } else {
      row("members", std::to_string(o.members));
      row("published", std::to_string(published));
      row("deliveries", std::to_string(deliveries));
      row("lost", std::to_string(lost));
      std::snprintf(buf, sizeof buf, "%.3f", secs);
      row("seconds", buf);
      std::snprintf(buf, sizeof buf, "%.0f", secs > 0 ? static_cast<double>(deliveries) / secs : 0.0);
      row("deliveries_per_s", buf);
      if (!latencies_us.empty()) {
        std::sort(latencies_us.begin(), latencies_us.end());
        auto pct = [&](double p) { return latencies_us[static_cast<std::size_t>(p * static_cast<double>(latencies_us.size() - 1))]; };
        row("p50_us", std::to_string(pct(0.50)));
        row("p90_us", std::to_string(pct(0.90)));
        row("p99_us", std::to_string(pct(0.99)));
        row("max_us", std::to_string(latencies_us.back()));
      }
      if (o.scenario == "storm") row("storm_requests", std::to_string(storm_requests));
    }
    if (!error_text.empty()) add("error", "\"" + error_text.substr(0, 80) + "\"");
    std::printf("%s\n", kv.c_str());
    std::fflush(stdout);
    return error_text.empty() || (o.scenario == "idle" && ready == static_cast<int>(conns.size())) ? 0 : 1;
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"roomd-bench: fan-out, latency, idle-memory and storm benchmarks for roomd (or Redis)"};
  Options o;
  std::string target = "roomd";
  app.add_option("scenario", o.scenario, "fanout | rooms | latency | idle | storm")->required();
  app.add_option("--target", target, "roomd or redis");
  app.add_option("--host", o.host, "server address (IPv4)");
  app.add_option("--port", o.port, "server port");
  app.add_option("--members", o.members, "receivers per room");
  app.add_option("--rooms", o.rooms, "rooms (rooms scenario; idle connections are spread over them)");
  app.add_option("--publishers", o.publishers, "publishers, one per room (rooms scenario)");
  app.add_option("--messages", o.messages, "messages per publisher (fanout, rooms)");
  app.add_option("--payload", o.payload, "payload bytes per message");
  app.add_option("--rate", o.rate, "messages per second (latency, storm)");
  app.add_option("--duration", o.duration, "seconds of publishing (latency, storm)");
  app.add_option("--connections", o.connections, "idle connections (idle)");
  app.add_option("--server-pid", o.server_pid, "read the server's RSS from /proc (idle)");
  app.add_option("--window", o.window, "messages a publisher may be ahead of its receivers");
  app.add_option("--storm-clients", o.storm_clients, "clients flooding keyed joins and searches (storm)");
  app.add_option("--storm-mix", o.storm_mix, "what the storm clients send: joins, searches or both")
      ->check(CLI::IsMember({"joins", "searches", "both"}));
  app.add_flag("--storm-distinct-keys", o.storm_distinct_keys,
               "every storm join guesses a new key (a brute-force attack: each is an argon2id check)");
  app.add_option("--timeout", o.timeout, "give up after this many seconds");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.target = target == "redis" ? Target::redis : Target::roomd;
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
  Bench bench;
  bench.o = o;
  return bench.run();
}
