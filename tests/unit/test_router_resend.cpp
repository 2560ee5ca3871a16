// A say's msg_id (docs/protocol.md, Resending a say) in a room that is not clustered: a resend
// by the same nick into the same room within the window is answered with the first say's seq,
// flagged duplicate, and nothing is published; the memory is bounded by time and count. A
// persisted room's duplicate is acknowledged only once the first one is stored, as its ok was.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "roomd/core/router.hpp"
#include "router_fakes.hpp"

using namespace roomd;
using roomd::testing::Box;

namespace {

RoomConfig room(std::string name, bool persist = false) {
  RoomConfig c;
  c.name = std::move(name);
  c.persist = persist;
  return c;
}

Request say(std::string room_name, std::string text, std::optional<nlohmann::json> id,
            std::optional<std::string> msg_id) {
  Request r;
  r.op = Op::say;
  r.room = std::move(room_name);
  r.text = std::move(text);
  r.id = std::move(id);
  r.msg_id = std::move(msg_id);
  return r;
}

Request op(Op o, std::string field) {
  Request r;
  r.op = o;
  if (o == Op::nick) r.nick = std::move(field);
  else r.room = std::move(field);
  return r;
}

// Commits when the test says so, in order.
struct DeferredStore : Persistence {
  std::vector<std::pair<StoredMessage, std::function<void(bool)>>> pending;
  void append(StoredMessage m, std::function<void(bool)> committed) override {
    pending.emplace_back(std::move(m), std::move(committed));
  }
  void query(HistoryQuery, std::function<void(HistoryPage)> done) override { done({}); }
  void commit_all(bool ok) {
    auto batch = std::exchange(pending, {});
    for (auto& [m, done] : batch)
      if (done) done(ok);
  }
};

struct Node {
  std::uint64_t now = 1000;
  DeferredStore store;
  Router router;
  explicit Node(std::vector<RoomConfig> rooms = {room("lobby"), room("den")}, bool with_store = false)
      : router(settings(), rooms,
               RouterServices{.clock = Clock{[] { return std::uint64_t{42}; }, [this] { return now; }},
                              .persistence = with_store ? &store : nullptr}) {}
  static RouterSettings settings() {
    RouterSettings s;
    s.rate = 1e9;  // the count bound is reached by says, not by the rate limit
    s.burst = 1000000;
    return s;
  }
  SessionId member(Box& box, const std::string& nick, const std::string& room_name = "lobby") {
    SessionId id = router.connect(box);
    router.handle(id, op(Op::nick, nick));
    router.handle(id, op(Op::join, room_name));
    box.got.clear();
    return id;
  }
};

}  // namespace

TEST_CASE("resend: the same nick's msg_id in the same room is a duplicate: its first seq, nothing published") {
  Node n;
  Box a, b;
  SessionId ida = n.member(a, "alice");
  SessionId idb = n.member(b, "bob");
  a.got.clear();  // bob's join
  n.router.handle(ida, say("lobby", "hello", 1, "m-1"));
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[1] == ordered_json{{"op", "ok"}, {"id", 1}, {"seq", 1}});
  CHECK(b.got.size() == 1);

  // The client lost its connection before the ok and comes back under its nick (case aside).
  n.router.disconnect(ida);
  Box again;
  SessionId idc = n.member(again, "ALICE");
  b.got.clear();
  n.router.handle(idc, say("lobby", "hello (resent)", 7, "m-1"));
  REQUIRE(again.got.size() == 1);
  CHECK(again.got[0] == ordered_json{{"op", "ok"}, {"id", 7}, {"seq", 1}, {"duplicate", true}});
  CHECK(b.got.empty());
  CHECK(n.router.rooms()[1].last_seq == 1);  // lobby (rooms sort by name: den, lobby)
  CHECK(n.router.stats().says_duplicate == 1);
  CHECK(n.router.stats().messages_in == 1);
  // Without an id no ok was asked for: nothing at all.
  n.router.handle(idc, say("lobby", "x", std::nullopt, "m-1"));
  CHECK(again.got.size() == 1);
  CHECK(b.got.empty());

  // Another nick's, another room's or another id's say is a message of its own.
  n.router.handle(idb, say("lobby", "mine", 2, "m-1"));
  CHECK(b.got.back() == ordered_json{{"op", "ok"}, {"id", 2}, {"seq", 2}});
  n.router.handle(idc, op(Op::join, "den"));
  n.router.handle(idc, say("den", "there", 3, "m-1"));
  CHECK(again.got.back() == ordered_json{{"op", "ok"}, {"id", 3}, {"seq", 1}});
  n.router.handle(idc, say("lobby", "next", 4, "m-2"));
  CHECK(again.got.back() == ordered_json{{"op", "ok"}, {"id", 4}, {"seq", 3}});
  // Says without msg_id are never taken for one another.
  n.router.handle(idc, say("lobby", "same", 5, std::nullopt));
  n.router.handle(idc, say("lobby", "same", 6, std::nullopt));
  CHECK(again.got.back() == ordered_json{{"op", "ok"}, {"id", 6}, {"seq", 5}});
}

TEST_CASE("resend: a msg_id is remembered for the window, and at most the newest kRecentSaysPerRoom") {
  Node n;
  Box a;
  SessionId ida = n.member(a, "alice");
  n.router.handle(ida, say("lobby", "early", 1, "old"));
  n.now += kSaidWindowMs - 1;
  n.router.handle(ida, say("lobby", "early", 2, "old"));
  CHECK(a.got.back()["duplicate"] == true);
  n.now += 1;  // the window has passed: a say of its own
  n.router.handle(ida, say("lobby", "late", 3, "old"));
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 3}, {"seq", 2}});

  // The count: the oldest id goes once kRecentSaysPerRoom newer ones came.
  for (std::size_t i = 0; i < kRecentSaysPerRoom; ++i) n.router.handle(ida, say("lobby", "x", std::nullopt, "k" + std::to_string(i)));
  const std::uint64_t last = 2 + kRecentSaysPerRoom;
  n.router.handle(ida, say("lobby", "x", 4, "k1"));  // still remembered
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 4}, {"seq", 4}, {"duplicate", true}});
  n.router.handle(ida, say("lobby", "x", 5, "old"));  // pushed out by the count (it was the oldest)
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 5}, {"seq", last + 1}});
  n.router.handle(ida, say("lobby", "x", 6, "k0"));  // and then k0, by the one just said
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 6}, {"seq", last + 2}});
  n.router.handle(ida, say("lobby", "x", 7, "k2"));
  CHECK(a.got.back()["duplicate"] == true);
}

TEST_CASE("resend: a whisper's msg_id on one node: per sender and target, for the window and the newest kRecentWhispers") {
  Node n;
  Box a, b, c;
  SessionId ida = n.member(a, "alice"), idc = n.member(c, "carl");
  n.member(b, "bob");
  auto whisper = [](std::string to, std::optional<nlohmann::json> id, std::string msg_id) {
    Request r;
    r.op = Op::whisper;
    r.to = std::move(to);
    r.text = "psst";
    r.id = std::move(id);
    r.msg_id = std::move(msg_id);
    return r;
  };
  auto whispers = [](const Box& box) {
    std::size_t count = 0;
    for (const auto& m : box.got) count += m["op"] == "whisper";
    return count;
  };
  n.router.handle(ida, whisper("bob", 1, "w"));
  n.router.handle(ida, whisper("Bob", 2, "w"));  // the same target, any case: a resend
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 2}, {"duplicate", true}});
  CHECK(whispers(b) == 1);
  n.router.handle(idc, whisper("bob", 3, "w"));  // another sender's id of the same name
  n.router.handle(ida, whisper("carl", 4, "w"));  // another target
  CHECK(whispers(b) == 2);
  CHECK(whispers(c) == 1);
  CHECK(n.router.stats().whispers_duplicate == 1);
  n.now += kSaidWindowMs;  // the window has passed: a whisper of its own
  n.router.handle(ida, whisper("bob", 5, "w"));
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 5}});
  CHECK(whispers(b) == 3);
  // The count: the oldest goes once kRecentWhispers newer ones came.
  for (std::size_t i = 0; i < kRecentWhispers; ++i) n.router.handle(ida, whisper("carl", std::nullopt, "k" + std::to_string(i)));
  n.router.handle(ida, whisper("carl", 6, "k1"));
  CHECK(a.got.back()["duplicate"] == true);
  n.router.handle(ida, whisper("bob", 7, "w"));  // pushed out by the count
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 7}});
  CHECK(whispers(b) == 4);
}

TEST_CASE("resend: in a persisted room a duplicate's ok waits for the first one's commit, and shares its outcome") {
  Node n({room("log", true), room("lost", true)}, true);
  Box a;
  SessionId ida = n.member(a, "alice", "log");
  n.router.handle(ida, op(Op::join, "lost"));
  a.got.clear();
  n.router.handle(ida, say("log", "kept", 1, "p"));
  CHECK(a.got.size() == 1);  // the message; its ok waits for the commit
  CHECK(a.held == 1);
  n.store.commit_all(true);
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 1}, {"seq", 1}});
  CHECK(a.held == 0);
  n.router.handle(ida, say("log", "kept", 2, "p"));  // committed: answered at once
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 2}, {"seq", 1}, {"duplicate", true}});

  // Said without an id, resent with one while the commit is under way: the resend's ok waits.
  n.router.handle(ida, say("log", "two", std::nullopt, "q"));
  a.got.clear();
  n.router.handle(ida, say("log", "two", 3, "q"));
  CHECK(a.got.empty());
  CHECK(a.held == 1);
  n.store.commit_all(true);
  CHECK(a.got == std::vector<ordered_json>{ordered_json{{"op", "ok"}, {"id", 3}, {"seq", 2}, {"duplicate", true}}});
  CHECK(a.held == 0);

  // A commit that failed fails its duplicates the same way.
  n.router.handle(ida, say("lost", "gone", 4, "r"));
  n.router.handle(ida, say("lost", "gone", 5, "r"));
  n.store.commit_all(false);
  REQUIRE(a.got.size() >= 2);
  CHECK(a.got[a.got.size() - 2]["code"] == "internal");
  CHECK(a.got.back()["code"] == "internal");
  CHECK(a.got.back()["id"] == 5);
  n.router.handle(ida, say("lost", "gone", 6, "r"));
  CHECK(a.got.back()["code"] == "internal");
  CHECK(a.held == 0);
}

namespace {
struct RecordingBus : ClusterBus {
  std::vector<std::pair<ClusterSay, std::function<void(ClusterSaid)>>> says;
  bool available() const override { return true; }
  void say(ClusterSay s, std::function<void(ClusterSaid)> done) override { says.emplace_back(std::move(s), std::move(done)); }
  void watch(const std::string&) override {}
  void unwatch(const std::string&) override {}
  // Members and nicks are not this test's: every claim is granted at once.
  void claim_nick(const std::string&, const std::string&, std::function<void(NickClaim)> done) override {
    done(NickClaim::ok);
  }
  void release_nick(const std::string&) override {}
  void register_guest(const std::string&) override {}
  void member_joined(const std::string&, const std::string&) override {}
  void member_left(const std::string&, const std::string&) override {}
  void member_renamed(const std::string&, const std::string&, const std::string&) override {}
  void who(const std::string&, const std::optional<std::string>&, std::size_t,
           std::function<void(std::optional<ClusterMemberPage>)> done) override {
    done(std::nullopt);
  }
  void room_counts(std::function<void(std::optional<std::vector<ClusterRoomCount>>)> done) override { done(std::nullopt); }
  void follow(const std::string&, std::uint64_t, const std::string&) override {}
  void set_topic(const std::string&, const std::string&, const std::string&, bool, std::function<void(bool)> done) override {
    done(false);
  }
  void whisper(ClusterWhisper, std::function<void(WhisperSent)> done) override { done(WhisperSent::unavailable); }
};
}  // namespace

TEST_CASE("resend: a clustered room's msg_id goes to the cluster as the client's id; a duplicate's ok says so") {
  RecordingBus bus;
  RoomConfig hall = room("hall");
  hall.cluster = true;
  Router router(Node::settings(), {hall},
                RouterServices{.clock = Clock{[] { return std::uint64_t{7}; }, [] { return std::uint64_t{1}; }},
                               .cluster = &bus});
  Box a, b;
  SessionId ida = router.connect(a), idb = router.connect(b);
  router.handle(ida, op(Op::nick, "Alice"));
  router.handle(ida, op(Op::join, "hall"));
  router.cluster_synced("hall", RoomState{0, "e1", {}});
  router.handle(idb, op(Op::join, "hall"));
  a.got.clear();
  b.got.clear();

  // The node remembers nothing itself: Redis answers repeats, so both go to the bus.
  router.handle(ida, say("hall", "one", 1, "m-1"));
  REQUIRE(bus.says.size() == 1);
  CHECK(bus.says[0].first.client_id == "alice:m-1");
  bus.says[0].second(ClusterSaid{true, 1, "e1", false});
  const auto& first = bus.says[0].first;
  router.cluster_deliver("hall", 1, "e1", first.head + "1" + first.tail);
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 1}, {"seq", 1}});
  router.handle(ida, say("hall", "one", 2, "m-1"));
  REQUIRE(bus.says.size() == 2);
  CHECK(bus.says[1].first.client_id == "alice:m-1");
  bus.says[1].second(ClusterSaid{true, 1, "e1", true});  // already delivered here: the ok goes at once
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 2}, {"seq", 1}, {"duplicate", true}});
  CHECK(router.stats().messages_in == 1);
  CHECK(router.stats().says_duplicate == 1);
  router.handle(idb, say("hall", "plain", 3, std::nullopt));
  CHECK(bus.says[2].first.client_id.empty());

  // A duplicate of a seq this node has not delivered yet waits for it, before acks of later
  // seqs: acks go out in seq order.
  bus.says[2].second(ClusterSaid{true, 3, "e1", false});  // b's ok waits for seq 3
  router.handle(ida, say("hall", "two", 4, "m-2"));
  bus.says[3].second(ClusterSaid{true, 2, "e1", true});  // said through another node, not here yet
  const std::size_t a_before = a.got.size(), b_before = b.got.size();
  router.cluster_deliver("hall", 2, "e1", wire::message_line("hall", 2, 7, "alice", std::string("two"), nullptr));
  CHECK(a.got.size() == a_before + 2);  // the message, then the duplicate's ok
  CHECK(a.got.back() == ordered_json{{"op", "ok"}, {"id", 4}, {"seq", 2}, {"duplicate", true}});
  CHECK(b.got.size() == b_before + 1);  // the message; its own ok still waits for seq 3
  CHECK(b.got.back()["op"] == "message");  // no ok yet
  const auto& third = bus.says[2].first;
  router.cluster_deliver("hall", 3, "e1", third.head + "3" + third.tail);
  CHECK(b.got.back() == ordered_json{{"op", "ok"}, {"id", 3}, {"seq", 3}});
  CHECK(b.held == 0);
}
