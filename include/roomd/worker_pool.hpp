// WorkerPool: heavy work (key hashing, SQLite) off the loop, on libuv's thread pool.
//
// A task's work runs on a pool thread and must touch only what it carries by value; its
// completion runs on the loop thread and may touch anything, but must look up what it needs
// (a session, a connection) by id, since those may be gone by then. The pool's size comes
// from UV_THREADPOOL_SIZE, which main sets from server.workers before anything uses it.
#pragma once

#include <uv.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

namespace roomd {

// What the router needs from a pool: submit and forget. Tests run tasks inline.
class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // `work` runs on a pool thread; `done` runs afterwards on the loop thread.
  virtual void run(std::function<void()> work, std::function<void()> done) = 0;

  // Typed convenience: the result of `work` is handed to `done`.
  template <class Result>
  void submit(std::function<Result()> work, std::function<void(Result)> done) {
    auto result = std::make_shared<Result>();
    run([work = std::move(work), result] { *result = work(); },
        [done = std::move(done), result] { done(std::move(*result)); });
  }
};

class WorkerPool final : public TaskRunner {
 public:
  explicit WorkerPool(uv_loop_t* loop) : loop_(loop) {}
  void run(std::function<void()> work, std::function<void()> done) override;
  std::size_t in_flight() const { return in_flight_; }

 private:
  uv_loop_t* loop_;
  std::size_t in_flight_ = 0;
};

// Runs work at once on the caller's thread (unit tests, and --check-config style tools).
class InlineRunner final : public TaskRunner {
 public:
  void run(std::function<void()> work, std::function<void()> done) override {
    work();
    done();
  }
};

}  // namespace roomd
