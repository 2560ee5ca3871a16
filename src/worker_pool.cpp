// WorkerPool: uv_queue_work with owned, type-erased tasks.
#include "roomd/worker_pool.hpp"

#include "roomd/log.hpp"

namespace roomd {

namespace {
// Pool threads keep the loop's priority. They take libuv's queue mutexes, which the loop
// takes too (to queue work, to collect what is done); at a lower priority one could be kept
// off its CPU while holding them and stall the loop for a time slice (it did: pinned to one
// core, p99 ≈5 ms during key checks, loop lag p99 ≈3.5 ms). What must yield to the loop, the
// argon2id hashing, runs in the idle-priority helper processes, which share no lock with it.
struct Task {
  uv_work_t req{};
  std::function<void()> work;
  std::function<void()> done;
  std::size_t* in_flight;
};
}  // namespace

void WorkerPool::run(std::function<void()> work, std::function<void()> done) {
  auto* task = new Task{{}, std::move(work), std::move(done), &in_flight_};
  task->req.data = task;
  int rc = uv_queue_work(
      loop_, &task->req,
      [](uv_work_t* req) { static_cast<Task*>(req->data)->work(); },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Task> owned(static_cast<Task*>(req->data));
        --*owned->in_flight;
        // Tasks are never cancelled, so the work ran; its completion still owes an answer.
        if (status < 0) log::error("worker task: " + std::string(uv_strerror(status)));
        owned->done();
      });
  if (rc < 0) {
    // The completion still runs, with the work's result left at its default (a failure),
    // so no client waits forever for an answer.
    log::error("cannot queue a worker task: " + std::string(uv_strerror(rc)));
    std::unique_ptr<Task> owned(task);
    owned->done();
    return;
  }
  ++in_flight_;
}

}  // namespace roomd

namespace roomd {

void WorkerPool::run_heavy(std::function<void()> work, std::function<void()> done) {
  heavy_waiting_.emplace_back(std::move(work), std::move(done));
  start_heavy();
}

void WorkerPool::start_heavy() {
  while (heavy_running_ < heavy_limit_ && !heavy_waiting_.empty()) {
    auto [work, done] = std::move(heavy_waiting_.front());
    heavy_waiting_.pop_front();
    ++heavy_running_;
    run(std::move(work), [this, done = std::move(done)] {
      --heavy_running_;
      done();
      start_heavy();
    });
  }
}

}  // namespace roomd
