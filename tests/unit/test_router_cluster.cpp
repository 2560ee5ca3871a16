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
  struct Followed {
    std::string room;
    std::uint64_t last_seq;
    std::string epoch;
  };
  std::vector<Followed> followed;
  void follow(const std::string& room, std::uint64_t last_seq, const std::string& epoch) override {
    followed.push_back({room, last_seq, epoch});
  }
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

// ---- followed rooms: clustered and persisted -----------------------------------------------

namespace {

// A store that holds each append's commit until the test runs it, and answers queries empty.
struct HeldStore : Persistence {
  std::vector<std::pair<StoredMessage, std::function<void(bool)>>> appended;
  std::vector<HistoryQuery> queries;
  void append(StoredMessage m, std::function<void(bool)> committed) override {
    appended.emplace_back(std::move(m), std::move(committed));
  }
  void query(HistoryQuery q, std::function<void(HistoryPage)> done) override {
    queries.push_back(std::move(q));
    done(HistoryPage{});
  }
  void commit(std::size_t index, bool ok = true) { appended.at(index).second(ok); }
};

RoomConfig persisted_room(std::string name) {
  RoomConfig c = room(std::move(name));
  c.persist = true;
  return c;
}

// A node with a persisted clustered room "log" whose store ends at seq 10 of epoch e1.
struct Followed {
  FakeBus bus;
  HeldStore store;
  Router router;
  Followed()
      : router(RouterSettings{}, {persisted_room("log"), room("hall")},
               RouterServices{.clock = Clock{[] { return std::uint64_t{7}; }, [] { return std::uint64_t{1}; }},
                              .persistence = &store,
                              .cluster = &bus}) {
    router.restore("log", RoomState{10, "e1",
                                    {wire::message_line("log", 9, 5, "old", std::string("nine"), nullptr),
                                     wire::message_line("log", 10, 6, "old", std::string("ten"), nullptr)}});
  }
  void deliver(std::size_t index, std::uint64_t seq, const std::string& epoch = "e1") {
    const auto& s = bus.says.at(index).first;
    router.cluster_deliver(s.room, seq, epoch, s.head + std::to_string(seq) + s.tail);
  }
  // Another node's message.
  void deliver_other(std::uint64_t seq, const std::string& text, const std::string& epoch = "e1") {
    router.cluster_deliver("log", seq, epoch, wire::message_line("log", seq, 8, "other", text, nullptr));
  }
  SessionId member(Box& box) {
    SessionId id = router.connect(box);
    router.handle(id, req(Op::join, "log", "j"));
    return id;
  }
};

}  // namespace

TEST_CASE("followed room: heard from the store's end, members or not; every message is stored") {
  Followed f;
  REQUIRE(f.bus.followed.size() == 1);  // at restore, with no member: the store must be complete
  CHECK(f.bus.followed[0].room == "log");
  CHECK(f.bus.followed[0].last_seq == 10);
  CHECK(f.bus.followed[0].epoch == "e1");
  f.deliver_other(11, "caught up");  // the catch-up from the stream, before anyone joined
  REQUIRE(f.store.appended.size() == 1);
  CHECK(f.store.appended[0].first.seq == 11);
  CHECK(f.store.appended[0].first.text == "caught up");
  CHECK(f.store.appended[0].first.epoch == "e1");
  CHECK(f.store.appended[0].first.body.find("\"seq\":11") != std::string::npos);
  f.router.cluster_synced("log", RoomState{11, "e1", {}});  // the catch-up is reported ...
  Box a;
  SessionId ida = f.router.connect(a);
  a.got.clear();
  f.router.handle(ida, req(Op::join, "log", 1));
  CHECK(a.got.empty());  // ... but the store has not committed 11 yet: the join waits
  CHECK(a.held == 1);
  f.store.commit(0);
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["op"] == "joined");
  CHECK(a.got[0]["seq"] == 11);
  CHECK(a.got[0]["epoch"] == "e1");
  CHECK(a.got[0]["history"].size() == 3);  // 9 and 10 from the store, 11 delivered
  CHECK(a.held == 0);
  CHECK(f.bus.watched.empty());  // followed, never watched
  // History and search read the store, as on one node.
  f.router.handle(ida, req(Op::history, "log", 2));
  REQUIRE(f.store.queries.size() == 1);
  CHECK(f.store.queries[0].room == "log");
  // The last member leaving does not stop it.
  f.router.handle(ida, req(Op::leave, "log"));
  CHECK(f.bus.unwatched.empty());
  f.deliver_other(12, "nobody here");
  CHECK(f.store.appended.size() == 2);
}

TEST_CASE("followed room: a join during the catch-up waits for it and hears none of it as new") {
  Followed f;
  Box a;
  SessionId ida = f.router.connect(a);
  a.got.clear();
  f.router.handle(ida, req(Op::join, "log", 1));
  CHECK(a.held == 1);
  f.deliver_other(11, "a");
  f.deliver_other(12, "b");
  CHECK(a.got.empty());  // not a member yet: the catch-up is not sent to it
  f.router.cluster_synced("log", RoomState{12, "e1", {}});
  CHECK(a.got.empty());  // the store has not caught up
  f.store.commit(0);
  CHECK(a.got.empty());
  f.store.commit(1);
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["op"] == "joined");
  CHECK(a.got[0]["seq"] == 12);
  CHECK(a.got[0]["history"].back()["text"] == "b");
  f.deliver_other(13, "c");
  CHECK(a.got.back()["seq"] == 13);  // a member now
}

TEST_CASE("followed room: the ok of a say with an id waits for its commit here") {
  Followed f;
  f.router.cluster_synced("log", RoomState{10, "e1", {}});
  Box a, b;
  SessionId ida = f.member(a), idb = f.member(b);
  a.got.clear();
  b.got.clear();
  f.router.handle(ida, say("log", "hi", 5));
  f.bus.says[0].second(ClusterSaid{true, 11, "e1"});
  f.deliver(0, 11);
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["op"] == "message");  // delivered, not yet stored: no ok
  CHECK(a.held == 1);
  f.store.commit(0);
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[1] == ordered_json{{"op", "ok"}, {"id", 5}, {"seq", 11}});
  CHECK(a.held == 0);
  // The reply may come after the commit: answered at once, from what the commit said.
  f.router.handle(idb, say("log", "late reply", "x"));
  f.deliver(1, 12);
  f.store.commit(1);
  CHECK(b.held == 1);
  f.bus.says[1].second(ClusterSaid{true, 12, "e1"});
  CHECK(b.got.back() == ordered_json{{"op", "ok"}, {"id", "x"}, {"seq", 12}});
  CHECK(b.held == 0);
  // A commit that failed: internal, as on one node, whichever comes first.
  f.router.handle(ida, say("log", "disk full", 6));
  f.bus.says[2].second(ClusterSaid{true, 13, "e1"});
  f.deliver(2, 13);
  f.store.commit(2, false);
  CHECK(a.got.back()["op"] == "error");
  CHECK(a.got.back()["code"] == "internal");
  CHECK(a.got.back()["id"] == 6);
  f.router.handle(idb, say("log", "disk full again", "y"));
  f.deliver(3, 14);
  f.store.commit(3, false);
  f.bus.says[3].second(ClusterSaid{true, 14, "e1"});
  CHECK(b.got.back()["code"] == "internal");
  CHECK(a.held == 0);
  CHECK(b.held == 0);
  // Without an id nothing is promised: the say is held only until its message is here.
  f.router.handle(ida, say("log", "no id"));
  f.bus.says[4].second(ClusterSaid{true, 15, "e1"});
  f.deliver(4, 15);
  CHECK(a.held == 0);
  CHECK(a.got.back()["op"] == "message");
}

TEST_CASE("followed room: a lost bus fails the acks whose message is not here; delivered ones wait") {
  Followed f;
  f.router.cluster_synced("log", RoomState{10, "e1", {}});
  Box a, b;
  SessionId ida = f.member(a), idb = f.member(b);
  f.router.handle(ida, say("log", "arrived", 1));
  f.router.handle(idb, say("log", "not yet", 2));
  f.bus.says[0].second(ClusterSaid{true, 11, "e1"});
  f.bus.says[1].second(ClusterSaid{true, 12, "e1"});
  f.deliver(0, 11);
  f.bus.up = false;
  f.router.cluster_lost();
  CHECK(b.got.back()["op"] == "error");
  CHECK(b.got.back()["code"] == "unavailable");
  CHECK(b.held == 0);
  CHECK(a.held == 1);  // its message is here: its commit needs no Redis
  f.store.commit(0);
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 1}, {"seq", 11}});
}

TEST_CASE("followed room: a new epoch keeps the store's seqs; acks that cannot be kept fail") {
  Followed f;
  f.router.cluster_synced("log", RoomState{10, "e1", {}});
  Box a, b, c;
  SessionId ida = f.member(a), idb = f.member(b), idc = f.member(c);
  f.router.handle(ida, say("log", "lost with Redis", 1));
  f.bus.says[0].second(ClusterSaid{true, 11, "e1"});
  CHECK(a.held == 1);
  // Redis began the room again after seq 10 (this node's floor): the old epoch's ack can no
  // longer be kept.
  f.router.cluster_synced("log", RoomState{10, "e2", {}, 10});
  CHECK(a.got.back()["code"] == "unavailable");
  CHECK(a.held == 0);
  // A seq of the new epoch at or below 10 is this node's old one here: not stored here.
  f.router.handle(idb, say("log", "conflict", 2));
  f.bus.says[1].second(ClusterSaid{true, 7, "e2"});
  CHECK(b.got.back()["code"] == "internal");
  // Above it, as usual.
  f.router.handle(idc, say("log", "after", 3));
  f.bus.says[2].second(ClusterSaid{true, 11, "e2"});
  f.deliver(2, 11, "e2");
  REQUIRE(f.store.appended.size() == 1);
  CHECK(f.store.appended[0].first.epoch == "e2");
  f.store.commit(0);
  CHECK(c.got.back() == ordered_json{{"op", "ok"}, {"id", 3}, {"seq", 11}});
  // The seq went on; a resume across the new epoch is refused.
  Box d;
  SessionId idd = f.router.connect(d);
  Request resume = req(Op::join, "log");
  resume.since = 10;
  resume.epoch = "e1";
  f.router.handle(idd, resume);
  CHECK(d.got.back()["resumed"] == false);
  CHECK(d.got.back()["epoch"] == "e2");
  CHECK(d.got.back()["seq"] == 11);
}

TEST_CASE("followed room: a reload that removes it stops following it and answers its acks") {
  Followed f;
  f.router.cluster_synced("log", RoomState{10, "e1", {}});
  Box a;
  SessionId ida = f.member(a);
  f.router.handle(ida, say("log", "hi", 1));
  f.bus.says[0].second(ClusterSaid{true, 11, "e1"});
  f.router.reconfigure(RouterSettings{}, {room("hall")});
  CHECK(f.bus.unwatched == std::vector<std::string>{"log"});
  CHECK(a.held == 0);
  bool answered = false;
  for (const auto& m : a.got) answered = answered || (m["op"] == "error" && m["id"] == 1);
  CHECK(answered);
}
