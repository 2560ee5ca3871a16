// Stand-ins for the router's collaborators in unit tests: a task runner that holds tasks
// until the test runs them, an outbox that records what it is sent, and a keyed room.
#pragma once

#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "roomd/core/router.hpp"

namespace roomd::testing {

// Holds tasks until the test runs them: the window in which a client may vanish.
struct DeferredRunner : TaskRunner {
  std::vector<std::pair<std::function<void()>, std::function<void()>>> tasks;
  void run(std::function<void()> work, std::function<void()> done) override {
    tasks.emplace_back(std::move(work), std::move(done));
  }
  void run_all() {
    auto pending = std::move(tasks);
    tasks.clear();
    for (auto& [work, done] : pending) {
      work();
      done();
    }
  }
};

struct Box : Outbox {
  std::vector<ordered_json> got;
  int held = 0;
  bool alive = true;
  void send(const EventPtr& e) override { REQUIRE(alive); got.push_back(e->body()); }
  void send_broadcast(const EventPtr& e, std::string_view) override { REQUIRE(alive); got.push_back(e->body()); }
  void end() override {}
  void hold() override { ++held; }
  void release() override { REQUIRE(alive); --held; }
};

inline RoomConfig keyed_room() {
  RoomConfig r;
  r.name = "vault";
  r.key = "$argon2id$fake";
  return r;
}

inline Request join_vault(const std::string& key) {
  Request r;
  r.op = Op::join;
  r.room = "vault";
  r.key = key;
  r.id = 1;
  return r;
}

}  // namespace roomd::testing
