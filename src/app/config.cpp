// Config: defaults, and the TOML reader that checks every key's name, type and range.
#include "roomd/app/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "roomd/base/log.hpp"
#include "roomd/base/names.hpp"
#include "roomd/core/router.hpp"
#include "roomd/protocol/request.hpp"

namespace roomd {

Config default_config() {
  Config c;
  // JSON lines and text on 7000; browsers (the web client and WebSocket) on 7080.
  c.server.listen = {"127.0.0.1:7000", "127.0.0.1:7080"};
  c.server.listen_flags = {ListenFlags{}, ListenFlags{.websocket = true}};
  c.server.websocket = {"127.0.0.1:7080"};
  RoomConfig lobby;
  lobby.name = "lobby";
  lobby.topic = "General";
  lobby.persist = false;
  c.rooms.push_back(lobby);
  return c;
}

std::string ConfigError::to_string(std::string_view file) const {
  std::string s(file);
  if (line) s += ":" + std::to_string(line);
  s += ": ";
  if (!key.empty()) s += key + ": ";
  return s + message;
}

namespace {

// Walks one TOML table, reading known keys into typed fields and reporting the rest.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix, std::vector<ConfigError>& errors)
      : table_(table), prefix_(std::move(prefix)), errors_(errors) {}

  // Call after reading every key: anything not read is unknown.
  void reject_unknown() {
    for (const auto& [k, node] : table_)
      if (!read_.contains(std::string(k.str())))
        fail(std::string(k.str()), node.source().begin.line, "unknown key");
  }

  void boolean(std::string_view key, bool& out) {
    if (auto* node = take(key)) {
      if (auto v = node->value_exact<bool>()) out = *v;
      else fail(key, line_of(*node), "must be true or false");
    }
  }

  void string(std::string_view key, std::string& out) {
    if (auto* node = take(key)) {
      if (auto v = node->value_exact<std::string>()) out = *v;
      else fail(key, line_of(*node), "must be a string");
    }
  }

  template <class Int>
  void integer(std::string_view key, Int& out, std::int64_t min, std::int64_t max) {
    if (auto* node = take(key)) {
      auto v = node->value_exact<std::int64_t>();
      if (!v) return fail(key, line_of(*node), "must be an integer");
      if (*v < min || *v > max)
        return fail(key, line_of(*node),
                    "must be between " + std::to_string(min) + " and " + std::to_string(max));
      out = static_cast<Int>(*v);
    }
  }

  void number(std::string_view key, double& out, double min, double max) {
    if (auto* node = take(key)) {
      std::optional<double> v;
      if (auto i = node->value_exact<std::int64_t>()) v = static_cast<double>(*i);
      else if (auto d = node->value_exact<double>()) v = *d;
      if (!v) return fail(key, line_of(*node), "must be a number");
      if (!(*v >= min && *v <= max))
        return fail(key, line_of(*node), "must be between " + std::to_string(min) + " and " +
                                             std::to_string(max));
      out = *v;
    }
  }

  // Returns false when the key is present but not an array of strings.
  void string_array(std::string_view key, std::vector<std::string>& out) {
    if (auto* node = take(key)) {
      auto* arr = node->as_array();
      if (!arr) return fail(key, line_of(*node), "must be an array of strings");
      std::vector<std::string> values;
      for (const auto& item : *arr) {
        auto v = item.value_exact<std::string>();
        if (!v) return fail(key, line_of(item), "must be an array of strings");
        values.push_back(*v);
      }
      out = std::move(values);
    }
  }

  void mark_read(std::string_view key) { read_.insert(std::string(key)); }

  std::uint32_t line(std::string_view key) const {
    auto* node = table_.get(key);
    return node ? line_of(*node) : line_of(table_);
  }

  void fail(std::string_view key, std::uint32_t line, std::string message) {
    errors_.push_back({qualified(key), line, std::move(message)});
  }

  std::string qualified(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  static std::uint32_t line_of(const toml::node& n) { return n.source().begin.line; }

 private:
  const toml::node* take(std::string_view key) {
    read_.insert(std::string(key));
    return table_.get(key);
  }

  const toml::table& table_;
  std::string prefix_;
  std::vector<ConfigError>& errors_;
  std::set<std::string> read_;
};

// A sub-table such as [server]: absent is fine (defaults), present must be a table.
const toml::table* sub_table(const toml::table& root, std::string_view key,
                             std::vector<ConfigError>& errors) {
  auto* node = root.get(key);
  if (!node) return nullptr;
  if (auto* t = node->as_table()) return t;
  errors.push_back({std::string(key), node->source().begin.line, "must be a table"});
  return nullptr;
}

// `listen` items are "ADDRESS" or { address = "unix:PATH", admin = true } or
// { address = "IP:PORT", tls = true, websocket = true }.
void read_listen(const toml::table& t, TableReader& r, ServerConfig& s, std::vector<ConfigError>& errors) {
  auto* node = t.get("listen");
  r.mark_read("listen");
  if (!node) return;
  auto* arr = node->as_array();
  if (!arr) return r.fail("listen", TableReader::line_of(*node), "must be an array of addresses");
  s.listen.clear();
  s.listen_flags.clear();
  for (const auto& item : *arr) {
    std::string address;
    bool admin = false;
    bool tls = false;
    bool websocket = false;
    if (auto v = item.value_exact<std::string>()) {
      address = *v;
    } else if (auto* table = item.as_table()) {
      TableReader entry(*table, "server.listen[]", errors);
      entry.string("address", address);
      entry.boolean("admin", admin);
      entry.boolean("tls", tls);
      entry.boolean("websocket", websocket);
      entry.reject_unknown();
      if (address.empty()) { entry.fail("address", TableReader::line_of(item), "is required"); continue; }
    } else {
      r.fail("listen", TableReader::line_of(item), "items must be strings or { address = ..., admin = true }");
      continue;
    }
    auto parsed = parse_listen_address(address);
    if (!parsed) {
      r.fail("listen", TableReader::line_of(item), "bad address '" + address + "' (want IP:PORT, [IPv6]:PORT or unix:PATH)");
      continue;
    }
    if (admin && parsed->kind != ListenAddress::Kind::unix_path) {
      r.fail("listen", TableReader::line_of(item), "admin listeners must be Unix sockets (file permissions guard them)");
      continue;
    }
    if (admin && (tls || websocket)) {
      r.fail("listen", TableReader::line_of(item), "admin listeners are plain Unix sockets (no tls or websocket)");
      continue;
    }
    s.listen.push_back(address);
    s.listen_flags.push_back({.admin = admin, .tls = tls, .websocket = websocket});
    if (admin) s.admin.push_back(address);
    if (tls) s.tls.push_back(address);
    if (websocket) s.websocket.push_back(address);
  }
}

void read_server(const toml::table& t, ServerConfig& s, std::vector<ConfigError>& errors) {
  TableReader r(t, "server", errors);
  read_listen(t, r, s, errors);
  r.string("motd", s.motd);
  r.integer("max_clients", s.max_clients, 1, 1000000);
  r.integer("max_clients_per_ip", s.max_clients_per_ip, 1, 1000000);
  r.number("connect_rate", s.connect_rate, 0, 1e9);
  r.integer("connect_burst", s.connect_burst, 1, 1000000000);
  r.integer("workers", s.workers, 1, 128);
  r.boolean("dynamic_rooms", s.dynamic_rooms);
  r.integer("max_rooms", s.max_rooms, 0, 10000000);
  r.integer("lame_duck_duration_s", s.lame_duck_duration_s, 1, 24 * 3600);
  r.integer("lame_duck_grace_s", s.lame_duck_grace_s, 0, 24 * 3600);
  if (s.lame_duck_grace_s >= s.lame_duck_duration_s) {
    const char* key = t.contains("lame_duck_grace_s") ? "lame_duck_grace_s" : "lame_duck_duration_s";
    r.fail(key, r.line(key), "the grace (" + std::to_string(s.lame_duck_grace_s) +
                                 " s) must be shorter than server.lame_duck_duration_s (" +
                                 std::to_string(s.lame_duck_duration_s) + " s)");
  }
  r.reject_unknown();
}

void read_limits(const toml::table& t, LimitsConfig& l, std::vector<ConfigError>& errors) {
  TableReader r(t, "limits", errors);
  r.integer("max_frame_bytes", l.max_frame_bytes, 64, 16 * 1024 * 1024);
  r.integer("max_outbound_bytes", l.max_outbound_bytes, 1024,
            std::int64_t{1} << 40);
  std::string policy = l.slow_consumer == SlowConsumerPolicy::drop ? "drop" : "disconnect";
  r.string("slow_consumer", policy);
  if (policy == "disconnect") l.slow_consumer = SlowConsumerPolicy::disconnect;
  else if (policy == "drop") l.slow_consumer = SlowConsumerPolicy::drop;
  else r.fail("slow_consumer", r.line("slow_consumer"), "must be \"disconnect\" or \"drop\"");
  r.integer("max_total_outbound_bytes", l.max_total_outbound_bytes, 0, std::int64_t{1} << 50);
  r.number("rate", l.rate, 0.001, 1e9);
  r.integer("burst", l.burst, 1, 1000000000);
  r.integer("idle_timeout_s", l.idle_timeout_s, 2, 31 * 24 * 3600);
  r.integer("key_guesses", l.key_guesses, 0, 1000000);
  r.integer("key_guess_interval_s", l.key_guess_interval_s, 1, 24 * 3600);
  r.number("query_rate", l.query_rate, 0, 1e9);
  r.integer("query_burst", l.query_burst, 1, 1000000000);
  r.number("churn_rate", l.churn_rate, 0, 1e9);
  r.integer("churn_burst", l.churn_burst, 1, 1000000000);
  // Each holds its message (up to max_frame_bytes) in Redis' input and the answers' queue.
  r.integer("says_in_flight", l.says_in_flight, 1, static_cast<std::int64_t>(kMaxSaysInFlight));
  r.number("address_history_rate", l.address_history_rate, 0, 1e9);
  r.integer("address_history_burst", l.address_history_burst, 1, 1000000000);
  r.integer("member_page", l.member_page, 1, kMaxWhoPage);
  r.integer("presence_threshold", l.presence_threshold, 0, 100000000);
  r.integer("presence_interval_ms", l.presence_interval_ms, 10, 3600 * 1000);
  r.reject_unknown();
}

void read_history(const toml::table& t, HistoryConfig& h, std::vector<ConfigError>& errors) {
  TableReader r(t, "history", errors);
  r.string("path", h.path);
  r.integer("replay", h.replay, 0, 500);
  r.integer("replay_max", h.replay_max, 0, 100000);
  r.integer("max_messages_per_room", h.max_messages_per_room, 1, 100000000);
  r.reject_unknown();
}

void read_tls(const toml::table& t, TlsConfig& c, std::vector<ConfigError>& errors) {
  TableReader r(t, "tls", errors);
  r.string("cert", c.cert);
  r.string("key", c.key);
  r.string("ca", c.ca);
  r.string("min_version", c.min_version);
  if (c.min_version != "1.2" && c.min_version != "1.3")
    r.fail("min_version", r.line("min_version"), "must be \"1.2\" or \"1.3\"");
  r.integer("handshake_timeout_ms", c.handshake_timeout_ms, 100, 600000);
  r.reject_unknown();
}

void read_websocket(const toml::table& t, WebSocketConfig& c, std::vector<ConfigError>& errors) {
  TableReader r(t, "websocket", errors);
  r.string_array("origins", c.origins);
  for (const auto& origin : c.origins)
    if (const auto rest = origin.find("://"); !(origin.starts_with("http://") || origin.starts_with("https://")) ||
                                              origin.find('/', rest + 3) != std::string::npos)
      r.fail("origins", r.line("origins"), "'" + origin + "' is not an origin (scheme://host[:port], no path)");
    else if ((origin.starts_with("http://") && origin.ends_with(":80")) || (origin.starts_with("https://") && origin.ends_with(":443")))
      r.fail("origins", r.line("origins"), "'" + origin + "': leave out the scheme's default port (browsers do)");
  r.string("web_root", c.web_root);
  r.integer("ping_interval_s", c.ping_interval_s, 1, 3600);
  r.integer("handshake_timeout_ms", c.handshake_timeout_ms, 100, 600000);
  r.reject_unknown();
}

void read_http(const toml::table& t, HttpConfig& c, std::vector<ConfigError>& errors) {
  TableReader r(t, "http", errors);
  r.string("listen", c.listen);
  if (!c.listen.empty()) {
    auto parsed = parse_listen_address(c.listen);
    if (!parsed || parsed->kind == ListenAddress::Kind::unix_path)
      r.fail("listen", r.line("listen"), "bad address '" + c.listen + "' (want IP:PORT or [IPv6]:PORT)");
  }
  r.integer("idle_timeout_s", c.idle_timeout_s, 1, 3600);
  r.reject_unknown();
}

void read_cluster(const toml::table& t, ClusterConfig& c, std::vector<ConfigError>& errors) {
  TableReader r(t, "cluster", errors);
  c.enabled = true;
  r.string("redis", c.redis);
  if (auto parsed = parse_listen_address(c.redis); !parsed || (parsed->kind != ListenAddress::Kind::unix_path && parsed->port == 0))
    r.fail("redis", r.line("redis"), "bad address '" + c.redis + "' (want IP:PORT, [IPv6]:PORT or unix:PATH)");
  r.string("node_id", c.node_id);
  if (t.contains("node_id") &&
      (c.node_id.empty() || c.node_id.size() > 128 ||
       !std::all_of(c.node_id.begin(), c.node_id.end(), [](unsigned char ch) { return ch > ' ' && ch < 127; })))
    r.fail("node_id", r.line("node_id"), "must be 1 to 128 printable characters, no spaces");
  r.integer("heartbeat_ms", c.heartbeat_ms, 50, 60000);
  r.string("password", c.password);
  r.reject_unknown();
}

void read_log(const toml::table& t, LogConfig& lc, std::vector<ConfigError>& errors) {
  TableReader r(t, "log", errors);
  r.string("level", lc.level);
  if (!log::parse_level(lc.level))
    r.fail("level", r.line("level"), "must be one of error, warning, notice, info, debug");
  r.reject_unknown();
}

void read_rooms(const toml::node& node, std::vector<RoomConfig>& rooms,
                std::vector<ConfigError>& errors) {
  auto* arr = node.as_array();
  if (!arr || !arr->is_array_of_tables()) {
    errors.push_back({"rooms", node.source().begin.line, "must be an array of tables ([[rooms]])"});
    return;
  }
  rooms.clear();
  std::set<std::string> seen;
  std::size_t index = 0;
  for (const auto& item : *arr) {
    const auto& t = *item.as_table();
    TableReader r(t, "rooms[" + std::to_string(index++) + "]", errors);
    RoomConfig room;
    r.string("name", room.name);
    if (!t.contains("name")) r.fail("name", r.line("name"), "is required");
    else if (!valid_room_name(room.name))
      r.fail("name", r.line("name"), "'" + room.name + "' is not a valid room name");
    else if (!seen.insert(room.name).second)
      r.fail("name", r.line("name"), "room '" + room.name + "' is defined twice");
    r.string("topic", room.topic);
    r.integer("max_members", room.max_members, 1, 10000000);
    r.boolean("persist", room.persist);
    r.boolean("cluster", room.cluster);
    r.string("key", room.key);
    if (!room.key.empty() && !room.key.starts_with("$argon2id$"))
      r.fail("key", r.line("key"), "must be an argon2id hash from `roomd --hash-key`");
    r.boolean("read_only", room.read_only);
    r.string_array("speakers", room.speakers);
    if (t.contains("presence_threshold")) {
      std::uint32_t threshold = 0;
      r.integer("presence_threshold", threshold, 0, 100000000);
      room.presence_threshold = threshold;
    }
    for (const auto& nick : room.speakers)
      if (!valid_nick(nick))
        r.fail("speakers", r.line("speakers"), "'" + nick + "' is not a valid nick");
    r.reject_unknown();
    rooms.push_back(std::move(room));
  }
}

}  // namespace

ConfigResult parse_config(std::string_view text, std::string_view source) {
  ConfigResult result;
  // A file lists its rooms explicitly: the embedded `lobby` is the default only for no file.
  result.config = Config{};
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    result.errors.push_back({"", e.source().begin.line, std::string(e.description())});
    return result;
  }
  auto& errors = result.errors;
  if (auto* t = sub_table(root, "server", errors)) read_server(*t, result.config.server, errors);
  if (auto* t = sub_table(root, "limits", errors)) read_limits(*t, result.config.limits, errors);
  if (auto* t = sub_table(root, "history", errors)) read_history(*t, result.config.history, errors);
  if (auto* t = sub_table(root, "tls", errors)) read_tls(*t, result.config.tls, errors);
  if (auto* t = sub_table(root, "websocket", errors)) read_websocket(*t, result.config.websocket, errors);
  if (auto* t = sub_table(root, "http", errors)) read_http(*t, result.config.http, errors);
  if (auto* t = sub_table(root, "cluster", errors)) read_cluster(*t, result.config.cluster, errors);
  if (auto* t = sub_table(root, "log", errors)) read_log(*t, result.config.log, errors);
  if (auto* node = root.get("rooms")) read_rooms(*node, result.config.rooms, errors);
  for (const auto& [k, node] : root) {
    std::string_view key = k.str();
    if (key != "server" && key != "limits" && key != "history" && key != "tls" && key != "websocket" &&
        key != "http" && key != "cluster" && key != "log" && key != "rooms")
      errors.push_back({std::string(key), node.source().begin.line, "unknown key"});
  }
  if (result.config.server.listen.empty() && errors.empty())
    errors.push_back({"server.listen", 0, "needs at least one address"});
  const Config& c = result.config;
  if (!c.server.tls.empty() && (c.tls.cert.empty() || c.tls.key.empty()))
    errors.push_back({"tls", 0, "a listener has tls = true: [tls] needs cert and key"});
  return result;
}

ConfigResult load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ConfigResult r;
    r.errors.push_back({"", 0, "cannot open the file"});
    return r;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace roomd
