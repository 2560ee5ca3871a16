// WorkerPool: heavy work (key hashing, SQLite) off the loop, on libuv's thread pool.
//
// A task's work runs on a pool thread and must touch only what it carries by value; its
// completion runs on the loop thread and may touch anything, but must look up what it needs
// (a session, a connection) by id, since those may be gone by then. The pool's size comes
// from UV_THREADPOOL_SIZE, which main sets from server.workers before anything uses it.
#pragma once

#include <uv.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <utility>

namespace roomd {

// What the router needs from a pool: submit and forget. Unit tests supply their own runner.
class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // `work` runs on a pool thread; `done` runs afterwards on the loop thread.
  virtual void run(std::function<void()> work, std::function<void()> done) = 0;

  // CPU- and memory-hungry work (argon2id): the pool runs fewer of these at once than it has
  // threads, so they cannot take every core from the loop.
  virtual void run_heavy(std::function<void()> work, std::function<void()> done) {
    run(std::move(work), std::move(done));
  }

  // Typed convenience: the result of `work` is handed to `done`.
  template <class Result>
  void submit(std::function<Result()> work, std::function<void(Result)> done, bool heavy = false) {
    auto result = std::make_shared<Result>();
    auto w = [work = std::move(work), result] { *result = work(); };
    auto d = [done = std::move(done), result] { done(std::move(*result)); };
    if (heavy) run_heavy(std::move(w), std::move(d));
    else run(std::move(w), std::move(d));
  }
};

class WorkerPool final : public TaskRunner {
 public:
  // `heavy_limit`: how many heavy tasks may run at once (the rest wait, in order).
  WorkerPool(uv_loop_t* loop, std::size_t heavy_limit) : loop_(loop), heavy_limit_(heavy_limit) {}
  void run(std::function<void()> work, std::function<void()> done) override;
  void run_heavy(std::function<void()> work, std::function<void()> done) override;
  std::size_t in_flight() const { return in_flight_ + heavy_waiting_.size(); }

 private:
  void start_heavy();

  uv_loop_t* loop_;
  std::size_t in_flight_ = 0;
  std::size_t heavy_limit_;
  std::size_t heavy_running_ = 0;
  std::deque<std::pair<std::function<void()>, std::function<void()>>> heavy_waiting_;
};

}  // namespace roomd
