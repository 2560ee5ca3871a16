// GuessThrottle: the per-address budget of key checks, and the router refusing guesses over it.
#include <doctest/doctest.h>

#include "roomd/core/guess_throttle.hpp"
#include "roomd/core/router.hpp"
#include "router_fakes.hpp"

using namespace roomd;
using namespace roomd::testing;

TEST_CASE("guess throttle: a burst, then one guess per interval, and a clear wait") {
  GuessThrottle t({3, 10});
  for (int i = 0; i < 3; ++i) CHECK(t.try_start("10.0.0.1", 0).allowed);
  auto refused = t.try_start("10.0.0.1", 0);
  CHECK_FALSE(refused.allowed);
  CHECK(refused.retry_ms == 10000);
  CHECK(refused.first_refusal);
  auto again = t.try_start("10.0.0.1", 2500);
  CHECK_FALSE(again.allowed);
  CHECK(again.retry_ms == 7500);
  CHECK_FALSE(again.first_refusal);  // the log hears of a source once per episode
  CHECK(t.refused() == 2);
  CHECK(t.try_start("10.0.0.2", 2500).allowed);  // other addresses have their own budget
  CHECK(t.try_start("10.0.0.1", 10000).allowed);
  CHECK_FALSE(t.try_start("10.0.0.1", 10000).allowed);
  CHECK(t.try_start("10.0.0.1", 20000).allowed);
  CHECK(t.try_start("10.0.0.1", 20000).first_refusal);  // a new episode after a guess went through
}

TEST_CASE("guess throttle: a right key gives its guess back") {
  GuessThrottle t({2, 60});
  CHECK(t.try_start("a", 0).allowed);
  t.succeeded("a");
  CHECK(t.try_start("a", 0).allowed);
  t.succeeded("a");
  CHECK(t.try_start("a", 0).allowed);
  CHECK(t.try_start("a", 0).allowed);
  CHECK_FALSE(t.try_start("a", 0).allowed);
  t.succeeded("unknown");  // harmless
}

TEST_CASE("guess throttle: 0 guesses means no limit; reconfigure applies to known sources") {
  GuessThrottle off({0, 10});
  for (int i = 0; i < 1000; ++i) CHECK(off.try_start("a", 0).allowed);
  CHECK(off.sources() == 0);

  GuessThrottle t({5, 10});
  for (int i = 0; i < 2; ++i) CHECK(t.try_start("a", 0).allowed);
  t.reconfigure({1, 10});  // the 3 left are capped at the new burst of 1
  CHECK(t.try_start("a", 0).allowed);
  CHECK_FALSE(t.try_start("a", 0).allowed);
}

TEST_CASE("guess throttle: addresses that recovered are forgotten") {
  GuessThrottle t({2, 1});
  for (int i = 0; i < 1024; ++i) CHECK(t.try_start("10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256), 0).allowed);
  CHECK(t.sources() == 1024);
  CHECK(t.try_start("10.9.9.9", 500).allowed);  // a sweep at 1024, but nobody has recovered yet
  CHECK(t.sources() == 1025);
  GuessThrottle u({2, 1});
  for (int i = 0; i < 1024; ++i) CHECK(u.try_start("s" + std::to_string(i), 0).allowed);
  CHECK(u.try_start("new", 1000).allowed);  // one token a second: all 1024 are full again
  CHECK(u.sources() == 1);
}

TEST_CASE("guess throttle: sources") {
  CHECK(GuessThrottle::source_of("") == "unix");
  CHECK(GuessThrottle::source_of("192.0.2.7") == "192.0.2.7");
  CHECK(GuessThrottle::source_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64");
  CHECK(GuessThrottle::source_of("2001:db8:1:2::9") == "2001:db8:1:2::/64");
  CHECK(GuessThrottle::source_of("::1") == "::/64");
  CHECK(GuessThrottle::source_of("::ffff:192.0.2.7") == "192.0.2.7");
}


TEST_CASE("router: key guesses over an address's budget are refused without a check") {
  DeferredRunner runner;
  std::uint64_t now = 1000;
  int checks = 0;
  std::vector<std::string> throttled;
  RouterServices services{Clock{[] { return std::uint64_t{1}; }, [&] { return now; }}, &runner, nullptr,
                          [&](const std::string&, const std::string& key) {
                            ++checks;
                            return key == "right";
                          },
                          {},
                          [&](const std::string& source, std::uint64_t) { throttled.push_back(source); }, {}};
  RouterSettings settings;
  settings.key_guesses = {2, 30};
  Router router(settings, {keyed_room()}, services);
  Box guesser1, guesser2, other;
  SessionId g1 = router.connect(guesser1, false, "198.51.100.1");
  SessionId g2 = router.connect(guesser2, false, "198.51.100.1");  // same address, another connection
  SessionId o = router.connect(other, false, "198.51.100.2");

  router.handle(g1, join_vault("guess 1"));
  router.handle(g2, join_vault("guess 2"));
  runner.run_all();
  CHECK(checks == 2);
  CHECK(guesser1.got.back()["code"] == "bad_key");
  router.handle(g1, join_vault("guess 3"));
  CHECK(runner.tasks.empty());  // refused before any check
  CHECK(guesser1.got.back()["code"] == "rate_limited");
  CHECK(guesser1.got.back()["message"].get<std::string>().find("try again in 30 s") != std::string::npos);
  router.handle(g2, join_vault("guess 4"));
  CHECK(guesser2.got.back()["code"] == "rate_limited");
  CHECK(throttled == std::vector<std::string>{"198.51.100.1"});
  CHECK(router.guess_throttle().refused() == 2);

  router.handle(g1, join_vault("guess 1"));  // a remembered answer costs nothing and is not refused
  CHECK(guesser1.got.back()["code"] == "bad_key");

  router.handle(o, join_vault("other guess"));  // another address is not affected
  runner.run_all();
  CHECK(other.got.back()["code"] == "bad_key");
  CHECK(checks == 3);

  now += 30000;  // one guess back
  router.handle(g1, join_vault("right"));
  runner.run_all();
  CHECK(guesser1.got.back()["op"] == "joined");  // a right key gives its guess back ...
  router.handle(g2, join_vault("guess 5"));
  runner.run_all();
  CHECK(guesser2.got.back()["code"] == "bad_key");  // ... so the next guess still has one
  router.handle(g2, join_vault("guess 6"));
  CHECK(guesser2.got.back()["code"] == "rate_limited");
  CHECK(checks == 5);
}

TEST_CASE("router: joins that share a check in flight cost one guess, not one each") {
  DeferredRunner runner;
  int checks = 0;
  RouterServices services{Clock{[] { return std::uint64_t{1}; }, [] { return std::uint64_t{1000}; }}, &runner, nullptr,
                          [&](const std::string&, const std::string&) {
                            ++checks;
                            return false;
                          },
                          {}, {}, {}};
  RouterSettings settings;
  settings.key_guesses = {2, 30};
  Router router(settings, {keyed_room()}, services);
  std::vector<Box> fleet(6);
  std::vector<SessionId> ids;
  for (auto& box : fleet) ids.push_back(router.connect(box, false, "203.0.113.5"));
  for (SessionId id : ids) router.handle(id, join_vault("stale key"));  // a fleet reconnecting at once
  CHECK(runner.tasks.size() == 1);
  runner.run_all();
  CHECK(checks == 1);
  for (auto& box : fleet) CHECK(box.got.back()["code"] == "bad_key");
  CHECK(router.guess_throttle().refused() == 0);
  router.handle(ids[0], join_vault("new guess"));  // one of the two guesses is left
  runner.run_all();
  CHECK(fleet[0].got.back()["code"] == "bad_key");
  router.handle(ids[0], join_vault("newer guess"));
  CHECK(fleet[0].got.back()["code"] == "rate_limited");
}
