// WorkerPool: heavy work (key hashing, SQLite) off the loop, on libuv's thread pool.
//
// A task's work runs on a pool thread and must touch only what it carries by value; its
// completion runs on the loop thread and may touch anything, but must look up what it needs
// (a session, a connection) by id, since those may be gone by then. The pool's size comes
// from UV_THREADPOOL_SIZE, which main sets from server.workers before anything uses it.
#pragma once

#include <uv.h>

#include "roomd/offload/task_runner.hpp"

#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <utility>

namespace roomd {

class WorkerPool final : public TaskRunner {
 public:
  // How many tasks of each limited lane may run at once.
  WorkerPool(uv_loop_t* loop, std::size_t key_checks, std::size_t queries)
      : loop_(loop), lanes_{LaneState{key_checks, 0, {}}, LaneState{queries, 0, {}}} {}
  void run(std::function<void()> work, std::function<void()> done) override;
  void run_in(Lane lane, std::function<void()> work, std::function<void()> done) override;
  std::size_t in_flight() const;  // queued or running, waiting ones included
  std::size_t waiting() const;    // of them, waiting in a limited lane for a slot

 private:
  struct LaneState {
    std::size_t limit;
    std::size_t running = 0;
    std::deque<std::pair<std::function<void()>, std::function<void()>>> waiting;
  };
  LaneState& state(Lane lane) { return lanes_[lane == Lane::key_checks ? 0 : 1]; }
  void start(LaneState& lane);

  uv_loop_t* loop_;
  std::size_t in_flight_ = 0;
  std::array<LaneState, 2> lanes_;
};

}  // namespace roomd
