// The worker pool on a real loop, the router's pooled paths with a deferred runner, the
// SQLite history store and the history service over both.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>

#include "roomd/history/history_service.hpp"
#include "roomd/history/history_store.hpp"
#include "roomd/history/persistence.hpp"
#include "roomd/offload/key_checker.hpp"
#include "roomd/core/router.hpp"
#include "roomd/offload/worker_pool.hpp"
#include "router_fakes.hpp"

using namespace roomd;
using namespace roomd::testing;

TEST_CASE("worker pool: work on a pool thread, completion on the loop thread") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    WorkerPool pool(&loop, 2, 2);
    const auto loop_thread = std::this_thread::get_id();
    int done = 0;
    for (int i = 0; i < 8; ++i)
      pool.submit<std::thread::id>([] { return std::this_thread::get_id(); },
                                   [&](std::thread::id worker) {
                                     CHECK(worker != loop_thread);
                                     CHECK(std::this_thread::get_id() == loop_thread);
                                     ++done;
                                   });
    CHECK(pool.in_flight() == 8);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(done == 8);
    CHECK(pool.in_flight() == 0);
  }
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("worker pool: each limited lane runs at most its limit, and lanes do not wait on each other") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    WorkerPool pool(&loop, 1, 1);
    std::atomic<int> running{0}, most{0};
    std::promise<void> query_ran;
    auto query_done = query_ran.get_future().share();
    bool key_saw_query = false;
    // A key check that waits (boundedly) for a query: were the lanes one, it could not finish
    // until its own time ran out.
    pool.submit<bool>([query_done] { return query_done.wait_for(std::chrono::seconds(30)) == std::future_status::ready; },
                      [&](bool saw) { key_saw_query = saw; }, Lane::key_checks);
    for (int i = 0; i < 3; ++i)
      pool.submit<int>(
          [&] {
            int now = ++running;
            int seen = most.load();
            while (now > seen && !most.compare_exchange_weak(seen, now)) {
            }
            std::this_thread::yield();
            --running;
            return 0;
          },
          [](int) {}, Lane::queries);
    pool.submit<int>([&query_ran] { query_ran.set_value(); return 0; }, [](int) {}, Lane::queries);
    CHECK(pool.in_flight() == 5);
    CHECK(pool.waiting() == 3);  // the key check and one query run; three queries wait for the slot
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(pool.waiting() == 0);
    CHECK(key_saw_query);
    CHECK(most.load() == 1);  // the queries lane's limit
    CHECK(pool.in_flight() == 0);
  }
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("router: a keyed join holds the client until the pool answers") {
  DeferredRunner runner;
  RouterServices services{Clock{[] { return std::uint64_t{1}; }, [] { return std::uint64_t{1}; }}, &runner, nullptr,
                          [](const std::string&, const std::string& key) { return key == "right"; }, {}, {}, {}};
  Router router(RouterSettings{}, {keyed_room()}, services);
  Box box;
  SessionId id = router.connect(box);
  box.got.clear();
  router.handle(id, join_vault("wrong"));
  CHECK(box.held == 1);
  CHECK(box.got.empty());  // nothing until the check is done
  runner.run_all();
  CHECK(box.held == 0);
  CHECK(box.got.back()["code"] == "bad_key");
  router.handle(id, join_vault("right"));
  runner.run_all();
  CHECK(box.got.back()["op"] == "joined");
}

TEST_CASE("router: the pool's completion after the connection closed touches nothing") {
  DeferredRunner runner;
  RouterServices services{Clock{[] { return std::uint64_t{1}; }, [] { return std::uint64_t{1}; }}, &runner, nullptr,
                          [](const std::string&, const std::string&) { return true; }, {}, {}, {}};
  Router router(RouterSettings{}, {keyed_room()}, services);
  auto box = std::make_unique<Box>();
  SessionId id = router.connect(*box);
  router.handle(id, join_vault("right"));
  REQUIRE(runner.tasks.size() == 1);
  router.disconnect(id);
  box->alive = false;  // any use of the outbox now fails the test
  runner.run_all();
  CHECK(router.who("vault")->empty());
  CHECK(router.session_count() == 0);
}

TEST_CASE("key checker: one argon2id check per distinct (hash, key), shared and remembered") {
  DeferredRunner runner;
  int verified = 0;
  KeyChecker keys(&runner, [&](const std::string& hash, const std::string& key) {
    ++verified;
    return hash == "H" && key == "right";
  }, /*capacity=*/2);
  std::vector<bool> answers;
  auto note = [&](bool ok) { answers.push_back(ok); };

  // Five identical checks at once: one pool task, five answers.
  for (int i = 0; i < 5; ++i) keys.check("H", "right", note);
  CHECK(runner.tasks.size() == 1);
  CHECK(answers.empty());
  runner.run_all();
  CHECK(verified == 1);
  CHECK(answers == std::vector<bool>(5, true));

  // Remembered: no more pool work, answered at once.
  CHECK(keys.cached("H", "right") == std::optional<bool>(true));
  keys.check("H", "right", note);
  CHECK(runner.tasks.empty());
  CHECK(answers.size() == 6);

  // A wrong key, and the right key under another hash, are checks of their own.
  CHECK_FALSE(keys.cached("H", "wrong").has_value());
  keys.check("H", "wrong", note);
  keys.check("H2", "right", note);
  CHECK(runner.tasks.size() == 2);
  runner.run_all();
  CHECK(verified == 3);
  CHECK(answers.back() == false);
  CHECK(keys.cached("H", "wrong") == std::optional<bool>(false));
  CHECK(keys.checks_run() == 3);

  // The digest is length-prefixed: ("H", "right") is not ("Hr", "ight").
  CHECK_FALSE(keys.cached("Hr", "ight").has_value());

  // Capacity 2 of each kind: a third wrong answer pushes out the oldest wrong one, never a
  // right one, so a flood of guesses cannot make the real key cost a check again.
  keys.check("H", "third wrong", note);
  runner.run_all();
  CHECK_FALSE(keys.cached("H", "wrong").has_value());
  CHECK(keys.cached("H2", "right") == std::optional<bool>(false));
  CHECK(keys.cached("H", "right") == std::optional<bool>(true));
  keys.check("H3", "right", note);  // hash "H3": wrong
  keys.check("H", "right", note);   // remembered
  runner.run_all();
  CHECK(keys.cached("H", "right") == std::optional<bool>(true));
}

TEST_CASE("router: a remembered wrong key is refused without the pool, a right one joins") {
  DeferredRunner runner;
  int verified = 0;
  RouterServices services{Clock{[] { return std::uint64_t{1}; }, [] { return std::uint64_t{1}; }}, &runner, nullptr,
                          [&](const std::string&, const std::string& key) {
                            ++verified;
                            return key == "right";
                          },
                          {}, {}, {}};
  Router router(RouterSettings{}, {keyed_room()}, services);
  Box a, b, c;
  SessionId ia = router.connect(a), ib = router.connect(b), ic = router.connect(c);
  router.handle(ia, join_vault("wrong"));
  router.handle(ib, join_vault("wrong"));  // joins the check already in the pool
  CHECK(runner.tasks.size() == 1);
  runner.run_all();
  CHECK(a.got.back()["code"] == "bad_key");
  CHECK(b.got.back()["code"] == "bad_key");
  CHECK(a.held == 0);
  CHECK(b.held == 0);
  router.handle(ic, join_vault("wrong"));  // remembered: answered at once, never held
  CHECK(runner.tasks.empty());
  CHECK(c.got.back()["code"] == "bad_key");
  router.handle(ic, join_vault("right"));
  runner.run_all();
  CHECK(c.got.back()["op"] == "joined");
  router.handle(ia, join_vault("right"));  // remembered right key
  CHECK(runner.tasks.empty());
  CHECK(a.got.back()["op"] == "joined");
  CHECK(verified == 2);
}

namespace {
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/roomd-unit-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

StoredMessage msg(std::uint64_t seq, std::string text, std::string room = "lobby") {
  std::string body = R"({"op":"message","room":")" + room + R"(","seq":)" + std::to_string(seq) + "}";
  return StoredMessage{room, seq, body, std::move(text)};
}
}  // namespace

TEST_CASE("history store: round trip, paging, search, trim") {
  TempDir dir;
  HistoryStore store((dir.path / "deep" / "h.db").string());  // creates the directory
  std::vector<StoredMessage> batch;
  for (std::uint64_t i = 1; i <= 30; ++i) batch.push_back(msg(i, i % 5 == 0 ? "apple pie " + std::to_string(i) : "plain"));
  batch.push_back(msg(1, "apple elsewhere", "other"));
  CHECK(store.append(batch) == "");
  // Idempotent by (room, seq): a seq stored already is skipped, the stored message kept and its
  // text not indexed twice; the rest of the batch is stored.
  std::size_t skipped = 0;
  CHECK(store.append({msg(30, "duplicate apple seq"), msg(2, "new", "other")}, &skipped) == "");
  CHECK(skipped == 1);
  CHECK(store.query({"lobby", std::nullopt, 50, std::string("duplicate")}).bodies.empty());
  CHECK(store.load("other", 5).last_seq == 2);

  auto state = store.load("lobby", 3);
  CHECK(state.last_seq == 30);
  REQUIRE(state.recent.size() == 3);
  CHECK(state.recent[0].find("\"seq\":28") != std::string::npos);

  HistoryPage page = store.query({"lobby", std::nullopt, 10, std::nullopt});
  REQUIRE(page.bodies.size() == 10);
  CHECK(page.more);
  CHECK(page.bodies.front().find("\"seq\":21") != std::string::npos);
  page = store.query({"lobby", 5, 10, std::nullopt});
  CHECK(page.bodies.size() == 4);
  CHECK_FALSE(page.more);

  page = store.query({"lobby", std::nullopt, 50, std::string("apple")});
  CHECK(page.bodies.size() == 6);  // 5,10,...,30 in lobby only
  page = store.query({"lobby", std::nullopt, 50, std::string("app*")});
  CHECK(page.bodies.size() == 6);
  page = store.query({"lobby", std::nullopt, 2, std::string("APPLE pie")});
  CHECK(page.bodies.size() == 2);
  CHECK(page.more);

  CHECK(store.trim("lobby", 20) == "");
  CHECK(store.load("lobby", 100).recent.size() == 10);
  CHECK(store.query({"lobby", std::nullopt, 50, std::string("apple")}).bodies.size() == 2);
  CHECK(store.load("other", 5).last_seq == 2);
}

TEST_CASE("history store: a clustered room's epoch is its own, kept with its messages") {
  TempDir dir;
  std::string database_epoch;
  {
    HistoryStore store((dir.path / "h.db").string());
    database_epoch = store.load("hall", 1).epoch;
    CHECK_FALSE(database_epoch.empty());
    CHECK(store.load("hall", 1, true).epoch.empty());  // none stored yet: the cluster's comes first
    auto in = [](std::uint64_t seq, std::string epoch, std::string room = "hall") {
      StoredMessage m = msg(seq, "x", room);
      m.epoch = std::move(epoch);
      return m;
    };
    CHECK(store.append({in(1, "e1"), in(2, "e1"), in(1, "f1", "other")}) == "");
    CHECK(store.load("hall", 1, true).epoch == "e1");
    CHECK(store.append({in(3, "e1"), in(4, "e2")}) == "");  // Redis began the room again at 3
    CHECK(store.load("hall", 1, true).epoch == "e2");
    CHECK(store.load("other", 1, true).epoch == "f1");
    CHECK(store.load("hall", 1).epoch == database_epoch);  // the database's is untouched
  }
  // A crash (the file left marked open) gives the database a new epoch, not a clustered room:
  // its seqs are Redis'.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((dir.path / "h.db").c_str(), &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "UPDATE meta SET value = '1' WHERE key = 'open'", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  HistoryStore store((dir.path / "h.db").string());
  CHECK(store.opened_after_crash());
  CHECK(store.load("hall", 1).epoch != database_epoch);
  CHECK(store.load("hall", 1, true).epoch == "e2");
  CHECK(store.load("hall", 1, true).last_seq == 4);
}

TEST_CASE("history store: hostile search text is quoted, never a syntax error") {
  CHECK(fts_query("apple") == "\"apple\"");
  CHECK(fts_query("app*") == "\"app\"*");
  CHECK(fts_query("say \"hi\"") == "\"say\" \"\"\"hi\"\"\"");
  CHECK(fts_query("a NEAR b") == "\"a\" \"NEAR\" \"b\"");
  CHECK(fts_query("   ") == "");
  TempDir dir;
  HistoryStore store((dir.path / "h.db").string());
  CHECK(store.append({msg(1, "it's (a) \"test\" NEAR* here")}) == "");
  for (const char* hostile : {"\"", "(", "a)", "NEAR(", "*", "**", "AND OR NOT", "col:x", "^x", "x\" OR \"y", "'"}) {
    HistoryPage p = store.query({"lobby", std::nullopt, 5, std::string(hostile)});
    CHECK_MESSAGE(p.error.empty(), hostile);
  }
  CHECK(store.query({"lobby", std::nullopt, 5, std::string("(a)")}).bodies.size() == 1);
}

TEST_CASE("history store: a path that cannot be opened is a clear error") {
  CHECK_THROWS_WITH_AS(HistoryStore("/proc/roomd/cannot/h.db"), doctest::Contains("/proc/roomd"), std::runtime_error);
}

TEST_CASE("history service: writes wait for flush, retention follows set_max_messages, reads fall back to the pool") {
  std::signal(SIGPIPE, SIG_IGN);  // as in the daemon: a helper that is gone costs an EPIPE
  TempDir dir;
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    WorkerPool pool(&loop, 1, 1);
    // No helper can start: every query goes to the pool, as when helpers keep failing.
    HistoryService history(&loop, pool, (dir.path / "h.db").string(), 1, 100, "/nonexistent/roomd");
    std::vector<bool> committed;
    for (std::uint64_t seq = 1; seq <= 4; ++seq)
      history.append(msg(seq, seq == 4 ? "apple" : "pear"), [&](bool ok) { committed.push_back(ok); });
    CHECK_FALSE(history.idle());
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(committed.empty());  // nothing goes to disk before the turn's flush
    history.set_max_messages(2);
    history.flush();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(committed == std::vector<bool>{true, true, true, true});
    CHECK(history.idle());
    RoomState state = history.load("lobby", 10);
    CHECK(state.last_seq == 4);
    CHECK(state.recent.size() == 2);  // seq 1 and 2 trimmed with the batch

    std::optional<HistoryPage> page;
    history.query({"lobby", std::nullopt, 10, std::string("apple")}, [&](HistoryPage p) { page = std::move(p); });
    uv_run(&loop, UV_RUN_DEFAULT);
    REQUIRE(page);
    CHECK(page->error.empty());
    REQUIRE(page->bodies.size() == 1);
    CHECK(page->bodies[0].find("\"seq\":4") != std::string::npos);
    history.close();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("history service: a store that cannot be opened is a clear error") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    WorkerPool pool(&loop, 1, 1);
    CHECK_THROWS_WITH_AS(HistoryService(&loop, pool, "/proc/roomd/cannot/h.db", 1, 100, "/nonexistent/roomd"),
                         doctest::Contains("/proc/roomd"), std::runtime_error);
  }
  CHECK(uv_loop_close(&loop) == 0);
}

namespace {
// Answers every history query with a fixed page, at once.
struct FixedHistory : Persistence {
  HistoryPage page;
  void append(StoredMessage, std::function<void(bool)> committed) override {
    if (committed) committed(true);
  }
  void query(HistoryQuery, std::function<void(HistoryPage)> done) override { done(page); }
};
}  // namespace

TEST_CASE("router: a stored history page goes out as the same JSON a DOM would make") {
  FixedHistory store;
  store.page.bodies = {
      R"({"op":"message","room":"lobby","seq":1,"from":"a","ts":5,"text":"x \"q\" é"})" "\n",  // as the server stores them
      R"({"op":"message","room":"lobby","seq":2,"from":"b","ts":6,"data":{"k":[1,2]}})",         // without the newline
      "not json",                                                                              // skipped
  };
  store.page.more = true;
  DeferredRunner runner;
  RouterServices services{Clock{[] { return std::uint64_t{1}; }, [] { return std::uint64_t{1}; }}, &runner, &store,
                          {}, {}, {}, {}};
  RoomConfig lobby;
  lobby.name = "lobby";
  Router router(RouterSettings{}, {lobby}, services);
  Box box;
  SessionId id = router.connect(box);
  Request r;
  r.op = Op::history;
  r.room = "lobby";
  r.id = nlohmann::json("h-1");
  router.handle(id, r);
  ordered_json expected = {{"op", "history"}, {"id", "h-1"}, {"room", "lobby"},
                           {"messages", {ordered_json::parse(store.page.bodies[0]), ordered_json::parse(store.page.bodies[1])}},
                           {"more", true}};
  CHECK(box.got.back().dump() == expected.dump());
  CHECK(box.held == 0);
}
