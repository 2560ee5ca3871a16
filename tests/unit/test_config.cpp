#include <doctest/doctest.h>

#include <string>

#include "roomd/app/config.hpp"

using roomd::parse_config;

namespace {
// The single error a config text produces, as "key@line: message".
std::string only_error(const std::string& text) {
  auto r = parse_config(text, "t.toml");
  REQUIRE(r.errors.size() == 1);
  const auto& e = r.errors[0];
  return e.key + "@" + std::to_string(e.line) + ": " + e.message;
}
}  // namespace

TEST_CASE("config: defaults and the embedded default") {
  auto r = parse_config("", "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.server.listen == std::vector<std::string>{"127.0.0.1:7000"});
  CHECK(r.config.limits.max_frame_bytes == 65536);
  CHECK(r.config.limits.slow_consumer == roomd::SlowConsumerPolicy::disconnect);
  CHECK(r.config.history.replay == 50);
  CHECK(r.config.limits.key_guesses == 5);
  CHECK(r.config.limits.key_guess_interval_s == 10);
  CHECK(r.config.limits.query_rate == doctest::Approx(20));
  CHECK(r.config.limits.query_burst == 50);
  CHECK(r.config.limits.address_history_rate == doctest::Approx(100));
  CHECK(r.config.limits.address_history_burst == 200);
  CHECK(r.config.limits.churn_rate == doctest::Approx(2));
  CHECK(r.config.limits.churn_burst == 30);
  CHECK(r.config.limits.says_in_flight == 128);
  CHECK(r.config.server.connect_rate == doctest::Approx(20));
  CHECK(r.config.server.connect_burst == 256);
  CHECK(r.config.rooms.empty());
  auto d = roomd::default_config();
  REQUIRE(d.rooms.size() == 1);
  CHECK(d.rooms[0].name == "lobby");
  CHECK(d.server.listen == std::vector<std::string>{"127.0.0.1:7000", "127.0.0.1:7080"});
  CHECK(d.server.websocket == std::vector<std::string>{"127.0.0.1:7080"});
  CHECK(d.server.dynamic_rooms);
}

TEST_CASE("config: a full file") {
  auto r = parse_config(R"(
[server]
listen = ["127.0.0.1:7000", "[::1]:7000", "unix:/run/roomd/roomd.sock"]
motd = "hi"
max_clients = 5
max_clients_per_ip = 2
connect_rate = 0.5
connect_burst = 4
workers = 2
dynamic_rooms = false
[limits]
max_frame_bytes = 1024
max_outbound_bytes = 2048
slow_consumer = "drop"
rate = 2.5
burst = 3
idle_timeout_s = 60
key_guesses = 0
key_guess_interval_s = 30
query_rate = 0
query_burst = 7
address_history_rate = 12.5
address_history_burst = 30
churn_rate = 0
churn_burst = 9
[history]
path = "/tmp/x.db"
replay = 10
max_messages_per_room = 20
[log]
level = "debug"
[[rooms]]
name = "a"
topic = "t"
max_members = 3
persist = false
key = "$argon2id$v=19$m=1,t=1,p=1$x$y"
read_only = true
speakers = ["alice"]
)", "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.server.listen.size() == 3);
  CHECK(r.config.server.max_clients == 5);
  CHECK_FALSE(r.config.server.dynamic_rooms);
  CHECK(r.config.limits.slow_consumer == roomd::SlowConsumerPolicy::drop);
  CHECK(r.config.limits.rate == doctest::Approx(2.5));
  CHECK(r.config.limits.key_guesses == 0);
  CHECK(r.config.limits.key_guess_interval_s == 30);
  CHECK(r.config.limits.query_rate == 0);
  CHECK(r.config.limits.query_burst == 7);
  CHECK(r.config.limits.address_history_rate == doctest::Approx(12.5));
  CHECK(r.config.limits.address_history_burst == 30);
  CHECK(r.config.limits.churn_rate == 0);
  CHECK(r.config.limits.churn_burst == 9);
  CHECK(r.config.server.connect_rate == doctest::Approx(0.5));
  CHECK(r.config.server.connect_burst == 4);
  CHECK(r.config.history.path == "/tmp/x.db");
  REQUIRE(r.config.rooms.size() == 1);
  CHECK(r.config.rooms[0].read_only);
  CHECK(r.config.rooms[0].speakers == std::vector<std::string>{"alice"});
}

TEST_CASE("config: each bad case names the key and its line") {
  CHECK(only_error("[server]\nbogus = 1\n") == "server.bogus@2: unknown key");
  CHECK(only_error("\n\nnope = 1\n") == "nope@3: unknown key");
  CHECK(only_error("[server]\nmax_clients = \"x\"\n") == "server.max_clients@2: must be an integer");
  CHECK(only_error("[server]\nmax_clients = 0\n") == "server.max_clients@2: must be between 1 and 1000000");
  CHECK(only_error("[server]\ndynamic_rooms = 1\n") == "server.dynamic_rooms@2: must be true or false");
  CHECK(only_error("[server]\nlisten = [\"nowhere\"]\n").starts_with("server.listen@2: bad address 'nowhere'"));
  CHECK(only_error("[server]\nlisten = \"127.0.0.1:1\"\n") == "server.listen@2: must be an array of addresses");
  CHECK(only_error("[server]\nlisten = [\"127.0.0.1:99999\"]\n").starts_with("server.listen@2: bad address"));
  CHECK(only_error("[limits]\nslow_consumer = \"maybe\"\n") == "limits.slow_consumer@2: must be \"disconnect\" or \"drop\"");
  CHECK(only_error("[limits]\nrate = \"fast\"\n") == "limits.rate@2: must be a number");
  CHECK(only_error("[limits]\nmax_frame_bytes = 1\n").starts_with("limits.max_frame_bytes@2: must be between"));
  CHECK(only_error("[limits]\nkey_guess_interval_s = 0\n") == "limits.key_guess_interval_s@2: must be between 1 and 86400");
  CHECK(only_error("[limits]\nkey_guesses = -1\n").starts_with("limits.key_guesses@2: must be between 0"));
  CHECK(only_error("[limits]\nquery_rate = -1\n").starts_with("limits.query_rate@2: must be between 0"));
  CHECK(only_error("[limits]\nquery_burst = 0\n").starts_with("limits.query_burst@2: must be between 1"));
  CHECK(only_error("[limits]\naddress_history_rate = -0.5\n").starts_with("limits.address_history_rate@2: must be between 0"));
  CHECK(only_error("[limits]\naddress_history_burst = 0\n").starts_with("limits.address_history_burst@2: must be between 1"));
  CHECK(only_error("[limits]\nchurn_rate = -1\n").starts_with("limits.churn_rate@2: must be between 0"));
  CHECK(only_error("[limits]\nchurn_burst = 0\n").starts_with("limits.churn_burst@2: must be between 1"));
  CHECK(only_error("[limits]\nsays_in_flight = 0\n") == "limits.says_in_flight@2: must be between 1 and 4096");
  CHECK(only_error("[limits]\nsays_in_flight = 100000\n") == "limits.says_in_flight@2: must be between 1 and 4096");
  CHECK(roomd::parse_config("[limits]\nsays_in_flight = 16\n", "t.toml").config.limits.says_in_flight == 16);
  CHECK(only_error("[server]\nconnect_rate = -1\n").starts_with("server.connect_rate@2: must be between 0"));
  CHECK(only_error("[server]\nconnect_burst = 0\n").starts_with("server.connect_burst@2: must be between 1"));
  CHECK(only_error("[history]\nreplay = 501\n").starts_with("history.replay@2: must be between"));
  CHECK(only_error("[log]\nlevel = \"loud\"\n").starts_with("log.level@2: must be one of"));
  CHECK(only_error("server = 3\n") == "server@1: must be a table");
  CHECK(only_error("[[rooms]]\ntopic = \"x\"\n") == "rooms[0].name@1: is required");
  CHECK(only_error("[[rooms]]\nname = \"a b\"\n") == "rooms[0].name@2: 'a b' is not a valid room name");
  CHECK(only_error("[[rooms]]\nname = \"a\"\n[[rooms]]\nname = \"a\"\n") == "rooms[1].name@4: room 'a' is defined twice");
  CHECK(only_error("[[rooms]]\nname = \"a\"\nkey = \"plain\"\n").starts_with("rooms[0].key@3: must be an argon2id hash"));
  CHECK(only_error("[[rooms]]\nname = \"a\"\nspeakers = [\"9x\"]\n") == "rooms[0].speakers@3: '9x' is not a valid nick");
  CHECK(only_error("[[rooms]]\nname = \"a\"\ncolour = \"red\"\n") == "rooms[0].colour@3: unknown key");
  CHECK(only_error("[server]\nlisten = [{ address = \"127.0.0.1:1\", admin = true }]\n")
            .starts_with("server.listen@2: admin listeners must be Unix sockets"));
  CHECK(only_error("[server]\nlisten = [{ address = \"unix:/a\", colour = 1 }]\n") == "server.listen[].colour@2: unknown key");
  CHECK(only_error("[server]\nlisten = [5]\n").starts_with("server.listen@2: items must be strings"));
  CHECK(only_error("rooms = 5\n") == "rooms@1: must be an array of tables ([[rooms]])");
}

TEST_CASE("config: limits.max_total_outbound_bytes") {
  CHECK(parse_config("", "t.toml").config.limits.max_total_outbound_bytes == 1073741824);
  auto off = parse_config("[limits]\nmax_total_outbound_bytes = 0\n", "t.toml");
  REQUIRE(off.ok());
  CHECK(off.config.limits.max_total_outbound_bytes == 0);
  auto set = parse_config("[limits]\nmax_total_outbound_bytes = 2097152\n", "t.toml");
  REQUIRE(set.ok());
  CHECK(set.config.limits.max_total_outbound_bytes == 2097152);
  CHECK(only_error("[limits]\nmax_total_outbound_bytes = -1\n")
            .starts_with("limits.max_total_outbound_bytes@2: must be between 0 and"));
  CHECK(only_error("[limits]\n\nmax_total_outbound_bytes = \"1G\"\n") ==
        "limits.max_total_outbound_bytes@3: must be an integer");
}

TEST_CASE("config: TOML syntax errors carry the line") {
  auto r = parse_config("[server]\nmotd = \"unterminated\n", "t.toml");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].line == 2);
  CHECK(r.errors[0].key.empty());
  CHECK(r.errors[0].to_string("t.toml").starts_with("t.toml:2: "));
}

TEST_CASE("config: several errors are all reported") {
  auto r = parse_config("[server]\nbogus = 1\nworkers = 0\n", "t.toml");
  CHECK(r.errors.size() == 2);
}

TEST_CASE("config: admin listeners are marked Unix sockets") {
  auto r = parse_config("[server]\nlisten = [\"127.0.0.1:7000\", { address = \"unix:/run/roomd/admin.sock\", admin = true }]\n", "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.server.listen == std::vector<std::string>{"127.0.0.1:7000", "unix:/run/roomd/admin.sock"});
  CHECK(r.config.server.admin == std::vector<std::string>{"unix:/run/roomd/admin.sock"});
}

TEST_CASE("config: the large-room keys") {
  auto d = parse_config("", "t.toml");
  REQUIRE(d.ok());
  CHECK(d.config.server.max_rooms == 10000);
  CHECK(d.config.limits.member_page == 100);
  CHECK(d.config.limits.presence_threshold == 1000);
  CHECK(d.config.limits.presence_interval_ms == 1000);
  CHECK(d.config.history.replay_max == 1000);
  auto r = parse_config(R"(
[server]
max_rooms = 5
[limits]
member_page = 20
presence_threshold = 50
presence_interval_ms = 250
[history]
replay_max = 300
[[rooms]]
name = "big"
presence_threshold = 10
[[rooms]]
name = "plain"
)", "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.server.max_rooms == 5);
  CHECK(r.config.limits.member_page == 20);
  CHECK(r.config.limits.presence_threshold == 50);
  CHECK(r.config.limits.presence_interval_ms == 250);
  CHECK(r.config.history.replay_max == 300);
  CHECK(r.config.rooms[0].presence_threshold == 10u);
  CHECK(!r.config.rooms[1].presence_threshold);
  CHECK(only_error("[limits]\nmember_page = 0\n").starts_with("limits.member_page@2:"));
  CHECK(only_error("[limits]\nmember_page = 1001\n").starts_with("limits.member_page@2:"));
  CHECK(only_error("[limits]\npresence_interval_ms = 1\n").starts_with("limits.presence_interval_ms@2:"));
  CHECK(only_error("[[rooms]]\nname = \"x\"\npresence_threshold = -1\n").starts_with("rooms[0].presence_threshold@3:"));
}

TEST_CASE("config: tls, websocket and http") {
  auto d = parse_config("", "t.toml");
  REQUIRE(d.ok());
  CHECK(d.config.server.tls.empty());
  CHECK(d.config.tls.min_version == "1.2");
  CHECK(d.config.http.listen.empty());
  auto r = parse_config(R"(
[server]
listen = ["127.0.0.1:7000", { address = "127.0.0.1:7443", tls = true },
          { address = "127.0.0.1:7080", websocket = true },
          { address = "127.0.0.1:7444", tls = true, websocket = true }]
[tls]
cert = "/etc/roomd/cert.pem"
key = "/etc/roomd/key.pem"
ca = "/etc/roomd/ca.pem"
min_version = "1.3"
handshake_timeout_ms = 5000
[websocket]
origins = ["https://chat.example.com", "http://127.0.0.1:7080"]
web_root = "web"
ping_interval_s = 20
[http]
listen = "127.0.0.1:9464"
idle_timeout_s = 5
)", "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.server.listen.size() == 4);
  CHECK(r.config.server.tls == std::vector<std::string>{"127.0.0.1:7443", "127.0.0.1:7444"});
  CHECK(r.config.server.websocket == std::vector<std::string>{"127.0.0.1:7080", "127.0.0.1:7444"});
  CHECK(r.config.tls.ca == "/etc/roomd/ca.pem");
  CHECK(r.config.tls.min_version == "1.3");
  CHECK(r.config.tls.handshake_timeout_ms == 5000);
  CHECK(r.config.websocket.origins.size() == 2);
  CHECK(r.config.websocket.web_root == "web");
  CHECK(r.config.websocket.ping_interval_s == 20);
  CHECK(r.config.http.listen == "127.0.0.1:9464");
  CHECK(r.config.http.idle_timeout_s == 5);

  CHECK(only_error("[server]\nlisten = [{ address = \"127.0.0.1:1\", tls = true }]\n") ==
        "tls@0: a listener has tls = true: [tls] needs cert and key");
  CHECK(only_error("[tls]\nmin_version = \"1.1\"\n").starts_with("tls.min_version@2: must be"));
  CHECK(only_error("[websocket]\norigins = [\"chat.example.com\"]\n").starts_with("websocket.origins@2: 'chat.example.com' is not an origin"));
  CHECK(only_error("[websocket]\norigins = [\"https://x.example/app\"]\n").find("is not an origin") != std::string::npos);
  CHECK(only_error("[websocket]\norigins = [\"https://x.example:443\"]\n").find("default port") != std::string::npos);
  CHECK(only_error("[http]\nlisten = \"unix:/x\"\n").starts_with("http.listen@2: bad address"));
  CHECK(only_error("[server]\nlisten = [{ address = \"unix:/a\", admin = true, tls = true }]\n")
            .starts_with("server.listen@2: admin listeners are plain Unix sockets"));
}

TEST_CASE("config: [cluster]") {
  SUBCASE("absent: no cluster, rooms clustered by default once there is one") {
    auto r = parse_config("[[rooms]]\nname = \"a\"\n", "t.toml");
    REQUIRE(r.ok());
    CHECK_FALSE(r.config.cluster.enabled);
    CHECK(r.config.rooms[0].cluster);
    CHECK_FALSE(roomd::default_config().cluster.enabled);
  }
  SUBCASE("an empty table: the defaults") {
    auto r = parse_config("[cluster]\n", "t.toml");
    REQUIRE(r.ok());
    CHECK(r.config.cluster.enabled);
    CHECK(r.config.cluster.redis == "127.0.0.1:6379");
    CHECK(r.config.cluster.node_id.empty());
    CHECK(r.config.cluster.heartbeat_ms == 1000);
    CHECK(r.config.cluster.password.empty());
  }
  SUBCASE("every key, and a node-local room") {
    auto r = parse_config(R"(
[cluster]
redis = "unix:/run/redis/redis.sock"
node_id = "node-1"
heartbeat_ms = 250
password = "s3cret"
[[rooms]]
name = "here"
cluster = false
persist = false
)", "t.toml");
    REQUIRE(r.ok());
    CHECK(r.config.cluster.redis == "unix:/run/redis/redis.sock");
    CHECK(r.config.cluster.node_id == "node-1");
    CHECK(r.config.cluster.heartbeat_ms == 250);
    CHECK(r.config.cluster.password == "s3cret");
    CHECK_FALSE(r.config.rooms[0].cluster);
  }
  SUBCASE("IPv6") {
    CHECK(parse_config("[cluster]\nredis = \"[::1]:6380\"\n", "t.toml").ok());
  }
  SUBCASE("bad values name their key and line") {
    CHECK(only_error("[cluster]\nredis = \"localhost:6379\"\n") ==
          "cluster.redis@2: bad address 'localhost:6379' (want IP:PORT, [IPv6]:PORT or unix:PATH)");
    CHECK(only_error("[cluster]\nredis = \"127.0.0.1:0\"\n") ==
          "cluster.redis@2: bad address '127.0.0.1:0' (want IP:PORT, [IPv6]:PORT or unix:PATH)");
    CHECK(only_error("[cluster]\nnode_id = \"a b\"\n") == "cluster.node_id@2: must be 1 to 128 printable characters, no spaces");
    CHECK(only_error("[cluster]\nnode_id = \"\"\n") == "cluster.node_id@2: must be 1 to 128 printable characters, no spaces");
    CHECK(only_error("[cluster]\nheartbeat_ms = 10\n") == "cluster.heartbeat_ms@2: must be between 50 and 60000");
    CHECK(only_error("[cluster]\npassword = 5\n") == "cluster.password@2: must be a string");
    CHECK(only_error("[cluster]\nredis_url = \"x\"\n") == "cluster.redis_url@2: unknown key");
    CHECK(only_error("cluster = true\n") == "cluster@1: must be a table");
    CHECK(only_error("[[rooms]]\nname = \"a\"\ncluster = \"no\"\n") == "rooms[0].cluster@3: must be true or false");
  }
  SUBCASE("a persisted room may be clustered (every node stores it), or kept on its node") {
    CHECK(parse_config("[cluster]\n[history]\npath = \"/tmp/h.db\"\n[[rooms]]\nname = \"a\"\n", "t.toml").ok());
    CHECK(parse_config("[cluster]\n[history]\npath = \"/tmp/h.db\"\n[[rooms]]\nname = \"a\"\ncluster = false\n", "t.toml").ok());
    CHECK(parse_config("[cluster]\n[history]\npath = \"/tmp/h.db\"\n[[rooms]]\nname = \"a\"\npersist = false\n", "t.toml").ok());
    CHECK(parse_config("[history]\npath = \"/tmp/h.db\"\n[[rooms]]\nname = \"a\"\n", "t.toml").ok());
  }
}

TEST_CASE("config: the lame-duck keys") {
  auto d = parse_config("", "t.toml");
  REQUIRE(d.ok());
  CHECK(d.config.server.lame_duck_duration_s == 30);
  CHECK(d.config.server.lame_duck_grace_s == 5);
  auto r = parse_config("[server]\nlame_duck_duration_s = 120\nlame_duck_grace_s = 0\n", "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.server.lame_duck_duration_s == 120);
  CHECK(r.config.server.lame_duck_grace_s == 0);
  CHECK(only_error("[server]\nlame_duck_duration_s = 0\n").starts_with("server.lame_duck_duration_s@2: must be between 1"));
  // The grace must leave time to close the clients in.
  CHECK(only_error("[server]\nlame_duck_duration_s = 3\nlame_duck_grace_s = 3\n")
            .starts_with("server.lame_duck_grace_s@3: the grace (3 s) must be shorter"));
  CHECK(only_error("[server]\nlame_duck_duration_s = 2\n").starts_with("server.lame_duck_duration_s@2: the grace (5 s)"));
}
