// RedisLink against a real redis-server (started here on a free loopback port): replies,
// pub/sub, and each way a link ends -- refused, reset (CLIENT KILL), frozen (SIGSTOP, caught by
// the command deadline) -- reaching the one close path with its reason.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <cstdio>
#include <optional>

#include "redis_server.hpp"
#include "roomd/base/uv.hpp"
#include "roomd/net/redis_link.hpp"

using namespace roomd;

namespace {

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_NOWAIT);  // close callbacks of what the test closed
    uv_loop_close(&loop);
  }
  // Runs the loop until `done()` or `timeout_ms` (a timer wakes it to look); false on timeout.
  template <class Pred>
  bool run_until(Pred done, std::uint64_t timeout_ms = 10000) {
    bool expired = false;
    uv::Timer guard(&loop, [&] { expired = true; });
    guard.start(timeout_ms, 0);
    uv::Timer tick(&loop, [] {});
    tick.start(5, 5);
    while (!done() && !expired) uv_run(&loop, UV_RUN_ONCE);
    return done();
  }
};

struct Closed {
  RedisCloseReason reason;
  std::string detail;
};

struct Probe {
  bool connected = false;
  std::optional<Closed> closed;
  std::unique_ptr<RedisLink> link;
  Probe(uv_loop_t* loop, ListenAddress address, std::uint32_t command_timeout_ms = 2000) {
    link = std::make_unique<RedisLink>(
        loop, RedisLinkSettings{.address = std::move(address), .connect_timeout_ms = 2000, .command_timeout_ms = command_timeout_ms},
        [this] { connected = true; }, [this](RedisCloseReason r, const std::string& d) { closed = Closed{r, d}; });
    link->connect();
  }
};

ListenAddress tcp(std::uint16_t port) { return {ListenAddress::Kind::ipv4, "127.0.0.1", port}; }

std::string str(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string("<none>"); }

}  // namespace

TEST_CASE("a command gets its reply, in order, over a real connection") {
  test::RedisServer redis;
  Loop l;
  Probe p(&l.loop, tcp(redis.port()));
  std::vector<std::string> replies;
  // Queued while connecting: they go out once connected.
  REQUIRE(p.link->command({"SET", "k", std::string("a\0b", 3)}, [&](const redisReply* r) { replies.push_back(str(r)); }));
  REQUIRE(p.link->command({"GET", "k"}, [&](const redisReply* r) { replies.push_back(str(r)); }));
  REQUIRE(p.link->command({"PING"}, [&](const redisReply* r) { replies.push_back(str(r)); }));
  REQUIRE(l.run_until([&] { return replies.size() == 3; }));
  CHECK(p.connected);
  CHECK(replies == std::vector<std::string>{"OK", std::string("a\0b", 3), "PONG"});
  CHECK(p.link->awaiting_replies() == 0);
  CHECK_FALSE(p.closed);
}

TEST_CASE("a refused port reaches the close path as refused") {
  Loop l;
  Probe p(&l.loop, tcp(test::free_loopback_port()));
  bool replied_null = false;
  p.link->command({"PING"}, [&](const redisReply* r) { replied_null = r == nullptr; });
  REQUIRE(l.run_until([&] { return p.closed.has_value(); }));
  CHECK(p.closed->reason == RedisCloseReason::refused);
  CHECK(replied_null);
  CHECK_FALSE(p.connected);
  CHECK(p.link->state() == RedisLink::State::closed);
  // The owner may connect again: still refused, reported again.
  p.closed.reset();
  p.link->connect();
  REQUIRE(l.run_until([&] { return p.closed.has_value(); }));
  CHECK(p.closed->reason == RedisCloseReason::refused);
}

TEST_CASE("a missing Unix socket is refused") {
  Loop l;
  Probe p(&l.loop, ListenAddress{ListenAddress::Kind::unix_path, "/nonexistent/redis.sock", 0});
  REQUIRE(l.run_until([&] { return p.closed.has_value(); }));
  CHECK(p.closed->reason == RedisCloseReason::refused);
}

TEST_CASE("a Unix socket works like TCP") {
  char dir[] = "/tmp/roomd-redis-XXXXXX";
  REQUIRE(mkdtemp(dir));
  const std::string path = std::string(dir) + "/redis.sock";
  {
    test::RedisServer redis(path);
    Loop l;
    Probe p(&l.loop, ListenAddress{ListenAddress::Kind::unix_path, path, 0});
    std::string pong;
    p.link->command({"PING"}, [&](const redisReply* r) { pong = str(r); });
    REQUIRE(l.run_until([&] { return pong == "PONG"; }));
    CHECK(p.connected);
  }
  std::remove(path.c_str());
  rmdir(dir);
}

TEST_CASE("CLIENT KILL resets the link: its pending reply gets nullptr, the owner hears reset") {
  test::RedisServer redis;
  Loop l;
  Probe victim(&l.loop, tcp(redis.port()));
  Probe killer(&l.loop, tcp(redis.port()));
  long long id = -1;
  victim.link->command({"CLIENT", "ID"}, [&](const redisReply* r) { id = r ? r->integer : -2; });
  REQUIRE(l.run_until([&] { return id != -1 && killer.connected; }));
  REQUIRE(id > 0);
  // A blocked command: its reply is pending when the kill comes.
  bool blocked_got_null = false;
  victim.link->command({"BLPOP", "nothing", "0"}, [&](const redisReply* r) { blocked_got_null = r == nullptr; });
  std::string killed;
  killer.link->command({"CLIENT", "KILL", "ID", std::to_string(id)},
                       [&](const redisReply* r) { killed = r ? std::to_string(r->integer) : "null"; });
  REQUIRE(l.run_until([&] { return victim.closed.has_value() && !killed.empty(); }));
  CHECK(killed == "1");
  CHECK(victim.closed->reason == RedisCloseReason::reset);
  CHECK(blocked_got_null);
  // Reconnecting works.
  victim.connected = false;
  victim.closed.reset();
  victim.link->connect();
  std::string pong;
  victim.link->command({"PING"}, [&](const redisReply* r) { pong = str(r); });
  REQUIRE(l.run_until([&] { return pong == "PONG"; }));
  CHECK(victim.connected);
}

TEST_CASE("a frozen Redis (SIGSTOP) is caught by the command deadline; it answers again after SIGCONT") {
  test::RedisServer redis;
  Loop l;
  Probe p(&l.loop, tcp(redis.port()), 300);
  REQUIRE(l.run_until([&] { return p.connected; }));
  redis.freeze();
  bool got_null = false;
  p.link->command({"PING"}, [&](const redisReply* r) { got_null = r == nullptr; });
  REQUIRE(l.run_until([&] { return p.closed.has_value(); }));
  CHECK(p.closed->reason == RedisCloseReason::timeout);
  CHECK(got_null);
  redis.thaw();
  p.closed.reset();
  p.connected = false;
  p.link->connect();
  std::string pong;
  p.link->command({"PING"}, [&](const redisReply* r) { pong = str(r); });
  REQUIRE(l.run_until([&] { return pong == "PONG"; }));
}

TEST_CASE("Redis stopping resets an idle link") {
  auto redis = std::make_unique<test::RedisServer>();
  Loop l;
  Probe p(&l.loop, tcp(redis->port()));
  REQUIRE(l.run_until([&] { return p.connected; }));
  redis.reset();  // SIGTERM: Redis closes its clients
  REQUIRE(l.run_until([&] { return p.closed.has_value(); }));
  CHECK(p.closed->reason == RedisCloseReason::reset);
}

TEST_CASE("pub/sub: a subscribed link gets the messages another link publishes") {
  test::RedisServer redis;
  Loop l;
  Probe sub(&l.loop, tcp(redis.port()));
  Probe pub(&l.loop, tcp(redis.port()));
  std::vector<std::string> got;
  bool confirmed = false;
  sub.link->set_push([&](const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 3) return;
    std::string kind = str(r.element[0]);
    if (kind == "subscribe") confirmed = true;
    if (kind == "message") got.push_back(str(r.element[1]) + "=" + str(r.element[2]));
  });
  REQUIRE(sub.link->subscribe("ch"));
  REQUIRE(l.run_until([&] { return confirmed && pub.connected; }));
  for (int i = 0; i < 3; ++i) pub.link->command({"PUBLISH", "ch", std::to_string(i)}, {});
  REQUIRE(l.run_until([&] { return got.size() == 3; }));
  CHECK(got == std::vector<std::string>{"ch=0", "ch=1", "ch=2"});
  // Unsubscribed: nothing more arrives (a PING on the publisher orders the check).
  REQUIRE(sub.link->unsubscribe("ch"));
  long long receivers = -1;
  l.run_until([&] { return false; }, 50);
  pub.link->command({"PUBLISH", "ch", "late"}, [&](const redisReply* r) { receivers = r ? r->integer : -2; });
  REQUIRE(l.run_until([&] { return receivers >= 0; }));
  CHECK(receivers == 0);
  CHECK(got.size() == 3);
}

TEST_CASE("the owner may close the link from inside a reply; the rest get nullptr, no close notice") {
  test::RedisServer redis;
  Loop l;
  Probe p(&l.loop, tcp(redis.port()));
  int nulls = 0;
  bool first = false;
  p.link->command({"PING"}, [&](const redisReply* r) {
    first = r != nullptr;
    p.link->close();
    CHECK_FALSE(p.link->command({"PING"}, {}));  // closing: refused at once
  });
  p.link->command({"PING"}, [&](const redisReply* r) { nulls += r == nullptr; });
  REQUIRE(l.run_until([&] { return p.link->state() == RedisLink::State::closed; }));
  l.run_until([&] { return false; }, 50);  // a stray notice would arrive now
  CHECK(first);
  CHECK(nulls == 1);
  CHECK_FALSE(p.closed);
}

TEST_CASE("destroying a link with replies pending runs none of them") {
  test::RedisServer redis;
  Loop l;
  bool ran = false;
  {
    Probe p(&l.loop, tcp(redis.port()));
    REQUIRE(l.run_until([&] { return p.connected; }));
    p.link->command({"BLPOP", "nothing", "0"}, [&](const redisReply*) { ran = true; });
  }
  l.run_until([&] { return false; }, 50);
  CHECK_FALSE(ran);
}

int main(int argc, char** argv) {
  if (test::redis_server_path().empty()) {
    std::printf("SKIP: redis-server is not installed (apt-get install redis-server)\n");
    return 77;  // meson: skipped
  }
  doctest::Context context(argc, argv);
  return context.run();
}
