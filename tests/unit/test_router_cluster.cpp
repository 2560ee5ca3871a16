// The router's clustered rooms with a bus that records what it is asked (no Redis): the order
// is the bus's, deliveries come only from it, acks follow their message, joins wait for the
// room's position, and an unreachable cluster refuses says with `unavailable`. Members and
// nicks: other nodes' members in pages, counts and presence; nicks claimed from the bus.
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
  struct Claim {
    std::string nick, replaced;
    std::function<void(NickClaim)> done;
  };
  std::vector<Claim> claims;
  std::vector<std::string> released;
  std::vector<std::string> changes;  // "join hall ann", "leave hall ann", "nick hall ann bob"
  std::vector<std::function<void(std::optional<ClusterMemberPage>)>> whos;
  std::vector<std::string> who_asked;  // "ROOM AFTER LIMIT"
  std::vector<std::function<void(std::optional<std::vector<ClusterRoomCount>>)>> counts;
  bool available() const override { return up; }
  void say(ClusterSay say, std::function<void(ClusterSaid)> done) override { says.emplace_back(std::move(say), std::move(done)); }
  void watch(const std::string& room) override { watched.push_back(room); }
  void unwatch(const std::string& room) override { unwatched.push_back(room); }
  std::string guest_prefix() const override { return "guest-tag-"; }
  void claim_nick(const std::string& nick, const std::string& replaced, std::function<void(NickClaim)> done) override {
    claims.push_back({nick, replaced, std::move(done)});
  }
  void release_nick(const std::string& nick) override { released.push_back(nick); }
  std::vector<std::string> guests;  // registered guest nicks
  void register_guest(const std::string& nick) override { guests.push_back(nick); }
  void member_joined(const std::string& room, const std::string& nick) override { changes.push_back("join " + room + " " + nick); }
  void member_left(const std::string& room, const std::string& nick) override { changes.push_back("leave " + room + " " + nick); }
  void member_renamed(const std::string& room, const std::string& old, const std::string& nick) override {
    changes.push_back("nick " + room + " " + old + " " + nick);
  }
  void who(const std::string& room, const std::optional<std::string>& after, std::size_t limit,
           std::function<void(std::optional<ClusterMemberPage>)> done) override {
    who_asked.push_back(room + " " + after.value_or("-") + " " + std::to_string(limit));
    whos.push_back(std::move(done));
  }
  void room_counts(std::function<void(std::optional<std::vector<ClusterRoomCount>>)> done) override {
    counts.push_back(std::move(done));
  }
  struct Followed {
    std::string room;
    std::uint64_t last_seq;
    std::string epoch;
  };
  std::vector<Followed> followed;
  void follow(const std::string& room, std::uint64_t last_seq, const std::string& epoch) override {
    followed.push_back({room, last_seq, epoch});
  }
  struct TopicSet {
    std::string room, nick, topic;
    bool kept;
    std::function<void(bool)> done;
  };
  std::vector<TopicSet> topics;
  void set_topic(const std::string& room, const std::string& nick, const std::string& topic, bool kept,
                 std::function<void(bool)> done) override {
    topics.push_back({room, nick, topic, kept, std::move(done)});
  }
  std::vector<std::pair<ClusterWhisper, std::function<void(WhisperSent)>>> whispers;
  void whisper(ClusterWhisper w, std::function<void(WhisperSent)> done) override {
    whispers.emplace_back(std::move(w), std::move(done));
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
  if (id) r.id = std::move(*id);  // (moving an empty optional<json>: a false maybe-uninitialized under TSan)
  return r;
}

Request say(std::string room_name, std::string text, std::optional<nlohmann::json> id = std::nullopt) {
  Request r = req(Op::say, std::move(room_name), std::move(id));
  r.text = std::move(text);
  return r;
}

// Whether the box got an ok or an error for the request `id`.
bool answered(const Box& box, const nlohmann::json& id) {
  for (const auto& m : box.got)
    if ((m["op"] == "ok" || m["op"] == "error") && m.contains("id") && m["id"] == id) return true;
  return false;
}

struct Cluster {
  FakeBus bus;
  std::vector<std::function<void()>> later;  // summaries due (RouterServices::after)
  Router router;
  Cluster(std::vector<RoomConfig> rooms = {room("hall"), room("local", false)}, RouterSettings settings = {})
      : router(settings, rooms,
               RouterServices{.clock = Clock{[] { return std::uint64_t{7}; }, [] { return std::uint64_t{1}; }},
                              .after = [this](std::uint64_t, std::function<void()> cb) { later.push_back(std::move(cb)); },
                              .cluster = &bus}) {}
  void run_later() {
    auto due = std::exchange(later, {});
    for (auto& cb : due) cb();
  }
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
  CHECK(a.held == 0);  // pipelined: its next request is read at once (a say goes, others wait)
  c.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  CHECK(a.got.empty());  // the ok waits for its own message
  CHECK(a.held == 0);
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
  CHECK(a.got.empty());
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

namespace {

std::vector<std::string> names(const ordered_json& list) {
  std::vector<std::string> out;
  for (const auto& n : list) out.push_back(n.get<std::string>());
  return out;
}

Request nick(std::string n, std::optional<nlohmann::json> id = std::nullopt) {
  Request r;
  r.op = Op::nick;
  r.nick = std::move(n);
  if (id) r.id = std::move(*id);
  return r;
}

// A client whose nick the cluster granted; what it was sent until then is dropped.
SessionId named(Cluster& c, Box& box, std::string nick_name) {
  SessionId id = c.router.connect(box);
  c.router.handle(id, nick(std::move(nick_name)));
  c.bus.claims.back().done(NickClaim::ok);
  box.got.clear();
  return id;
}

Request who(std::string room_name, std::optional<std::string> after = std::nullopt, std::optional<std::uint32_t> limit = std::nullopt) {
  Request r = req(Op::who, std::move(room_name));
  r.after = std::move(after);
  r.limit = limit;
  return r;
}

}  // namespace

TEST_CASE("cluster: other nodes' members are in joined, who, rooms and presence") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  CHECK(a.got[0]["nick"] == "guest-tag-1");  // the node's own guest prefix
  c.router.handle(ida, nick("ann"));
  c.bus.claims.at(0).done(NickClaim::ok);
  a.got.clear();
  c.router.handle(ida, req(Op::join, "hall"));
  CHECK(c.bus.changes == std::vector<std::string>{"join hall ann"});
  // The members are read before the position: the joined reply lists every node's.
  c.router.cluster_members("hall", {"zed", "bob"});
  CHECK(a.got.empty());  // nothing announced for the first read
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  REQUIRE(a.got.size() == 1);
  CHECK(names(a.got[0]["members"]) == std::vector<std::string>{"ann", "bob", "zed"});
  CHECK(a.got[0]["count"] == 3);
  a.got.clear();

  c.router.cluster_presence("hall", {ClusterPresence::Kind::join, {"carl"}, ""});
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0] == ordered_json{{"op", "presence"}, {"room", "hall"}, {"event", "join"}, {"nick", "carl"}});
  c.router.cluster_presence("hall", {ClusterPresence::Kind::join, {"carl"}, ""});  // known already: said once
  CHECK(a.got.size() == 1);
  a.got.clear();
  c.router.handle(ida, who("hall"));
  CHECK(names(a.got.at(0)["members"]) == std::vector<std::string>{"ann", "bob", "carl", "zed"});
  CHECK(a.got[0]["count"] == 4);
  c.router.handle(ida, who("hall", std::nullopt, 2));
  CHECK(names(a.got.at(1)["members"]) == std::vector<std::string>{"ann", "bob"});
  CHECK(a.got[1]["more"] == true);
  c.router.handle(ida, who("hall", "bob", 2));
  CHECK(names(a.got.at(2)["members"]) == std::vector<std::string>{"carl", "zed"});
  CHECK(a.got[2]["more"] == false);
  CHECK(c.bus.whos.empty());  // a watched room's members are known here
  a.got.clear();

  c.router.cluster_presence("hall", {ClusterPresence::Kind::leave, {"bob", "nobody"}, ""});
  c.router.cluster_presence("hall", {ClusterPresence::Kind::nick, {"zed", "zoe"}, ""});
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[0] == ordered_json{{"op", "presence"}, {"room", "hall"}, {"event", "leave"}, {"nick", "bob"}});
  CHECK(a.got[1] == ordered_json{{"op", "presence"}, {"room", "hall"}, {"event", "nick"}, {"nick", "zoe"}, {"old", "zed"}});
  CHECK(*c.router.who("hall") == std::vector<std::string>{"ann", "carl", "zoe"});
  a.got.clear();

  // rooms: a watched room counts as this node knows it; the others' rooms and counts come from
  // the cluster, and the reply waits for them.
  c.router.handle(ida, req(Op::rooms, ""));
  CHECK(a.got.empty());
  CHECK(a.held == 1);
  REQUIRE(c.bus.counts.size() == 1);
  c.bus.counts[0](std::vector<ClusterRoomCount>{{"hall", 99, std::nullopt}, {"far", 2, std::nullopt}, {"zzz", 1, std::nullopt}});
  CHECK(a.held == 0);
  REQUIRE(a.got.size() == 1);
  const auto& list = a.got[0]["rooms"];
  REQUIRE(list.size() == 4);
  CHECK(list[0]["name"] == "far");
  CHECK(list[0]["members"] == 2);
  CHECK(list[1]["name"] == "hall");
  CHECK(list[1]["members"] == 3);
  CHECK(list[2]["name"] == "local");
  CHECK(list[2]["members"] == 0);
  CHECK(list[3]["name"] == "zzz");
  a.got.clear();

  // Unwatched: the node forgets the others' members; who and counts are the cluster's.
  c.router.handle(ida, req(Op::leave, "hall"));
  CHECK(c.bus.changes.back() == "leave hall ann");
  CHECK(c.bus.unwatched == std::vector<std::string>{"hall"});
  CHECK(c.router.rooms()[0].remote_members == 0);
  a.got.clear();
  c.router.handle(ida, who("hall", "b", 10));
  CHECK(c.bus.who_asked.back() == "hall b 10");
  c.bus.whos.back()(ClusterMemberPage{{"carl", "zoe"}, 2, false});
  CHECK(names(a.got.at(0)["members"]) == std::vector<std::string>{"carl", "zoe"});
  CHECK(a.got[0]["count"] == 2);
  c.router.handle(ida, who("hall"));
  c.bus.whos.back()(std::nullopt);  // unanswered: what this node knows
  CHECK(a.got.at(1)["count"] == 0);
  // A room only other nodes have: theirs, or no_such_room.
  c.router.handle(ida, who("far"));
  c.bus.whos.back()(ClusterMemberPage{{"x1"}, 1, false});
  CHECK(names(a.got.at(2)["members"]) == std::vector<std::string>{"x1"});
  c.router.handle(ida, who("gone"));
  c.bus.whos.back()(ClusterMemberPage{});
  CHECK(a.got.at(3)["code"] == "no_such_room");
  c.bus.up = false;
  c.router.handle(ida, who("far"));
  CHECK(a.got.at(4)["code"] == "no_such_room");
  c.router.handle(ida, req(Op::rooms, ""));
  CHECK(a.got.at(5)["rooms"].size() == 2);  // unreachable: this node's own rooms
  CHECK(a.held == 0);
}

TEST_CASE("cluster: members read again (a reconnect, a gap) announce what changed meanwhile") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_members("hall", {"bob", "carl"});
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  a.got.clear();
  c.router.cluster_members("hall", {"carl", "dora"});
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[0]["event"] == "leave");
  CHECK(a.got[0]["nick"] == "bob");
  CHECK(a.got[1]["event"] == "join");
  CHECK(a.got[1]["nick"] == "dora");
  // A room no member here watches hears nothing.
  c.router.cluster_presence("local", {ClusterPresence::Kind::join, {"x"}, ""});
  c.router.cluster_members("local", {"x"});
  CHECK(a.got.size() == 2);
}

TEST_CASE("cluster: a big room's presence from other nodes is summarized, counted on all nodes") {
  RouterSettings settings;
  settings.presence_threshold = 2;
  Cluster c({room("hall")}, settings);
  Box a;
  SessionId ida = c.router.connect(a);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_members("hall", {"x", "y"});
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  a.got.clear();
  c.router.cluster_presence("hall", {ClusterPresence::Kind::join, {"z"}, ""});  // 4 members > 2
  c.router.cluster_presence("hall", {ClusterPresence::Kind::leave, {"x"}, ""});
  CHECK(a.got.empty());
  REQUIRE(c.later.size() == 1);
  c.run_later();
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["event"] == "summary");
  CHECK(names(a.got[0]["joined"]) == std::vector<std::string>{"z"});
  CHECK(names(a.got[0]["left"]) == std::vector<std::string>{"x"});
  CHECK(a.got[0]["count"] == 3);
}

TEST_CASE("cluster: nicks are the cluster's: claimed before taken, released when let go") {
  Cluster c;
  Box a, b, d;
  SessionId ida = c.router.connect(a), idb = c.router.connect(b), idd = c.router.connect(d);
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.handle(idb, req(Op::join, "hall"));
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  a.got.clear();
  b.got.clear();
  d.got.clear();

  c.router.handle(ida, nick("Ann", 1));
  REQUIRE(c.bus.claims.size() == 1);
  CHECK(c.bus.claims[0].nick == "ann");      // folded
  CHECK(c.bus.guests == std::vector<std::string>{"guest-tag-1", "guest-tag-2", "guest-tag-3"});
  CHECK(c.bus.claims[0].replaced == "guest-tag-1");  // the guest nick, registered at connect
  CHECK(a.got.empty());
  CHECK(a.held == 1);
  c.bus.claims[0].done(NickClaim::ok);
  CHECK(a.got.at(0) == ordered_json{{"op", "ok"}, {"id", 1}, {"nick", "Ann"}});
  CHECK(a.held == 0);
  CHECK(b.got.at(0)["event"] == "nick");
  CHECK(c.bus.changes.back() == "nick hall guest-tag-1 Ann");

  c.router.handle(idb, nick("ann", 2));  // this node's already: no need to ask
  CHECK(b.got.back()["code"] == "nick_taken");
  c.router.handle(idb, nick("Bob", 3));
  c.router.handle(idd, nick("BOB", 4));  // being claimed here now
  CHECK(d.got.back()["code"] == "nick_taken");
  REQUIRE(c.bus.claims.size() == 2);
  c.bus.claims[1].done(NickClaim::taken);  // another node's client has it
  CHECK(b.got.back()["code"] == "nick_taken");
  CHECK(b.got.back()["id"] == 3);
  c.router.handle(idb, nick("guest-x1", 5));
  CHECK(b.got.back()["code"] == "nick_taken");
  c.router.handle(idb, nick("bea", 6));
  c.bus.claims.back().done(NickClaim::unavailable);
  CHECK(b.got.back()["code"] == "unavailable");
  CHECK(*c.router.nick_of(idb) == "guest-tag-2");
  CHECK(c.router.stats().nicks_unavailable == 1);

  // A rename releases the old nick in the same claim; a change of case asks nobody.
  c.router.handle(ida, nick("anna", 7));
  CHECK(c.bus.claims.back().replaced == "ann");
  c.bus.claims.back().done(NickClaim::ok);
  const std::size_t claims = c.bus.claims.size();
  c.router.handle(ida, nick("Anna", 8));
  CHECK(c.bus.claims.size() == claims);
  CHECK(a.got.back()["nick"] == "Anna");
  CHECK(c.bus.changes.back() == "nick hall anna Anna");

  // Unreachable: nick changes wait for the cluster, never taken locally.
  c.bus.up = false;
  c.router.handle(idb, nick("zed", 9));
  CHECK(b.got.back()["code"] == "unavailable");
  CHECK(c.router.stats().nicks_unavailable == 2);
  CHECK(c.bus.claims.size() == claims);
  c.bus.up = true;

  // The cluster gave a's nick to another node's client: a becomes a guest, and is told.
  b.got.clear();
  c.router.cluster_nick_lost("anna");
  CHECK(a.got.back()["op"] == "system");
  CHECK(a.got.back()["event"] == "renamed");
  CHECK(a.got.back()["old"] == "Anna");
  CHECK(a.got.back()["nick"] == "guest-tag-4");
  CHECK(c.bus.guests.back() == "guest-tag-4");  // the new guest nick is registered too
  CHECK(b.got.at(0)["event"] == "nick");
  c.router.cluster_nick_lost("nobody");

  // A claimed nick is released when its client goes, and so is a guest's.
  c.router.handle(idb, nick("bea", 10));
  CHECK(c.bus.claims.back().replaced == "guest-tag-2");
  c.bus.claims.back().done(NickClaim::ok);
  c.router.disconnect(idb);
  CHECK(c.bus.released == std::vector<std::string>{"bea"});
  CHECK(c.bus.changes.back() == "leave hall bea");
  c.router.disconnect(ida);
  CHECK(c.bus.released == std::vector<std::string>{"bea", "guest-tag-4"});
  // Gone while its claim was asked: the nick it got is nobody's.
  c.router.handle(idd, nick("dee", 11));
  c.router.disconnect(idd);
  c.bus.claims.back().done(NickClaim::ok);
  CHECK(c.bus.released.back() == "dee");
  // A guest that never renamed: its registered guest nick is released as it goes.
  Box e;
  c.router.disconnect(c.router.connect(e));
  CHECK(c.bus.released.back() == "guest-tag-5");
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

TEST_CASE("followed room: the other nodes' members are kept with nobody here; the first member's joined has them") {
  Followed f;
  // Read at the node's start and changed since, while no member here heard of it: kept, told
  // to no one.
  f.router.cluster_members("log", {"bob", "zed"});
  f.router.cluster_presence("log", {ClusterPresence::Kind::join, {"carl"}, ""});
  f.router.cluster_presence("log", {ClusterPresence::Kind::leave, {"zed"}, ""});
  f.router.cluster_presence("log", {ClusterPresence::Kind::nick, {"bob", "rob"}, ""});
  f.router.cluster_synced("log", RoomState{10, "e1", {}});
  CHECK(*f.router.who("log") == std::vector<std::string>{"carl", "rob"});
  Box a;
  SessionId ida = f.router.connect(a);
  a.got.clear();
  f.router.handle(ida, req(Op::join, "log", 1));
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["op"] == "joined");
  CHECK(names(a.got[0]["members"]) == std::vector<std::string>{"carl", "guest-tag-1", "rob"});
  CHECK(a.got[0]["count"] == 3);
  CHECK(f.bus.watched.empty());  // followed: nothing to read again
  a.got.clear();
  f.router.cluster_presence("log", {ClusterPresence::Kind::leave, {"carl"}, ""});
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0] == ordered_json{{"op", "presence"}, {"room", "log"}, {"event", "leave"}, {"nick", "carl"}});
  // The last member here leaving does not forget them: the room is still followed.
  f.router.handle(ida, req(Op::leave, "log"));
  f.router.cluster_presence("log", {ClusterPresence::Kind::join, {"dora"}, ""});
  CHECK(*f.router.who("log") == std::vector<std::string>{"dora", "rob"});
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
  CHECK(a.held == 0);
  f.store.commit(0);
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[1] == ordered_json{{"op", "ok"}, {"id", 5}, {"seq", 11}});
  CHECK(a.held == 0);
  // The reply may come after the commit: answered at once, from what the commit said.
  f.router.handle(idb, say("log", "late reply", "x"));
  f.deliver(1, 12);
  f.store.commit(1);
  CHECK(!answered(b, "x"));
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
  CHECK(!answered(a, 1));  // its message is here: its commit needs no Redis
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
  CHECK(!answered(a, 1));
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
  CHECK(answered(a, 1));
}

// ---- pipelined says (docs/cluster.md, "Pipelined says") ------------------------------------

namespace {

// The answers (ok or error) a box got, in order, as "ID ok" or "ID CODE".
std::vector<std::string> answers(const Box& box) {
  std::vector<std::string> out;
  for (const auto& m : box.got) {
    if (m["op"] != "ok" && m["op"] != "error") continue;
    std::string id = m.contains("id") ? m["id"].dump() : "-";
    out.push_back(id + " " + (m["op"] == "ok" ? std::string("ok") : m["code"].get<std::string>()));
  }
  return out;
}

struct Pipeline : Cluster {
  Box a;
  SessionId ida;
  // A bot's limits: its burst of says is above the window (the default, 100, is below it).
  static RouterSettings settings() {
    RouterSettings s;
    s.burst = 1000;
    return s;
  }
  explicit Pipeline(RouterSettings s = settings()) : Cluster({room("hall"), room("lobby"), room("local", false)}, s) {
    ida = router.connect(a);
    router.handle(ida, req(Op::join, "hall"));
    router.cluster_synced("hall", RoomState{0, "e1", {}});
    router.handle(ida, req(Op::join, "lobby"));
    router.cluster_synced("lobby", RoomState{0, "e1", {}});
    router.handle(ida, req(Op::join, "local"));
    a.got.clear();
  }
};

}  // namespace

TEST_CASE("pipelined says: sent back to back, their oks in request order across rooms") {
  Pipeline p;
  p.router.handle(p.ida, say("hall", "one", 1));
  p.router.handle(p.ida, say("lobby", "two", 2));
  p.router.handle(p.ida, say("hall", "three", 3));
  REQUIRE(p.bus.says.size() == 3);  // all three at the bus before any answer
  CHECK(p.a.held == 0);
  // The bus answers out of order; each room's messages come in its seq order.
  p.bus.says[1].second(ClusterSaid{true, 1, "e1"});
  p.deliver(1, 1);
  CHECK(answers(p.a).empty());  // the lobby's ok waits for the hall's first
  p.bus.says[2].second(ClusterSaid{true, 2, "e1"});
  p.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  CHECK(answers(p.a).empty());  // the hall's first has not been delivered here yet
  p.deliver(0, 1);
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok", "2 ok"});
  p.deliver(2, 2);
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok", "2 ok", "3 ok"});
  // Every ok follows its own message.
  std::vector<std::string> seen;
  for (const auto& m : p.a.got)
    seen.push_back(m["op"] == "message" ? m["room"].get<std::string>() + ":" + m["seq"].dump() : m["id"].dump());
  CHECK(seen == std::vector<std::string>{"lobby:1", "hall:1", "1", "2", "hall:2", "3"});
  CHECK(p.a.got[3]["seq"] == 1);  // the lobby's ok has the lobby's seq
}

TEST_CASE("pipelined says: a say's own errors, and any other request, keep their turn") {
  Pipeline p;
  p.router.handle(p.ida, say("hall", "one", 1));
  p.router.handle(p.ida, say("attic", "nobody", 2));  // no such room: not a clustered say, it waits
  CHECK(p.a.held == 1);
  CHECK(p.a.got.empty());
  p.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  p.deliver(0, 1);
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok"});
  CHECK(p.a.held == 1);  // served outside the delivery, still in its turn
  p.run_later();
  CHECK(p.a.held == 0);
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok", "2 no_such_room"});
  p.a.got.clear();
  // An error a clustered say gets at once (here the cluster down) goes behind the says in
  // flight, which the bus answers in any order.
  p.router.handle(p.ida, say("hall", "two", 3));
  p.router.handle(p.ida, say("lobby", std::string(1, 'x'), 4));
  p.bus.up = false;
  p.router.handle(p.ida, say("hall", "refused", 5));
  p.router.reject(p.ida, RequestError{ErrorCode::bad_request, "not JSON", 6});  // a frame that did not parse
  CHECK(p.bus.says.size() == 3);  // the third never went to the bus
  CHECK(answers(p.a).empty());
  CHECK(p.a.held == 0);
  p.bus.says[2].second(ClusterSaid{true, 1, "e1"});
  p.deliver(2, 1);
  CHECK(answers(p.a).empty());  // the lobby's ok is ready, the hall's not
  p.bus.says[1].second(ClusterSaid{true, 2, "e1"});
  p.deliver(1, 2);
  CHECK(answers(p.a) == std::vector<std::string>{"3 ok", "4 ok", "5 unavailable", "6 bad_request"});
  // A say into a room that is not clustered, a leave, a ping: each waits for the says
  // before it and is served in order.
  p.bus.up = true;
  p.a.got.clear();
  p.router.handle(p.ida, say("hall", "three", 6));
  p.router.handle(p.ida, say("local", "here", 7));
  CHECK(p.a.held == 1);
  CHECK(p.a.got.empty());
  p.bus.says[3].second(ClusterSaid{true, 3, "e1"});
  p.deliver(3, 3);
  p.run_later();
  CHECK(answers(p.a) == std::vector<std::string>{"6 ok", "7 ok"});
  CHECK(p.a.got.size() == 4);  // hall:3, ok 6, local's message, ok 7
  CHECK(p.a.got[2]["room"] == "local");
  CHECK(p.a.held == 0);
  // No says in flight: nothing waits.
  p.router.handle(p.ida, req(Op::ping, "", 8));
  CHECK(p.a.got.back()["op"] == "pong");
}

TEST_CASE("pipelined says: at most kSaysInFlight unanswered; the window opens as the first is") {
  static_assert(kSaysInFlight > 100, "above the default burst: a client within the default limits never waits");
  Pipeline p;
  for (std::size_t i = 0; i < kSaysInFlight; ++i) {
    CHECK(p.a.held == 0);
    p.router.handle(p.ida, say("hall", "m" + std::to_string(i), static_cast<int>(i)));
  }
  CHECK(p.bus.says.size() == kSaysInFlight);
  CHECK(p.a.held == 1);  // its next request is not read
  p.bus.says[1].second(ClusterSaid{true, 2, "e1"});
  CHECK(p.a.held == 1);  // answered out of order: the first still holds its place
  p.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  p.deliver(0, 1);
  CHECK(p.a.held == 0);
  p.deliver(1, 2);
  CHECK(answers(p.a) == std::vector<std::string>{"0 ok", "1 ok"});
  // Every say in flight answered, in order; seqs consecutive in request order.
  for (std::size_t i = 2; i < kSaysInFlight; ++i) {
    p.bus.says[i].second(ClusterSaid{true, i + 1, "e1"});
    p.deliver(i, i + 1);
  }
  auto got = answers(p.a);
  REQUIRE(got.size() == kSaysInFlight);
  for (std::size_t i = 0; i < kSaysInFlight; ++i) CHECK(got[i] == std::to_string(i) + " ok");
  CHECK(p.a.held == 0);
}

TEST_CASE("pipelined says: the window is the settings' (says_in_flight), counted over clients") {
  RouterSettings s = Pipeline::settings();
  s.says_in_flight = 3;
  Pipeline p(s);
  Box b;
  SessionId idb = p.router.connect(b);
  p.router.handle(idb, req(Op::join, "hall"));
  for (int i = 0; i < 3; ++i) p.router.handle(p.ida, say("hall", "m", i));
  CHECK(p.a.held == 1);  // at 3, not 128
  CHECK(p.router.says_in_flight() == 3);
  p.router.handle(idb, say("hall", "b1", "b1"));
  p.router.handle(idb, say("hall", "b2", "b2"));
  CHECK(b.held == 0);
  CHECK(p.router.says_in_flight() == 5);  // all clients together
  p.bus.says[0].second(ClusterSaid{true, 1, "e1"});  // ordered: its place is answered once delivered
  CHECK(p.router.says_in_flight() == 5);
  p.deliver(0, 1);
  CHECK(p.router.says_in_flight() == 4);
  CHECK(p.a.held == 0);
  p.router.disconnect(idb);  // gone with two in flight: no longer counted, their answers touch nothing
  CHECK(p.router.says_in_flight() == 2);
  p.bus.says[3].second(ClusterSaid{true, 2, "e1"});
  p.bus.says[4].second(ClusterSaid{false, 0, ""});
  CHECK(p.router.says_in_flight() == 2);
  p.bus.says[1].second(ClusterSaid{false, 0, ""});
  p.bus.says[2].second(ClusterSaid{false, 0, ""});
  CHECK(p.router.says_in_flight() == 0);
  CHECK(answers(p.a).size() == 3);
}

TEST_CASE("pipelined says: a lost bus answers every say in flight once, in order") {
  Pipeline p;
  for (int i = 1; i <= 5; ++i) p.router.handle(p.ida, say(i % 2 ? "hall" : "lobby", "m", i));
  p.router.handle(p.ida, req(Op::who, "hall", 6));  // waits for all five
  p.bus.says[0].second(ClusterSaid{true, 1, "e1"});  // ordered and delivered
  p.deliver(0, 1);
  p.bus.says[1].second(ClusterSaid{true, 1, "e1"});  // ordered, its message not here yet
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok"});
  p.bus.up = false;
  p.router.cluster_lost();  // the ordered one's ok goes
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok", "2 ok"});
  // The bus gives up on the rest, last first; the answers still go in order.
  p.bus.says[4].second(ClusterSaid{});
  p.bus.says[3].second(ClusterSaid{});
  CHECK(answers(p.a).size() == 2);
  p.bus.says[2].second(ClusterSaid{});
  p.run_later();
  CHECK(answers(p.a) == std::vector<std::string>{"1 ok", "2 ok", "3 unavailable", "4 unavailable", "5 unavailable"});
  CHECK(p.a.got.back()["op"] == "who");
  CHECK(p.a.held == 0);
  // Answering again changes nothing (a bus's callback runs once, but a Slot is once anyway).
  p.bus.says[2].second(ClusterSaid{true, 9, "e1"});
  CHECK(answers(p.a).size() == 5);
}

TEST_CASE("pipelined says: a callback dropped unrun answers unavailable; the replies behind it go") {
  Pipeline p;
  p.router.handle(p.ida, say("hall", "one", 1));
  p.router.handle(p.ida, say("lobby", "two", 2));
  p.bus.says[1].second(ClusterSaid{true, 1, "e1"});
  p.deliver(1, 1);
  p.bus.says.clear();  // the bus went away with the first say's callback
  CHECK(answers(p.a) == std::vector<std::string>{"1 unavailable", "2 ok"});
}

TEST_CASE("pipelined says: a client gone with says in flight is never touched again") {
  Cluster c({room("hall"), room("lobby")});
  Box a, b;
  SessionId ida = c.router.connect(a), idb = c.router.connect(b);
  for (SessionId id : {ida, idb}) {
    c.router.handle(id, req(Op::join, "hall"));
    c.router.handle(id, req(Op::join, "lobby"));
  }
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  c.router.cluster_synced("lobby", RoomState{0, "e1", {}});
  for (int i = 1; i <= 4; ++i) c.router.handle(ida, say(i % 2 ? "hall" : "lobby", "m", i));
  c.router.handle(ida, req(Op::leave, "hall", 5));  // waiting behind them
  c.bus.says[0].second(ClusterSaid{true, 1, "e1"});
  c.deliver(0, 1);
  c.router.disconnect(ida);
  a.alive = false;  // any send, hold or release now fails the test
  c.bus.says[1].second(ClusterSaid{true, 1, "e1"});
  c.deliver(1, 1);
  c.bus.says[2].second(ClusterSaid{true, 2, "e1"});
  c.bus.says[3].second(ClusterSaid{});
  c.deliver(2, 2);
  c.run_later();
  c.bus.says.clear();
  // The other member heard every message the cluster ordered.
  std::vector<std::string> heard;
  for (const auto& m : b.got)
    if (m["op"] == "message") heard.push_back(m["room"].get<std::string>() + ":" + m["seq"].dump());
  CHECK(heard == std::vector<std::string>{"hall:1", "lobby:1", "hall:2"});
  // One waiting for its deferred request when the client goes: nothing runs for it.
  c.router.handle(idb, say("hall", "x", 1));
  c.router.handle(idb, req(Op::ping, "", 2));
  c.bus.says[0].second(ClusterSaid{true, 3, "e1"});
  c.deliver(0, 3);
  c.router.disconnect(idb);
  b.alive = false;
  c.run_later();
}

namespace {
Request topic(std::string room_name, std::string text, std::optional<nlohmann::json> id = std::nullopt) {
  Request r = req(Op::topic, std::move(room_name), std::move(id));
  r.topic = std::move(text);
  return r;
}

Request whisper(std::string to, std::string text, std::optional<nlohmann::json> id = std::nullopt) {
  Request r;
  r.op = Op::whisper;
  r.to = std::move(to);
  r.text = std::move(text);
  if (id) r.id = std::move(*id);
  return r;
}

ordered_json topic_presence(const std::string& room_name, const std::string& by, const std::string& text) {
  return ordered_json{{"op", "presence"}, {"room", room_name}, {"event", "topic"}, {"nick", by}, {"topic", text}};
}
}  // namespace

TEST_CASE("cluster: a topic is the cluster's: stored there, applied on every node in the room's order") {
  RoomConfig hall = room("hall");
  hall.topic = "welcome";
  Cluster c({hall});
  Box a, b;
  SessionId ida = named(c, a, "ann"), idb = named(c, b, "bob");

  // The first member waits for the room's state: the topic read with the members is in its
  // `joined`, and nobody is told of it.
  c.router.handle(ida, req(Op::join, "hall"));
  c.router.cluster_members("hall", {});
  c.router.cluster_topic("hall", ClusterTopic{"set on node 2", "zed"});
  CHECK(a.got.empty());
  c.router.cluster_synced("hall", RoomState{0, "e1", {}});
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0]["topic"] == "set on node 2");
  c.router.handle(idb, req(Op::join, "hall"));
  CHECK(b.got.at(0)["topic"] == "set on node 2");
  a.got.clear();
  b.got.clear();

  // Set here: stored in the cluster first (a configured room's topic is kept), the ok once it
  // is; nothing changes here until the room's channel brings it back.
  c.router.handle(ida, topic("hall", "news", 5));
  REQUIRE(c.bus.topics.size() == 1);
  CHECK(c.bus.topics[0].room == "hall");
  CHECK(c.bus.topics[0].nick == "ann");
  CHECK(c.bus.topics[0].topic == "news");
  CHECK(c.bus.topics[0].kept);
  CHECK(a.got.empty());
  CHECK(a.held == 1);  // later requests wait for the answer
  c.bus.topics[0].done(true);
  CHECK(a.held == 0);
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0] == ordered_json{{"op", "ok"}, {"id", 5}});
  CHECK(b.got.empty());
  CHECK(c.router.rooms()[0].topic == "set on node 2");
  c.router.cluster_presence("hall", ClusterPresence{ClusterPresence::Kind::topic, {"ann"}, "news"});
  CHECK(c.router.rooms()[0].topic == "news");
  CHECK(a.got.size() == 1);  // the setter has its ok
  REQUIRE(b.got.size() == 1);
  CHECK(b.got[0] == topic_presence("hall", "ann", "news"));
  a.got.clear();
  b.got.clear();

  // Another node's: every member here hears it, the same text again too (as on one node).
  c.router.cluster_presence("hall", ClusterPresence{ClusterPresence::Kind::topic, {"zed"}, ""});
  c.router.cluster_presence("hall", ClusterPresence{ClusterPresence::Kind::topic, {"zed"}, ""});
  CHECK(a.got == std::vector<ordered_json>(2, topic_presence("hall", "zed", "")));
  CHECK(b.got == std::vector<ordered_json>(2, topic_presence("hall", "zed", "")));
  a.got.clear();
  b.got.clear();

  // Read again (a reconnect): a change not heard is announced; none stored is the configured one.
  c.router.cluster_topic("hall", ClusterTopic{"", "zed"});
  CHECK(a.got.empty());  // nothing new
  c.router.cluster_topic("hall", std::nullopt);
  CHECK(a.got.at(0) == topic_presence("hall", "server", "welcome"));
  CHECK(b.got.at(0) == topic_presence("hall", "server", "welcome"));
  a.got.clear();
  b.got.clear();

  // Not taken: unavailable, and nothing changes anywhere.
  c.router.handle(idb, topic("hall", "lost", 6));
  c.bus.topics.at(1).done(false);
  CHECK(b.got.at(0)["code"] == "unavailable");
  c.bus.up = false;
  c.router.handle(idb, topic("hall", "away", 7));
  CHECK(c.bus.topics.size() == 2);  // never asked
  CHECK(b.got.at(1)["code"] == "unavailable");
  CHECK(a.got.empty());
  CHECK(c.router.rooms()[0].topic == "welcome");
  c.bus.up = true;
  b.got.clear();

  // Nobody here: `rooms` has the cluster's topic, or the configured one when it holds none.
  c.router.handle(ida, req(Op::leave, "hall"));
  c.router.handle(idb, req(Op::leave, "hall"));
  a.got.clear();
  c.router.handle(ida, req(Op::rooms, ""));
  c.bus.counts.at(0)(std::vector<ClusterRoomCount>{{"hall", 0, "kept there"}});
  CHECK(a.got.at(0)["rooms"][0]["topic"] == "kept there");
  c.router.handle(ida, req(Op::rooms, ""));
  c.bus.counts.at(1)(std::vector<ClusterRoomCount>{});
  CHECK(a.got.at(1)["rooms"][0]["topic"] == "welcome");
}

TEST_CASE("cluster: a dynamic room's topic is not kept; a node-local room's stays the node's") {
  Cluster c;
  Box a;
  SessionId ida = c.router.connect(a);
  c.router.handle(ida, nick("ann"));
  c.bus.claims.at(0).done(NickClaim::ok);
  c.router.handle(ida, req(Op::join, "side"));
  c.router.cluster_synced("side", RoomState{0, "e1", {}});
  c.router.handle(ida, topic("side", "for now"));
  REQUIRE(c.bus.topics.size() == 1);
  CHECK_FALSE(c.bus.topics[0].kept);
  c.router.handle(ida, req(Op::join, "local"));
  a.got.clear();
  c.bus.topics[0].done(true);
  c.router.handle(ida, topic("local", "mine", 2));
  CHECK(c.bus.topics.size() == 1);
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 2}});
}

TEST_CASE("cluster: a whisper to another node's client goes through the cluster") {
  Cluster c;
  Box a, b;
  SessionId ida = named(c, a, "ann");
  named(c, b, "bob");

  // A client here: as on one node, no cluster.
  c.router.handle(ida, whisper("BOB", "local", 1));
  CHECK(c.bus.whispers.empty());
  CHECK(b.got.at(0)["op"] == "whisper");
  CHECK(a.got.at(0) == ordered_json{{"op", "ok"}, {"id", 1}});
  a.got.clear();
  b.got.clear();

  // Nobody here: the cluster finds the node holding the nick (folded), the ok waits for it.
  c.router.handle(ida, whisper("Carol", "psst", 2));
  REQUIRE(c.bus.whispers.size() == 1);
  CHECK(c.bus.whispers[0].first == ClusterWhisper{"carol", "ann", "psst", 7, ""});
  CHECK(a.got.empty());
  CHECK(a.held == 1);
  c.bus.whispers[0].second(WhisperSent::ok);
  CHECK(a.held == 0);
  CHECK(a.got.at(0) == ordered_json{{"op", "ok"}, {"id", 2}});
  c.router.handle(ida, whisper("dave", "x", 3));
  c.bus.whispers.at(1).second(WhisperSent::no_such_nick);
  CHECK(a.got.at(1)["code"] == "no_such_nick");
  c.router.handle(ida, whisper("erin", "x", 4));
  c.bus.whispers.at(2).second(WhisperSent::unavailable);
  CHECK(a.got.at(2)["code"] == "unavailable");
  // This node's own guest prefix is nobody's elsewhere: a guest of it who left needs no cluster.
  c.router.handle(ida, whisper("GUEST-tag-9", "x", 5));
  CHECK(a.got.at(3)["code"] == "no_such_nick");
  CHECK(c.bus.whispers.size() == 3);
  c.bus.up = false;
  c.router.handle(ida, whisper("carol", "x", 6));
  CHECK(a.got.at(4)["code"] == "unavailable");
  CHECK(c.bus.whispers.size() == 3);
  c.bus.up = true;
  // Another node's guest is found through the cluster, as any registered nick.
  c.router.handle(ida, whisper("guest-zz-1", "x", 7));
  REQUIRE(c.bus.whispers.size() == 4);
  CHECK(c.bus.whispers[3].first.to == "guest-zz-1");
  c.bus.whispers[3].second(WhisperSent::ok);
  CHECK(a.got.at(5) == ordered_json{{"op", "ok"}, {"id", 7}});
  CHECK(b.got.empty());

  // From another node: to the client holding the nick here, shown as it is spelled here.
  c.router.cluster_whisper(ClusterWhisper{"bob", "Carol", "hi there", 42, ""});
  REQUIRE(b.got.size() == 1);
  CHECK(b.got[0] == ordered_json{{"op", "whisper"}, {"from", "Carol"}, {"to", "bob"}, {"text", "hi there"}, {"ts", 42}});
  c.router.cluster_whisper(ClusterWhisper{"nobody", "Carol", "lost", 43, ""});  // gone meanwhile: dropped
  CHECK(b.got.size() == 1);
  CHECK(a.got.size() == 6);
}

TEST_CASE("cluster: a whisper's msg_id: a resend is answered duplicate and delivered once") {
  Cluster c;
  Box a, b;
  SessionId ida = named(c, a, "ann");
  named(c, b, "bob");
  auto with_id = [](std::string to, std::string msg_id, int id) {
    Request r = whisper(std::move(to), "hi", id);
    r.msg_id = std::move(msg_id);
    return r;
  };

  // To a client here: remembered here.
  c.router.handle(ida, with_id("bob", "m1", 1));
  c.router.handle(ida, with_id("BOB", "m1", 2));
  CHECK(a.got.at(1) == ordered_json{{"op", "ok"}, {"id", 2}, {"duplicate", true}});
  c.router.handle(ida, with_id("bob", "m2", 3));  // another id: a whisper of its own
  CHECK(b.got.size() == 2);
  CHECK(c.router.stats().whispers_duplicate == 1);

  // To another node's client: the id goes with it, and the cluster says it was handed on before.
  c.router.handle(ida, with_id("carol", "m1", 4));
  REQUIRE(c.bus.whispers.size() == 1);
  CHECK(c.bus.whispers[0].first.msg_id == "m1");
  c.bus.whispers[0].second(WhisperSent::duplicate);
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 4}, {"duplicate", true}});
  CHECK(c.router.stats().whispers_duplicate == 2);

  // From another node, sent again through another (its first answer lost): delivered once,
  // and a resend straight to this node after it is a duplicate too.
  b.got.clear();
  c.router.cluster_whisper(ClusterWhisper{"bob", "Carol", "x", 9, "c1"});
  c.router.cluster_whisper(ClusterWhisper{"bob", "carol", "x", 9, "c1"});
  CHECK(b.got.size() == 1);
  Box d;
  SessionId idd = c.router.connect(d);
  c.router.handle(idd, nick("carol"));
  c.bus.claims.back().done(NickClaim::ok);
  c.router.handle(idd, with_id("bob", "c1", 5));
  CHECK(d.got.back() == ordered_json{{"op", "ok"}, {"id", 5}, {"duplicate", true}});
  CHECK(b.got.size() == 1);
  // Without an id, nothing is remembered.
  c.router.cluster_whisper(ClusterWhisper{"bob", "carol", "x", 9, ""});
  c.router.cluster_whisper(ClusterWhisper{"bob", "carol", "x", 9, ""});
  CHECK(b.got.size() == 3);
}
