// TaskRunner: what the router and the history writer need from a worker pool (submit and
// forget), with no libuv in sight; WorkerPool (worker_pool.hpp) is the daemon's, unit tests
// supply their own.
#pragma once

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

}  // namespace roomd
