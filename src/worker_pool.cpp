// WorkerPool: uv_queue_work with owned, type-erased tasks.
#include "roomd/worker_pool.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "roomd/log.hpp"

namespace roomd {

namespace {
// Pool threads yield the CPU to the loop: on a small machine a burst of argon2id checks must
// not take the cores the loop needs to fan out messages. SCHED_IDLE runs them only when a
// core is otherwise free; where that is refused, a high nice value is the fallback.
void lower_this_threads_priority() {
  thread_local bool lowered = false;
  if (lowered) return;
  lowered = true;
  sched_param param{};
  if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &param) != 0)
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
}

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
      [](uv_work_t* req) {
        lower_this_threads_priority();
        static_cast<Task*>(req->data)->work();
      },
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
