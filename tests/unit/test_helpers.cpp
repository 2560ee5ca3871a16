// Helper processes: the request/answer wire, and the history query's wire form.
#include <doctest/doctest.h>

#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <filesystem>

#include "roomd/offload/helper_processes.hpp"
#include "roomd/history/history_helper.hpp"
#include "roomd/history/history_store.hpp"

using namespace roomd;

TEST_CASE("helper processes: a request goes out and its answer comes back, framed") {
  // cat answers each request with itself: the framing is the same both ways.
  HelperProcesses echo("echo", "/bin/cat", {}, 1);
  HelperFields request{"", "hash", std::string("a\0b\nc", 5), std::string(100000, 'x')};
  auto answer = echo.call(request);
  REQUIRE(answer);
  CHECK(*answer == request);
  CHECK(echo.call({}) == HelperFields{});  // no fields is a request too
  CHECK(echo.call({"again"}) == HelperFields{"again"});  // the same helper, kept
}

TEST_CASE("helper processes: a helper that cannot answer is no answer, not a hang") {
  HelperProcesses gone("gone", "/bin/true", {}, 2);  // exits at once, every time it is started
  CHECK_FALSE(gone.call({"anything"}));
  HelperProcesses missing("missing", "/nonexistent/roomd-helper", {}, 1);
  CHECK_FALSE(missing.call({"anything"}));
}

TEST_CASE("helper wire: answers are taken whole, however the bytes arrive") {
  HelperFields a{"error text", "1", "0", std::string("body\0with nul", 13)};
  HelperFields b{};
  std::string stream = encode_fields(a) + encode_fields(b) + encode_fields({"x"});
  std::string buffer;
  std::vector<HelperFields> got;
  for (char c : stream) {  // one byte at a time: every split point is tried
    buffer += c;
    HelperFields out;
    bool malformed = true;
    while (take_fields(buffer, out, malformed)) got.push_back(out);
    REQUIRE_FALSE(malformed);
  }
  REQUIRE(got.size() == 3);
  CHECK(got[0] == a);
  CHECK(got[1] == b);
  CHECK(got[2] == HelperFields{"x"});
  CHECK(buffer.empty());

  std::uint32_t huge = 0xffffffffu;  // more fields than any answer has
  std::string bad(reinterpret_cast<const char*>(&huge), sizeof huge);
  HelperFields out;
  bool malformed = false;
  CHECK_FALSE(take_fields(bad, out, malformed));
  CHECK(malformed);
  std::uint32_t one = 1;
  bad = std::string(reinterpret_cast<const char*>(&one), sizeof one) + std::string(reinterpret_cast<const char*>(&huge), sizeof huge);
  CHECK_FALSE(take_fields(bad, out, malformed));
  CHECK(malformed);  // a field longer than any field is
}

TEST_CASE("history helper wire: queries and pages survive the trip") {
  for (const HistoryQuery& q : {HistoryQuery{"lobby", std::nullopt, 50, std::nullopt},
                                HistoryQuery{"lobby", 0, 0, std::string()},  // empty search != no search
                                HistoryQuery{"r\n", UINT64_MAX, UINT32_MAX, std::string("app* \"x\"")}}) {
    auto back = decode_query(encode_query(q));
    REQUIRE(back);
    CHECK(back->room == q.room);
    CHECK(back->before == q.before);
    CHECK(back->limit == q.limit);
    CHECK(back->search == q.search);
  }
  CHECK_FALSE(decode_query({"lobby"}));
  CHECK_FALSE(decode_query({"lobby", "x", "5"}));
  CHECK_FALSE(decode_query({"lobby", "", "-1"}));
  CHECK_FALSE(decode_query({"lobby", "", "4294967296"}));

  HistoryPage page{{"{\"seq\":1}", "{\"seq\":2}"}, true, "", false};
  auto back = decode_page(encode_page(page));
  REQUIRE(back);
  CHECK(back->bodies == page.bodies);
  CHECK(back->more);
  HistoryPage failed{{}, false, "fts5: syntax error", true};
  back = decode_page(encode_page(failed));
  REQUIRE(back);
  CHECK(back->error == failed.error);
  CHECK(back->bad_query);
  CHECK(back->bodies.empty());
  CHECK_FALSE(decode_page({"", "0"}));
}

TEST_CASE("history store: a read-only store reads what the writer wrote and writes nothing") {
  auto dir = std::filesystem::temp_directory_path() / ("roomd-unit-ro-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    HistoryStore writer((dir / "h.db").string());
    REQUIRE(writer.append({{"lobby", 1, R"({"seq":1})", "apple"}, {"lobby", 2, R"({"seq":2})", "pear"}}) == "");
    HistoryStore reader((dir / "h.db").string(), HistoryStore::read_only);
    auto page = reader.query({"lobby", std::nullopt, 10, std::string("apple")});
    REQUIRE(page.bodies.size() == 1);
    CHECK(page.bodies[0] == R"({"seq":1})");
    CHECK(reader.append({{"lobby", 3, "{}", "x"}}) != "");
    CHECK(reader.trim("lobby", 1) != "");
    CHECK(writer.append({{"lobby", 3, R"({"seq":3})", "apple again"}}) == "");  // seen by the reader at once
    CHECK(reader.query({"lobby", std::nullopt, 10, std::string("apple")}).bodies.size() == 2);
  }
  CHECK_THROWS_AS(HistoryStore((dir / "missing.db").string(), HistoryStore::read_only), std::runtime_error);
  std::filesystem::remove_all(dir);
}

namespace {
// Runs the loop until `done`, for at most about 10 s.
void run_until(uv_loop_t* loop, const bool& done) {
  for (int i = 0; i < 1000 && !done; ++i) uv_run(loop, UV_RUN_NOWAIT), usleep(10000);
}
}  // namespace

TEST_CASE("history helpers: a query no helper can answer goes to the fallback, once") {
  // As in the daemon (main.cpp): libuv writes without MSG_NOSIGNAL, and a helper that is
  // gone must cost an EPIPE, not the process.
  std::signal(SIGPIPE, SIG_IGN);
  for (const char* program : {"/nonexistent/roomd", "/bin/true"}) {  // cannot start; dies at once
    CAPTURE(program);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    std::vector<HistoryQuery> fell_back;
    {
      HistoryHelpers helpers(&loop, program, "/nowhere/h.db", 1,
                             [&](HistoryQuery q, HistoryHelpers::Done done) {
                               fell_back.push_back(q);
                               done(HistoryPage{{"from the pool"}, false, "", false});
                             });
      std::vector<std::string> answers;
      bool done = false;
      helpers.query({"lobby", std::nullopt, 5, std::string("apple")}, [&](HistoryPage p) {
        answers.push_back(p.bodies.at(0));
      });
      helpers.query({"other", 7, 5, std::nullopt}, [&](HistoryPage p) {
        answers.push_back(p.bodies.at(0));
        done = true;
      });
      run_until(&loop, done);
      CHECK(answers == std::vector<std::string>{"from the pool", "from the pool"});
      REQUIRE(fell_back.size() == 2);
      CHECK(fell_back[0].room == "lobby");
      CHECK(fell_back[1].room == "other");
      CHECK(fell_back[1].before == 7u);
    }
    uv_run(&loop, UV_RUN_DEFAULT);  // the helpers' pipes close
    CHECK(uv_loop_close(&loop) == 0);
  }
}
