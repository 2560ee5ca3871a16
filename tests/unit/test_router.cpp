// The router alone: no sockets, no loop. Outboxes record what each session is sent.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "roomd/core/router.hpp"

using namespace roomd;

namespace {

RoomConfig rc(std::string name, std::string topic = "") {
  RoomConfig c;
  c.name = std::move(name);
  c.topic = std::move(topic);
  return c;
}

struct Recorder : Outbox {
  std::vector<ordered_json> got;
  std::vector<std::string> bytes;  // json bytes, to check sharing
  bool ended = false;
  void send(const EventPtr& e) override { got.push_back(e->body()); }
  void send_broadcast(const EventPtr& e, std::string_view) override {
    got.push_back(e->body());
    bytes_ptrs.push_back(e->bytes(Mode::json).get());
  }
  void end() override { ended = true; }
  int held = 0;
  void hold() override { ++held; }
  void release() override { --held; }
  std::vector<const std::string*> bytes_ptrs;

  ordered_json last() { REQUIRE(!got.empty()); return got.back(); }
  ordered_json pop() {
    REQUIRE(!got.empty());
    auto f = got.front();
    got.erase(got.begin());
    return f;
  }
};

struct Fixture {
  std::uint64_t now = 1000;
  std::vector<RoomConfig> rooms;
  RouterSettings settings;
  std::unique_ptr<Router> router;
  std::vector<std::unique_ptr<Recorder>> boxes;
  // With `pacing`, the router gets a delay service: callbacks wait here for run_due().
  bool pacing = false;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> later;  // (due, callback)

  explicit Fixture(std::vector<RoomConfig> r = {rc("lobby", "General")}) : rooms(std::move(r)) {
    settings.version = "test";
    settings.motd = "hi";
    settings.rate = 1;
    settings.burst = 3;
    settings.replay = 2;
    settings.max_history = 5;
    make();
  }
  void make() {
    Clock clock{[] { return std::uint64_t{42}; }, [this] { return now; }};
    if (!pacing) {
      router = std::make_unique<Router>(settings, rooms, clock);
      return;
    }
    RouterServices services{clock, nullptr, nullptr, {}, {}, {}, [this](std::uint64_t delay_ms, std::function<void()> cb) {
                              later.emplace_back(now + delay_ms, std::move(cb));
                            }};
    router = std::make_unique<Router>(settings, rooms, services);
  }
  // A router that paces queries at `rate` a second after `burst`.
  void pace(double rate, std::uint32_t burst) {
    settings.query_rate = rate;
    settings.query_burst = burst;
    pacing = true;
    make();
  }
  // Runs the delayed callbacks that are due by `now`, in the order they were scheduled.
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
  std::pair<SessionId, Recorder*> client(const std::string& nick = "") {
    boxes.push_back(std::make_unique<Recorder>());
    Recorder* box = boxes.back().get();
    SessionId id = router->connect(*box);
    CHECK(box->pop()["op"] == "welcome");
    if (!nick.empty()) {
      do_(id, {{"op", "nick"}, {"nick", nick}});
      CHECK(box->pop()["op"] == "ok");
    }
    return {id, box};
  }
  void do_(SessionId id, Request r) { router->handle(id, r); }
  void do_(SessionId id, std::initializer_list<std::pair<const char*, std::string>> fields) {
    Request r;
    for (auto& [k, v] : fields) {
      std::string key = k;
      if (key == "op") {
        static const std::pair<const char*, Op> ops[] = {{"nick", Op::nick}, {"join", Op::join}, {"leave", Op::leave},
                                                          {"say", Op::say},   {"who", Op::who},   {"topic", Op::topic},
                                                          {"rooms", Op::rooms}, {"bye", Op::bye}, {"history", Op::history}};
        for (auto& [n, op] : ops)
          if (v == n) r.op = op;
      } else if (key == "nick") r.nick = v;
      else if (key == "room") r.room = v;
      else if (key == "text") r.text = v;
      else if (key == "topic") r.topic = v;
      else if (key == "id") r.id = nlohmann::json(v);
    }
    router->handle(id, r);
  }
};

std::string code_of(const ordered_json& j) { return j["op"] == "error" ? j["code"].get<std::string>() : "(" + j["op"].get<std::string>() + ")"; }

}  // namespace

TEST_CASE("router: guest nicks, nick rules, uniqueness ignoring case") {
  Fixture f;
  auto [a, abox] = f.client();
  auto [b, bbox] = f.client();
  CHECK(*f.router->nick_of(a) != *f.router->nick_of(b));
  f.do_(a, {{"op", "nick"}, {"nick", "Alice"}});
  CHECK(abox->pop()["nick"] == "Alice");
  f.do_(b, {{"op", "nick"}, {"nick", "alice"}});
  CHECK(code_of(bbox->pop()) == "nick_taken");
  f.do_(b, {{"op", "nick"}, {"nick", "Server"}});
  CHECK(code_of(bbox->pop()) == "nick_taken");
  f.do_(b, {{"op", "nick"}, {"nick", "9lives"}});
  CHECK(code_of(bbox->pop()) == "bad_nick");
  f.do_(b, {{"op", "nick"}, {"nick", ""}});
  CHECK(code_of(bbox->pop()) == "bad_nick");
  f.router->disconnect(a);
  f.do_(b, {{"op", "nick"}, {"nick", "alice"}});  // free once its owner left
  CHECK(bbox->pop()["op"] == "ok");
}

TEST_CASE("router: join, say, seq, presence, leave") {
  Fixture f;
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("bob");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  CHECK(abox->pop()["members"] == ordered_json::array({"alice"}));
  f.do_(b, {{"op", "join"}, {"room", "lobby"}});
  CHECK(bbox->pop()["members"] == ordered_json::array({"alice", "bob"}));
  auto p = abox->pop();
  CHECK(p["op"] == "presence");
  CHECK(p["event"] == "join");
  CHECK(p["nick"] == "bob");
  CHECK(bbox->got.empty());  // presence goes to the others only

  f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", "one"}, {"id", "x"}});
  auto m = abox->pop();
  CHECK(m["seq"] == 1);
  CHECK(m["ts"] == 42);
  CHECK_FALSE(m.contains("id"));
  auto ok = abox->pop();
  CHECK(ok["op"] == "ok");
  CHECK(ok["seq"] == 1);
  CHECK(bbox->pop() == m);
  // One serialization shared by every recipient.
  CHECK(abox->bytes_ptrs.back() == bbox->bytes_ptrs.back());

  f.do_(b, {{"op", "say"}, {"room", "lobby"}, {"text", "two"}});
  CHECK(abox->pop()["seq"] == 2);
  CHECK(bbox->pop()["seq"] == 2);

  f.do_(b, {{"op", "leave"}, {"room", "lobby"}});
  CHECK(bbox->pop()["op"] == "left");
  CHECK(abox->pop()["event"] == "leave");
  f.do_(b, {{"op", "leave"}, {"room", "lobby"}});
  CHECK(code_of(bbox->pop()) == "not_member");
  f.do_(b, {{"op", "say"}, {"room", "lobby"}, {"text", "x"}});
  CHECK(code_of(bbox->pop()) == "not_member");
}

TEST_CASE("router: joining twice answers again without presence") {
  Fixture f;
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("bob");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  f.do_(b, {{"op", "join"}, {"room", "lobby"}});
  abox->got.clear();
  bbox->got.clear();
  f.do_(b, {{"op", "join"}, {"room", "lobby"}});
  CHECK(bbox->pop()["op"] == "joined");
  CHECK(abox->got.empty());
}

TEST_CASE("router: disconnect tells every room at once") {
  Fixture f;
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("bob");
  for (auto room : {"lobby", "two"}) {
    f.do_(a, {{"op", "join"}, {"room", room}});
    f.do_(b, {{"op", "join"}, {"room", room}});
  }
  abox->got.clear();
  f.router->disconnect(b);
  REQUIRE(abox->got.size() == 2);
  CHECK(abox->got[0]["event"] == "leave");
  CHECK(abox->got[1]["event"] == "leave");
  f.router->disconnect(b);  // idempotent
  CHECK(abox->got.size() == 2);
}

TEST_CASE("router: dynamic rooms come and go; off means no_such_room") {
  Fixture f;
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "join"}, {"room", "tmp"}});
  f.do_(a, {{"op", "say"}, {"room", "tmp"}, {"text", "x"}});
  f.do_(a, {{"op", "leave"}, {"room", "tmp"}});
  CHECK(f.router->rooms().size() == 1);  // only lobby
  abox->got.clear();
  f.do_(a, {{"op", "join"}, {"room", "tmp"}});
  f.do_(a, {{"op", "say"}, {"room", "tmp"}, {"text", "x"}});
  CHECK(abox->last()["seq"] == 1);  // a new room starts again

  f.settings.dynamic_rooms = false;
  f.make();
  auto [b, bbox] = f.client("bob");
  f.do_(b, {{"op", "join"}, {"room", "other"}});
  CHECK(code_of(bbox->pop()) == "no_such_room");
  f.do_(b, {{"op", "join"}, {"room", "bad name"}});
  CHECK(code_of(bbox->pop()) == "bad_room_name");
}

TEST_CASE("router: room_full and read_only") {
  RoomConfig small = rc("small");
  small.max_members = 1;
  RoomConfig news = rc("news");
  news.read_only = true;
  news.speakers = {"Editor"};
  Fixture f({small, news});
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("editor");
  f.do_(a, {{"op", "join"}, {"room", "small"}});
  f.do_(b, {{"op", "join"}, {"room", "small"}});
  CHECK(code_of(bbox->pop()) == "room_full");
  f.do_(a, {{"op", "join"}, {"room", "news"}});
  f.do_(b, {{"op", "join"}, {"room", "news"}});
  abox->got.clear();
  bbox->got.clear();
  f.do_(a, {{"op", "say"}, {"room", "news"}, {"text", "x"}});
  CHECK(code_of(abox->pop()) == "read_only");
  f.do_(a, {{"op", "topic"}, {"room", "news"}, {"topic", "x"}});
  CHECK(code_of(abox->pop()) == "read_only");
  f.do_(b, {{"op", "say"}, {"room", "news"}, {"text", "headline"}});
  CHECK(abox->pop()["text"] == "headline");
}

TEST_CASE("router: rate limit refuses, does not drop silently") {
  Fixture f;  // rate 1/s, burst 3
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  abox->got.clear();
  for (int i = 0; i < 3; ++i) f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", "x"}});
  CHECK(abox->got.size() == 3);
  f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", "x"}});
  CHECK(code_of(abox->last()) == "rate_limited");
  CHECK(f.router->stats().rate_limited == 1);
  f.now += 1000;
  f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", "x"}});
  CHECK(abox->last()["op"] == "message");
}

TEST_CASE("router: nick changes and leaves over the churn budget are refused; others hear nothing of them") {
  Fixture f;
  f.settings.churn_rate = 1;
  f.settings.churn_burst = 3;
  f.make();
  auto [a, abox] = f.client();  // the guest nick is given, not a change
  auto [b, bbox] = f.client("bob");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  f.do_(b, {{"op", "join"}, {"room", "lobby"}});
  abox->got.clear();
  bbox->got.clear();
  for (int i = 0; i < 3; ++i) f.do_(a, {{"op", "nick"}, {"nick", "n" + std::to_string(i)}});
  CHECK(bbox->got.size() == 3);  // three presence nick events
  f.do_(a, {{"op", "nick"}, {"nick", "n2"}});  // its own nick again: no change, no cost
  CHECK(abox->last()["op"] == "ok");
  f.do_(a, {{"op", "nick"}, {"nick", "n3"}});
  CHECK(code_of(abox->last()) == "rate_limited");
  CHECK(*f.router->nick_of(a) == "n2");  // kept its nick
  f.do_(a, {{"op", "leave"}, {"room", "lobby"}});
  CHECK(code_of(abox->last()) == "rate_limited");  // leaves share the budget
  CHECK(bbox->got.size() == 3);  // the refused ones told nobody anything
  CHECK(f.router->stats().churn_refused == 2);
  CHECK(f.router->stats().rate_limited == 0);  // says and whispers only
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});  // joins are not in it (and this one is no change)
  CHECK(abox->last()["op"] == "joined");
  f.now += 1000;  // one more a second
  f.do_(a, {{"op", "leave"}, {"room", "lobby"}});
  CHECK(abox->last()["op"] == "left");
  CHECK(bbox->last()["event"] == "leave");
  f.do_(b, {{"op", "nick"}, {"nick", "bobby"}});  // another session has its own budget
  CHECK(bbox->last()["op"] == "ok");
}

TEST_CASE("router: queries over their budget wait their turn, in order; nothing is refused") {
  Fixture f;
  f.pace(2, 2);  // a token every 500 ms
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("bob");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  f.do_(a, {{"op", "who"}, {"room", "lobby"}});
  CHECK(abox->pop()["op"] == "joined");
  CHECK(abox->pop()["op"] == "who");
  CHECK(f.router->stats().queries_paced == 0);

  // The third query in the same millisecond waits: held, unanswered, not refused.
  f.do_(a, {{"op", "history"}, {"room", "lobby"}});
  CHECK(abox->got.empty());
  CHECK(abox->held == 1);
  CHECK(f.router->stats().queries_paced == 1);
  REQUIRE(f.later.size() == 1);
  CHECK(f.later[0].first == f.now + 500);

  // Says are not queries (they have rate/burst), and other sessions have budgets of their own.
  f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", "still here"}});
  CHECK(abox->pop()["op"] == "message");
  f.do_(b, {{"op", "rooms"}});
  CHECK(bbox->last()["op"] == "rooms");

  CHECK(f.run_due() == 0);  // not yet
  f.now += 500;
  CHECK(f.run_due() == 1);
  CHECK(abox->held == 0);
  auto h = abox->pop();
  CHECK(h["op"] == "history");
  CHECK(h["messages"].size() == 1);  // it ran when answered, so it sees the say that came after
  CHECK(f.router->stats().rate_limited == 0);
}

TEST_CASE("router: a session that leaves while its query waits is simply forgotten") {
  Fixture f;
  f.pace(1, 1);
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "rooms"}});
  f.do_(a, {{"op", "who"}, {"room", "lobby"}});
  CHECK(abox->held == 1);
  f.router->disconnect(a);
  std::size_t seen = abox->got.size();
  f.now += 1000;
  CHECK(f.run_due() == 1);
  CHECK(abox->got.size() == seen);  // nothing sent to a gone session
  CHECK(abox->held == 1);           // and its connection is not touched
}

TEST_CASE("router: a held request is released exactly once, also when its callback is dropped unrun") {
  Fixture f;
  f.pace(1, 1);
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "rooms"}});
  f.do_(a, {{"op", "who"}, {"room", "lobby"}});  // waits for its token
  CHECK(abox->held == 1);
  f.later.clear();  // the delay service dropped it (a shutdown): the session is not left held
  CHECK(abox->held == 0);

  f.do_(a, {{"op", "rooms"}});  // waits again
  CHECK(abox->held == 1);
  f.now += 1000;
  CHECK(f.run_due() == 1);  // runs, releases, and its callback is destroyed: one release only
  CHECK(abox->held == 0);
  CHECK(abox->last()["op"] == "rooms");
}

TEST_CASE("router: query_rate 0 turns pacing off, and a reload changes the budget") {
  Fixture f;
  f.pace(0, 1);
  auto [a, abox] = f.client("alice");
  for (int i = 0; i < 10; ++i) f.do_(a, {{"op", "rooms"}});
  CHECK(abox->got.size() == 10);
  CHECK(f.router->stats().queries_paced == 0);
  auto paced = f.settings;
  paced.query_rate = 1;
  f.router->reconfigure(paced, f.rooms);
  abox->got.clear();
  f.do_(a, {{"op", "rooms"}});  // the one token left
  f.do_(a, {{"op", "rooms"}});
  CHECK(abox->got.size() == 1);
  CHECK(f.router->stats().queries_paced == 1);
}

TEST_CASE("router: history replay and ring bound") {
  Fixture f;  // replay 2, max_history 5
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  for (int i = 1; i <= 7; ++i) {
    f.now += 1000;  // stay under the rate limit
    f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", std::to_string(i)}});
  }
  auto [b, bbox] = f.client("bob");
  f.do_(b, {{"op", "join"}, {"room", "lobby"}});
  auto j = bbox->pop();
  REQUIRE(j["history"].size() == 2);
  CHECK(j["history"][0]["seq"] == 6);
  CHECK(j["history"][1]["seq"] == 7);
  Request h;
  h.op = Op::history;
  h.room = "lobby";
  h.limit = 10;
  f.do_(b, h);
  auto r = bbox->pop();
  CHECK(r["messages"].size() == 5);  // the ring keeps max_history
  CHECK(r["messages"][0]["seq"] == 3);
  CHECK(r["more"] == false);
  h.before = 5;
  h.limit = 1;
  f.do_(b, h);
  r = bbox->pop();
  CHECK(r["messages"][0]["seq"] == 4);
  CHECK(r["more"] == true);
}

TEST_CASE("router: bye and kick end the session after their notice") {
  Fixture f;
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("bob");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  f.do_(b, {{"op", "join"}, {"room", "lobby"}});
  abox->got.clear();
  f.do_(b, {{"op", "bye"}});
  CHECK(bbox->last()["op"] == "bye");
  CHECK(bbox->ended);
  CHECK(abox->pop()["event"] == "leave");
  auto [c, cbox] = f.client("carol");
  CHECK(f.router->kick("CAROL", "spam"));
  CHECK(cbox->last()["event"] == "kicked");
  CHECK(cbox->last()["reason"] == "spam");
  CHECK(cbox->ended);
  CHECK_FALSE(f.router->kick("carol", ""));
  CHECK(f.router->session_count() == 1);
}

TEST_CASE("router: reconfigure removes, adds and changes rooms without disconnecting") {
  Fixture f({rc("lobby", "General"), rc("old")});
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "join"}, {"room", "old"}});
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  abox->got.clear();
  f.router->reconfigure(f.settings, {rc("lobby", "Changed"), rc("new")});
  auto notice = abox->pop();
  CHECK(notice["op"] == "system");
  CHECK(notice["event"] == "reload");
  CHECK(notice["room"] == "old");
  CHECK(abox->pop()["topic"] == "Changed");
  auto rooms = f.router->rooms();
  REQUIRE(rooms.size() == 2);
  CHECK(rooms[0].name == "lobby");
  CHECK(rooms[1].name == "new");
  CHECK(f.router->session_count() == 1);
  CHECK(f.router->who("lobby")->size() == 1);
}

TEST_CASE("router: text mode's current room") {
  Fixture f;
  auto [a, abox] = f.client("alice");
  Request say;
  say.op = Op::say;
  say.current_room = true;
  say.text = "hi";
  f.do_(a, say);
  CHECK(code_of(abox->pop()) == "not_member");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  f.do_(a, {{"op", "join"}, {"room", "two"}});
  abox->got.clear();
  f.do_(a, say);
  CHECK(abox->pop()["room"] == "two");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});  // joining again makes it current
  abox->got.clear();
  f.do_(a, say);
  CHECK(abox->pop()["room"] == "lobby");
}

// ---- large rooms ------------------------------------------------------------------------

namespace {
Request req(Op op, std::string room) {
  Request r;
  r.op = op;
  r.room = std::move(room);
  return r;
}
std::vector<std::string> nicks_of(const ordered_json& list) {
  std::vector<std::string> out;
  for (const auto& n : list) out.push_back(n.get<std::string>());
  return out;
}
}  // namespace

TEST_CASE("router: joined lists a first page of members; who pages through all of them by nick") {
  Fixture f;
  f.settings.member_page = 2;
  f.make();
  std::vector<std::pair<SessionId, Recorder*>> cs;
  for (const char* n : {"dora", "Carl", "bob", "ann", "eve"}) {
    cs.push_back(f.client(n));
    f.do_(cs.back().first, {{"op", "join"}, {"room", "lobby"}});
  }
  auto j = cs.back().second->pop();
  REQUIRE(j["op"] == "joined");
  CHECK(nicks_of(j["members"]) == std::vector<std::string>{"Carl", "ann"});  // byte order, as who always was
  CHECK(j["count"] == 5);
  CHECK(j["more"] == true);
  // A small room's joined is whole.
  auto first = cs[1].second;
  while (first->got.size() > 0 && first->got.front()["op"] != "joined") first->pop();
  auto small = first->pop();
  CHECK(nicks_of(small["members"]) == std::vector<std::string>{"Carl", "dora"});
  CHECK(small["more"] == false);

  // Page through: each page starts after the last nick of the one before.
  auto [id, box] = cs[0];
  box->got.clear();
  std::vector<std::string> all;
  std::optional<std::string> after;
  for (int page = 0; page < 10; ++page) {
    Request w = req(Op::who, "lobby");
    w.after = after;
    f.do_(id, w);
    auto reply = box->pop();
    REQUIRE(reply["op"] == "who");
    CHECK(reply["count"] == 5);
    for (auto& n : nicks_of(reply["members"])) all.push_back(n);
    if (!reply["more"].get<bool>()) break;
    after = all.back();
  }
  CHECK(all == std::vector<std::string>{"Carl", "ann", "bob", "dora", "eve"});
  // limit, and an `after` that is nobody's nick.
  Request w = req(Op::who, "lobby");
  w.after = "b";
  w.limit = 10;
  f.do_(id, w);
  auto reply = box->pop();
  CHECK(nicks_of(reply["members"]) == std::vector<std::string>{"bob", "dora", "eve"});
  CHECK(reply["more"] == false);
  // A nick change moves a member in the order.
  f.do_(cs[3].first, {{"op", "nick"}, {"nick", "zoe"}});
  CHECK(*f.router->who("lobby") == std::vector<std::string>{"Carl", "bob", "dora", "eve", "zoe"});
}

TEST_CASE("router: a big room's presence comes as one summary per interval; a small room's one event per change") {
  Fixture f;
  f.settings.presence_threshold = 3;
  f.settings.presence_interval_ms = 1000;
  f.settings.burst = 100;
  f.pacing = true;
  f.make();
  auto [a, abox] = f.client("a");
  auto [b, bbox] = f.client("b");
  auto [c, cbox] = f.client("c");
  for (SessionId id : {a, b, c}) f.do_(id, {{"op", "join"}, {"room", "lobby"}});
  // Up to the threshold: single events, at once.
  abox->got.clear();
  bbox->got.clear();
  cbox->got.clear();
  auto [d, dbox] = f.client("d");
  f.do_(d, {{"op", "join"}, {"room", "lobby"}});  // 4 members > 3: summarized from here
  auto [e, ebox] = f.client("e");
  f.do_(e, {{"op", "join"}, {"room", "lobby"}});
  f.do_(c, {{"op", "leave"}, {"room", "lobby"}});
  f.do_(a, {{"op", "nick"}, {"nick", "a2"}});
  CHECK(abox->pop()["op"] == "ok");
  CHECK(bbox->got.empty());  // nothing yet
  CHECK(dbox->pop()["op"] == "joined");
  REQUIRE(f.later.size() == 1);  // one summary scheduled for the room, not one per change
  f.now += 999;
  CHECK(f.run_due() == 0);
  f.now += 1;
  CHECK(f.run_due() == 1);
  for (Recorder* box : {abox, bbox, dbox}) {
    REQUIRE(box->got.size() == 1);
    auto s = box->pop();
    CHECK(s["event"] == "summary");
    CHECK(s["joins"] == 2);
    CHECK(s["leaves"] == 1);
    CHECK(s["renames"] == 1);
    CHECK(nicks_of(s["joined"]) == std::vector<std::string>{"d", "e"});
    CHECK(nicks_of(s["left"]) == std::vector<std::string>{"c"});
    CHECK(s["renamed"][0]["old"] == "a");
    CHECK(s["renamed"][0]["nick"] == "a2");
    CHECK(s["count"] == 4);
  }
  CHECK(cbox->pop()["op"] == "left");
  CHECK(cbox->got.empty());  // gone before the summary
  // Back at the threshold, after the summary went out: one event per change again.
  f.do_(e, {{"op", "leave"}, {"room", "lobby"}});
  CHECK(f.later.empty());
  CHECK(bbox->pop()["event"] == "leave");
}

TEST_CASE("router: join with since replays exactly the missed messages, or says resumed false") {
  Fixture f;
  f.settings.burst = 100;
  f.settings.replay_max = 4;
  f.make();
  auto [a, abox] = f.client("alice");
  auto [b, bbox] = f.client("bob");
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});
  auto joined = abox->pop();
  const std::string epoch = joined["epoch"];
  CHECK(joined["seq"] == 0);
  CHECK(!joined.contains("resumed"));
  CHECK(epoch.size() == 16);
  for (int i = 1; i <= 4; ++i) f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", std::to_string(i)}});
  auto resume = [&](std::optional<std::uint64_t> since, std::optional<std::string> ep) {
    Request r = req(Op::join, "lobby");
    r.since = since;
    r.epoch = ep;
    f.do_(b, r);
    auto reply = bbox->pop();
    REQUIRE(reply["op"] == "joined");
    std::vector<std::uint64_t> seqs;
    for (const auto& m : reply["history"]) seqs.push_back(m["seq"]);
    return std::make_pair(reply.value("resumed", false), seqs);
  };
  using Seqs = std::vector<std::uint64_t>;
  CHECK(resume(1, epoch) == std::make_pair(true, Seqs{2, 3, 4}));
  bbox->got.clear();
  CHECK(resume(4, epoch) == std::make_pair(true, Seqs{}));
  CHECK(resume(0, epoch) == std::make_pair(true, Seqs{1, 2, 3, 4}));
  CHECK(resume(2, std::nullopt) == std::make_pair(true, Seqs{3, 4}));  // no epoch: seq alone
  CHECK(resume(2, "0000000000000000") == std::make_pair(false, Seqs{3, 4}));  // another epoch: a plain join's replay
  CHECK(resume(5, epoch) == std::make_pair(false, Seqs{3, 4}));  // more than the room ever had
  // The ring holds 5 (max_history): seq 6..10 after ten messages; replay_max is 4.
  for (int i = 5; i <= 10; ++i) f.do_(a, {{"op", "say"}, {"room", "lobby"}, {"text", std::to_string(i)}});
  bbox->got.clear();
  CHECK(resume(6, epoch) == std::make_pair(true, Seqs{7, 8, 9, 10}));
  CHECK(resume(5, epoch) == std::make_pair(false, Seqs{9, 10}));  // 5 missed > replay_max
  f.settings.replay_max = 100;
  f.router->reconfigure(f.settings, f.rooms);
  CHECK(resume(5, epoch) == std::make_pair(true, Seqs{6, 7, 8, 9, 10}));
  CHECK(resume(4, epoch) == std::make_pair(false, Seqs{9, 10}));  // seq 5 was trimmed from the ring
}

TEST_CASE("router: a dynamic room made again has a new epoch; max_rooms bounds dynamic rooms") {
  Fixture f;
  f.settings.max_rooms = 1;
  f.make();
  auto [a, abox] = f.client("alice");
  f.do_(a, {{"op", "join"}, {"room", "tmp"}});
  const std::string first = abox->pop()["epoch"];
  f.do_(a, {{"op", "join"}, {"room", "tmp2"}});
  auto refused = abox->pop();
  CHECK(code_of(refused) == "no_such_room");
  CHECK(refused["message"].get<std::string>().find("maximum of 1 rooms") != std::string::npos);
  f.do_(a, {{"op", "join"}, {"room", "lobby"}});  // configured rooms do not count
  CHECK(abox->pop()["op"] == "joined");
  f.do_(a, {{"op", "leave"}, {"room", "tmp"}});
  CHECK(abox->pop()["op"] == "left");
  f.do_(a, {{"op", "join"}, {"room", "tmp"}});
  auto again = abox->pop();
  REQUIRE(again["op"] == "joined");
  CHECK(again["epoch"] != first);
  f.do_(a, {{"op", "join"}, {"room", "tmp2"}});
  CHECK(code_of(abox->pop()) == "no_such_room");
}
