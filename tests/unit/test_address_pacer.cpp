// AddressPacer: the per-address budget, and the router pacing history requests by it.
#include <doctest/doctest.h>

#include "roomd/core/address_pacer.hpp"
#include "roomd/core/router.hpp"
#include "router_fakes.hpp"

using namespace roomd;
using namespace roomd::testing;

TEST_CASE("address pacer: a burst at once, then slots one interval apart, in arrival order") {
  AddressPacer p({10, 3});  // a slot every 100 ms after 3 at once
  for (int i = 0; i < 3; ++i) CHECK(p.reserve("10.0.0.1", 1000) == 0);
  CHECK(p.reserve("10.0.0.1", 1000) == 100);
  CHECK(p.reserve("10.0.0.1", 1000) == 200);  // the next waiter gets the next slot: no retries
  CHECK(p.reserve("10.0.0.1", 1050) == 250);
  CHECK(p.reserve("10.0.0.2", 1050) == 0);    // other addresses have their own budget
  // It earns its burst back at the rate: by 1500 (last slot 1300) two of the three.
  CHECK(p.reserve("10.0.0.1", 1500) == 0);
  CHECK(p.reserve("10.0.0.1", 1500) == 0);
  CHECK(p.reserve("10.0.0.1", 1500) == 100);
  for (int i = 0; i < 3; ++i) CHECK(p.reserve("10.0.0.1", 2000) == 0);  // all of it, 300 ms after its last
}

TEST_CASE("address pacer: admit refuses over the burst without pushing the address's slots back") {
  AddressPacer p({10, 3});  // a slot every 100 ms after 3 at once (server.connect_rate)
  for (int i = 0; i < 3; ++i) CHECK(p.admit("10.0.0.1", 1000) == 0);
  CHECK(p.admit("10.0.0.1", 1000) == 100);  // refused: due in 100 ms ...
  CHECK(p.admit("10.0.0.1", 1000) == 100);  // ... and refusals take nothing: still 100
  for (int i = 0; i < 1000; ++i) p.admit("10.0.0.1", 1050);  // a flood of refusals
  CHECK(p.admit("10.0.0.1", 1050) == 50);
  CHECK(p.admit("10.0.0.2", 1050) == 0);  // another address has its own budget
  CHECK(p.admit("10.0.0.1", 1100) == 0);  // the slot came on time
  CHECK(p.admit("10.0.0.1", 1100) == 100);
  AddressPacer off({0, 1});
  for (int i = 0; i < 10; ++i) CHECK(off.admit("a", 0) == 0);
}

TEST_CASE("address pacer: slow rates, rate 0, and reload") {
  AddressPacer slow({0.5, 1});
  CHECK(slow.reserve("a", 0) == 0);
  CHECK(slow.reserve("a", 0) == 2000);
  CHECK(slow.reserve("a", 1) == 3999);  // fractional milliseconds round up, never early

  AddressPacer off({0, 1});
  for (int i = 0; i < 1000; ++i) CHECK(off.reserve("a", 0) == 0);
  CHECK(off.sources() == 0);

  AddressPacer p({0, 1});
  p.reconfigure({1000, 1});
  CHECK(p.reserve("a", 0) == 0);
  CHECK(p.reserve("a", 0) == 1);
}

TEST_CASE("address pacer: addresses within their burst again are forgotten") {
  AddressPacer p({1, 2});
  for (int i = 0; i < 1024; ++i) CHECK(p.reserve("s" + std::to_string(i), 0) == 0);
  CHECK(p.sources() == 1024);
  CHECK(p.reserve("new", 500) == 0);  // a sweep at 1024, but none is back to its burst yet
  CHECK(p.sources() == 1025);
  AddressPacer q({1, 2});
  for (int i = 0; i < 1024; ++i) CHECK(q.reserve("s" + std::to_string(i), 0) == 0);
  CHECK(q.reserve("new", 1000) == 0);  // one slot a second: all 1024 have their burst again
  CHECK(q.sources() == 1);
}

namespace {

// A router whose history requests are paced only by address (the session budget out of the
// way), with delayed callbacks run by the test.
struct PacedRouter {
  std::uint64_t now = 1000;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> later;
  std::unique_ptr<Router> router;
  explicit PacedRouter(AddressPacer::Settings address) {
    RouterSettings settings;
    settings.query_rate = 0;
    settings.address_history = address;
    RouterServices services{Clock{[] { return std::uint64_t{1}; }, [this] { return now; }}, nullptr, nullptr, {}, {},
                            {}, [this](std::uint64_t delay_ms, std::function<void()> cb) {
                              later.emplace_back(now + delay_ms, std::move(cb));
                            }};
    RoomConfig lobby;
    lobby.name = "lobby";
    router = std::make_unique<Router>(settings, std::vector<RoomConfig>{lobby}, services);
  }
  std::size_t run_due() {
    std::vector<std::function<void()>> due;
    std::erase_if(later, [&](auto& entry) {
      if (entry.first > now) return false;
      due.push_back(std::move(entry.second));
      return true;
    });
    for (auto& cb : due) cb();
    return due.size();
  }
};

Request history_request(int id) {
  Request r;
  r.op = Op::history;
  r.room = "lobby";
  r.id = id;
  return r;
}

Request rooms_request() {
  Request r;
  r.op = Op::rooms;
  return r;
}

}  // namespace

TEST_CASE("router: many connections from one address share its history budget; others do not") {
  PacedRouter f({10, 2});  // a slot every 100 ms after 2 at once
  Box c1, c2, c3, elsewhere;
  SessionId s1 = f.router->connect(c1, false, "198.51.100.1");
  SessionId s2 = f.router->connect(c2, false, "198.51.100.1");
  SessionId s3 = f.router->connect(c3, false, "198.51.100.1");
  SessionId o = f.router->connect(elsewhere, false, "198.51.100.2");
  for (Box* b : {&c1, &c2, &c3, &elsewhere}) b->got.clear();

  f.router->handle(s1, history_request(1));
  f.router->handle(s2, history_request(2));
  CHECK(c1.got.size() == 1);
  CHECK(c2.got.size() == 1);
  // The address's burst is spent: the next lookups wait, in arrival order, each one slot on.
  f.router->handle(s3, history_request(3));
  f.router->handle(s1, history_request(4));
  CHECK(c3.got.empty());
  CHECK(c3.held == 1);
  CHECK(c1.held == 1);
  CHECK(f.router->stats().history_paced_by_address == 2);
  CHECK(f.router->stats().queries_paced == 0);
  REQUIRE(f.later.size() == 2);
  CHECK(f.later[0].first == 1100);
  CHECK(f.later[1].first == 1200);

  // Another address is not affected, and other lookups (answered from memory) are not in it.
  f.router->handle(o, history_request(5));
  CHECK(elsewhere.got.size() == 1);
  f.router->handle(s2, rooms_request());
  CHECK(c2.got.back()["op"] == "rooms");

  f.now = 1100;
  CHECK(f.run_due() == 1);
  CHECK(c3.held == 0);
  REQUIRE(c3.got.size() == 1);
  CHECK(c3.got[0]["op"] == "history");
  CHECK(c3.got[0]["id"] == 3);
  CHECK(c1.got.size() == 1);  // still waiting for its slot
  f.now = 1200;
  CHECK(f.run_due() == 1);
  CHECK(c1.held == 0);
  CHECK(c1.got.back()["id"] == 4);
  CHECK(f.router->stats().rate_limited == 0);  // nothing refused
}

TEST_CASE("router: a connection that leaves while its history request waits for the address is forgotten") {
  PacedRouter f({1, 1});
  Box c1, c2;
  SessionId s1 = f.router->connect(c1, false, "198.51.100.1");
  SessionId s2 = f.router->connect(c2, false, "198.51.100.1");
  f.router->handle(s1, history_request(1));
  f.router->handle(s2, history_request(2));
  CHECK(c2.held == 1);
  f.router->disconnect(s2);
  std::size_t seen = c2.got.size();
  f.now += 1000;
  CHECK(f.run_due() == 1);
  CHECK(c2.got.size() == seen);
  CHECK(c2.held == 1);  // its connection is not touched
}

TEST_CASE("router: both budgets: the session's first, then the address's") {
  PacedRouter f({10, 1});
  RouterSettings settings;
  settings.query_rate = 2;  // a session token every 500 ms
  settings.query_burst = 1;
  settings.address_history = {10, 1};
  f.router->reconfigure(settings, {});
  Box c1, c2;
  SessionId s1 = f.router->connect(c1, false, "198.51.100.1");
  SessionId s2 = f.router->connect(c2, false, "198.51.100.1");
  f.router->handle(s1, history_request(1));  // both budgets had one
  f.router->handle(s2, history_request(2));  // its own token, but the address waits 100 ms
  f.router->handle(s1, history_request(3));  // no session token: waits 500 ms, then an address slot
  CHECK(f.router->stats().history_paced_by_address == 1);
  CHECK(f.router->stats().queries_paced == 1);
  f.now += 100;
  CHECK(f.run_due() == 1);
  CHECK(c2.got.back()["id"] == 2);
  f.now += 400;
  CHECK(f.run_due() == 1);  // s1's session token is due; the address's next slot is free by now
  CHECK(c1.got.back()["id"] == 3);
  CHECK(c1.held == 0);
}
