// The router's clustered rooms with a bus that records what it is asked (no Redis): the order
// is the bus's, deliveries come only from it, acks follow their message, joins wait for the
// room's position, and an unreachable cluster refuses says with `unavailable`.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "roomd/core/router.hpp"
#include "roomd/protocol/wire.hpp"
#include "router_fakes.hpp"

using namespace roomd;
using roomd::testing::Box;

namespace {

struct FakeBus : ClusterBus {
  bool up = true;
  std::vector<std::string> watched;
  std::vector<std::string> unwatched;
  std::vector<std::pair<ClusterSay, std::function<void(ClusterSaid)>>> says;
  bool available() const override { return up; }
  void say(ClusterSay say, std::function<void(ClusterSaid)> done) override { says.emplace_back(std::move(say), std::move(done)); }
  void watch(const std::string& room) override { watched.push_back(room); }
  void unwatch(const std::string& room) override { unwatched.push_back(room); }
};

RoomConfig room(std::string name, bool cluster = true) {
  RoomConfig c;
  c.name = std::move(name);
  c.cluster = cluster;
  c.persist = false;
  return c;
}

Request req(Op op, std::string room_name, std::optional<nlohmann::json> id = std::nullopt) {
  Request r;
  r.op = op;
  r.room = std::move(room_name);
  r.id = std::move(id);
  return r;
}

Request say(std::string room_name, std::string text, std::optional<nlohmann::json> id = std::nullopt) {
  Request r = req(Op::say, std::move(room_name), std::move(id));
  r.text = std::move(text);
  return r;
}

struct Cluster {
  FakeBus bus;
  Router router;
  Cluster(std::vector<RoomConfig> rooms = {room("hall"), room("local", false)})
      : router(RouterSettings{}, rooms, RouterServices{.clock = Clock{[] { return std::uint64_t{7}; }, [] { return std::uint64_t{1}; }},
                                                       .cluster = &bus}) {}
  // What the bus would publish for the say at `index`, with this seq.
  void deliver(std::size_t index, std::uint64_t seq, const std::string& epoch = "e1") {
    const auto& s = bus.says.at(index).first;
    router.cluster_deliver(s.room, seq, epoch, s.head + std::to_string(seq) + s.tail);
  }
};

}  // namespace

TEST_CASE("cluster: a join waits for the room's position; the first member makes the node watch it") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  a.got.clear();
  c.router.handle(ida, req(Op::join, "hall", 1));
  CHECK(c.bus.watched == std::vector<std::string>{"hall"});
  CHECK(a.got.empty());  // no joined yet ...
  CHECK(a.held == 1);    // ... and the client's later requests wait behind it
  RoomState state{41, "e1", {wire::message_line("hall", 40, 5, "old", std::string("x"), nullptr),
                              wire::message_line("hall", 41, 6, "old", std::string("y"), nullptr)}};
  c.router.cluster_synced("hall", state);
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["op"] == "joined");
  CHECK(a.got[0]["seq"] == 41);
  CHECK(a.got[0]["epoch"] == "e1");
  CHECK(a.got[0]["history"].size() == 2);
  CHECK(a.held == 0);
  // Synced: the next join is answered at once, and nothing is watched twice.
  Box b;
  SessionId idb = c.router.connect(b);
  b.got.clear();
  c.router.handle(idb, req(Op::join, "hall", 2));
  REQUIRE(b.got.size() == 1);
  CHECK(b.got[0]["seq"] == 41);
  CHECK(c.bus.watched.size() == 1);
  // The last member leaving stops the watch.
  c.router.handle(ida, req(Op::leave, "hall"));
  CHECK(c.bus.unwatched.empty());
  c.router.disconnect(idb);
  CHECK(c.bus.unwatched == std::vector<std::string>{"hall"});
}

TEST_CASE("cluster: a say goes to the bus; the message and then its ok come with the delivery") {
  Cluster c;
  Box a, b;
  SessionId ida = c.router.connect(a), idb = c.router.connect(b);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  c.router.handle(idb, req(Op::join, "hall"));
  a.got.clear();
  b.got.clear();
  c.router.handle(ida, say("hall", "hi", 9));
  REQUIRE(c.bus.says.size() == 1);
  CHECK(c.bus.says[0].first.room == "hall");
  CHECK(c.bus.says[0].first.said_id == std::to_string(ida) + ":1");
  CHECK(a.got.empty());  // nothing delivered locally: one ordering path
  CHECK(b.got.empty());
  CHECK(a.held == 1);
  c.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  CHECK(a.got.empty());  // the ok waits for its own message
  CHECK(a.held == 1);
  c.deliver(0, 1);
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[0]["op"] == "message");
  CHECK(a.got[0]["seq"] == 1);
  CHECK(a.got[0]["text"] == "hi");
  CHECK(a.got[0]["from"] == a.got[0]["from"].get<std::string>());
  CHECK(a.got[1] == ordered_json{{"op", "ok"}, {"id", 9}, {"seq", 1}});
  CHECK(a.held == 0);
  REQUIRE(b.got.size() == 1);
  CHECK(b.got[0]["seq"] == 1);
  // Another node's message is delivered the same way; a delivery that came before its ack
  // lets the ack go at once.
  c.router.handle(idb, say("hall", "yo", "x"));
  c.deliver(1, 2);
  CHECK(b.got.back()["seq"] == 2);
  c.bus.says[1].second(ClusterSaid{true, 2, "e1"});
  CHECK(b.got.back() == ordered_json{{"op", "ok"}, {"id", "x"}, {"seq", 2}});
  CHECK(c.router.rooms()[0].last_seq == 2);
}

TEST_CASE("cluster: unreachable means unavailable, never a local seq; node-local rooms go on") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_synced("hall", RoomState{5, "e1", {}});
  c.router.handle(ida, req(Op::join, "local"));
  c.bus.up = false;
  a.got.clear();
  c.router.handle(ida, say("hall", "hi", 1));
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["op"] == "error");
  CHECK(a.got[0]["code"] == "unavailable");
  CHECK(a.got[0]["id"] == 1);
  CHECK(c.bus.says.empty());
  c.router.handle(ida, say("local", "here", 2));
  CHECK(a.got[1]["op"] == "message");
  CHECK(a.got[1]["seq"] == 1);
  CHECK(a.got[2]["op"] == "ok");
  CHECK(c.router.server_say("hall", "x") == std::optional<std::string>("the cluster is unreachable"));
  // A join into an unsynced clustered room does not wait for a cluster that is not there.
  Box b;
  SessionId idb = c.router.connect(b);
  b.got.clear();
  c.router.handle(idb, req(Op::join, "hall"));
  CHECK(b.got.at(0)["op"] == "joined");
}

TEST_CASE("cluster: a lost bus releases acks; a failed say is unavailable") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  a.got.clear();
  c.router.handle(ida, say("hall", "one", 1));
  c.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  CHECK(a.held == 1);
  c.router.cluster_lost();  // the function returned: the ok goes, the message comes after the reconnect
  CHECK(a.held == 0);
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 1}, {"seq", 1}});
  c.router.handle(ida, say("hall", "two", 2));
  c.bus.says[1].second(ClusterSaid{});
  CHECK(a.got.back()["code"] == "unavailable");
  CHECK(a.held == 0);
}

TEST_CASE("cluster: a jump in seq or a new epoch starts the replay ring again") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  c.router.handle(ida, say("hall", "1"));
  c.router.handle(ida, say("hall", "2"));
  c.router.handle(ida, say("hall", "3"));
  c.deliver(0, 1);
  c.deliver(1, 2);
  Box b;
  SessionId idb = c.router.connect(b);
  Request resume = req(Op::join, "hall");
  resume.since = 0;
  resume.epoch = "e1";
  c.router.handle(idb, resume);
  CHECK(b.got.back()["resumed"] == true);
  CHECK(b.got.back()["history"].size() == 2);
  c.deliver(2, 9);  // 3..8 are gone
  Box d;
  SessionId idd = c.router.connect(d);
  c.router.handle(idd, resume);
  CHECK(d.got.back()["resumed"] == false);
  CHECK(d.got.back()["seq"] == 9);
  // Redis lost the room: a new epoch, seq from 1 again.
  c.router.cluster_synced("hall", RoomState{0, "e2", {}});
  Box e;
  SessionId ide = c.router.connect(e);
  c.router.handle(ide, resume);
  CHECK(e.got.back()["resumed"] == false);
  CHECK(e.got.back()["epoch"] == "e2");
  CHECK(e.got.back()["seq"] == 0);
}

TEST_CASE("cluster: without a bus every room is the node's own") {
  Router router(RouterSettings{}, {room("hall")}, Clock{[] { return std::uint64_t{7}; }, [] { return std::uint64_t{1}; }});
  Box a;
  SessionId ida = router.connect(a);
  router.handle(ida, req(Op::join, "hall"));
  a.got.clear();
  router.handle(ida, say("hall", "hi", 1));
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[0]["seq"] == 1);
  CHECK(a.got[1]["op"] == "ok");
}
