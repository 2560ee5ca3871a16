// WorkerPool: uv_queue_work with owned, type-erased tasks.
#include "roomd/worker_pool.hpp"

#include "roomd/log.hpp"

namespace roomd {

namespace {
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
      loop_, &task->req, [](uv_work_t* req) { static_cast<Task*>(req->data)->work(); },
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
