// The configuration: every key of the TOML file with its default, and the parser that turns
// a file into a Config or into a list of errors, each naming the key and its line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "roomd/core/room_config.hpp"
#include "roomd/net/flow_control.hpp"

namespace roomd {

// What one `listen` entry speaks besides plain roomd lines.
struct ListenFlags {
  bool admin = false;
  bool tls = false;
  bool websocket = false;
  bool operator==(const ListenFlags&) const = default;
};

struct ServerConfig {
  std::vector<std::string> listen{"127.0.0.1:7000"};
  std::vector<ListenFlags> listen_flags{ListenFlags{}};  // one per `listen` entry, in order
  // Listen addresses marked `admin = true` (Unix sockets only): their clients may use the
  // `stats` op. Each is also in `listen`.
  std::vector<std::string> admin;
  // Listen addresses marked `tls = true` (encrypted with [tls]) and `websocket = true`
  // (an HTTP upgrade to WebSocket, and the web client at `/`). Each is also in `listen`.
  std::vector<std::string> tls;
  std::vector<std::string> websocket;
  std::string motd = "Welcome to roomd";
  std::uint32_t max_clients = 10000;
  std::uint32_t max_clients_per_ip = 256;
  double connect_rate = 20;           // new connections per second per client address (0: off) ...
  std::uint32_t connect_burst = 256;  // ... after this many at once; over it one is refused (rate_limited)
  std::uint32_t workers = 4;
  bool dynamic_rooms = true;
  std::uint32_t max_rooms = 10000;  // dynamic rooms at once (0: none may be created)
  // Lame duck (SIGUSR2, a rolling restart): no client is closed for the grace period, then they
  // are closed one by one over the rest of the duration, and roomd exits when none is left.
  std::uint32_t lame_duck_duration_s = 30;
  std::uint32_t lame_duck_grace_s = 5;
};

struct LimitsConfig {
  std::uint32_t max_frame_bytes = 65536;
  std::uint64_t max_outbound_bytes = 4194304;
  SlowConsumerPolicy slow_consumer = SlowConsumerPolicy::disconnect;
  // All clients' queued output together; over it the largest queues are cut first (0: off).
  std::uint64_t max_total_outbound_bytes = 1073741824;
  double rate = 50;  // messages per second per connection
  std::uint32_t burst = 100;
  std::uint32_t idle_timeout_s = 300;
  std::uint32_t key_guesses = 5;           // key checks one address may start at once (0: no limit) ...
  std::uint32_t key_guess_interval_s = 10; // ... then one per this many seconds; right keys give theirs back
  double query_rate = 20;                  // join/history/who/rooms per second per connection (0: unpaced) ...
  std::uint32_t query_burst = 50;          // ... after this many at once; over it a request waits its turn
  double churn_rate = 2;                   // nick changes and leaves per second per connection (0: off) ...
  std::uint32_t churn_burst = 30;          // ... after this many at once; over it one is refused (rate_limited)
  std::uint32_t says_in_flight = 128;      // says into clustered rooms unanswered at once per connection
  double address_history_rate = 100;        // history pages and searches per second per client address, all its connections (0: off) ...
  std::uint32_t address_history_burst = 200; // ... after this many at once; over it one waits for the address's next slot
  std::uint32_t member_page = 100;           // members listed in `joined`; `who`'s default page
  std::uint32_t presence_threshold = 1000;   // above this many members a room's presence is summarized ...
  std::uint32_t presence_interval_ms = 1000; // ... at most once per this interval
};

struct HistoryConfig {
  std::string path;  // empty: memory only
  std::uint32_t replay = 50;
  std::uint32_t replay_max = 1000;  // messages a resuming join (`since`) may replay at most
  std::uint32_t max_messages_per_room = 100000;
};

// [tls]: what every `tls = true` listener serves. Reloaded on SIGHUP (a context that fails
// to load keeps the old one).
struct TlsConfig {
  std::string cert;               // PEM certificate chain
  std::string key;                // PEM private key
  std::string ca;                 // PEM CA bundle: when set, client certificates are required
  std::string min_version = "1.2";  // "1.2" or "1.3"
  std::uint32_t handshake_timeout_ms = 10000;
};

// [websocket]: the `websocket = true` listeners.
struct WebSocketConfig {
  // Origins allowed to upgrade ("https://chat.example.com"); empty: only pages served by the
  // same host (the Origin's host:port equals the request's Host).
  std::vector<std::string> origins;
  std::string web_root;  // the web client's files; empty: the installed share/roomd/web
  std::uint32_t ping_interval_s = 30;  // a WebSocket ping to an idle browser this often
  std::uint32_t handshake_timeout_ms = 10000;  // the upgrade request must have come by then
};

// [http]: the operators' endpoint (/metrics, /healthz, /readyz); off unless `listen` is set.
struct HttpConfig {
  std::string listen;  // IP:PORT; empty: off
  std::uint32_t idle_timeout_s = 10;
};

// [cluster]: rooms that span nodes through one Redis (docs/cluster.md). Absent: this node
// alone, exactly as without it.
struct ClusterConfig {
  bool enabled = false;                 // the file has a [cluster] table
  std::string redis = "127.0.0.1:6379";  // IP:PORT, [IPv6]:PORT or unix:PATH
  std::string node_id;                  // empty: hostname:port of the first listener
  std::uint32_t heartbeat_ms = 1000;    // Redis is pinged this often; 3 missed (at least 2 s) end the link
  std::string password;                 // empty: no AUTH

  bool operator==(const ClusterConfig&) const = default;
};

struct LogConfig {
  std::string level = "info";
};

struct Config {
  ServerConfig server;
  LimitsConfig limits;
  HistoryConfig history;
  TlsConfig tls;
  WebSocketConfig websocket;
  HttpConfig http;
  ClusterConfig cluster;
  LogConfig log;
  std::vector<RoomConfig> rooms;
};

// The embedded default roomd runs on with no -c: 127.0.0.1:7000, one room `lobby`.
Config default_config();

struct ConfigError {
  std::string key;  // dotted path, e.g. "limits.rate" or "rooms[2].name"; empty for syntax
  std::uint32_t line = 0;
  std::string message;

  std::string to_string(std::string_view file) const;
};

struct ConfigResult {
  Config config;
  std::vector<ConfigError> errors;
  bool ok() const { return errors.empty(); }
};

// Parses TOML text. `source` names the file in messages.
ConfigResult parse_config(std::string_view toml_text, std::string_view source);
ConfigResult load_config_file(const std::string& path);

}  // namespace roomd
