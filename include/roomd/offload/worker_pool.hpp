// WorkerPool: heavy work (key hashing, SQLite) off the loop, on libuv's thread pool.
//
// A task's work runs on a pool thread and must touch only what it carries by value; its
// completion runs on the loop thread and may touch anything, but must look up what it needs
// (a session, a connection) by id, since those may be gone by then. The pool's size comes
// from UV_THREADPOOL_SIZE, which main sets from server.workers before anything uses it.
#pragma once

#include <uv.h>

#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <utility>

namespace roomd {

// Which tasks may run at once. History writes (`any`) are never held back, so an `ok` that
// waits for its commit does not wait behind searches; the other two lanes are limited, each
// to its own count, so a flood of one kind neither takes every core from the loop nor makes
// the other kind queue behind it.
enum class Lane {
  any,
  key_checks,  // one per key-check helper process, which does the hashing
  queries,     // history reads and searches: CPU work, at most cores - 1 at once
};

// What the router needs from a pool: submit and forget. Unit tests supply their own runner.
class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // `work` runs on a pool thread; `done` runs afterwards on the loop thread.
  virtual void run(std::function<void()> work, std::function<void()> done) = 0;

  // The same, within the lane's limit of tasks at once (the rest wait, in order).
  virtual void run_in(Lane, std::function<void()> work, std::function<void()> done) {
    run(std::move(work), std::move(done));
  }

  // Typed convenience: the result of `work` is handed to `done`.
  template <class Result>
  void submit(std::function<Result()> work, std::function<void(Result)> done, Lane lane = Lane::any) {
    auto result = std::make_shared<Result>();
    auto w = [work = std::move(work), result] { *result = work(); };
    auto d = [done = std::move(done), result] { done(std::move(*result)); };
    if (lane == Lane::any) run(std::move(w), std::move(d));
    else run_in(lane, std::move(w), std::move(d));
  }
};

class WorkerPool final : public TaskRunner {
 public:
  // How many tasks of each limited lane may run at once.
  WorkerPool(uv_loop_t* loop, std::size_t key_checks, std::size_t queries)
      : loop_(loop), lanes_{LaneState{key_checks, 0, {}}, LaneState{queries, 0, {}}} {}
  void run(std::function<void()> work, std::function<void()> done) override;
  void run_in(Lane lane, std::function<void()> work, std::function<void()> done) override;
  std::size_t in_flight() const;

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
