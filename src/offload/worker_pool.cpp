// WorkerPool: uv_queue_work with owned, type-erased tasks.
#include "roomd/offload/worker_pool.hpp"

#include <memory>

#include "roomd/base/log.hpp"
#include "roomd/base/uv.hpp"

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
  std::unique_ptr<Task> task(new Task{{}, std::move(work), std::move(done), &in_flight_});
  task->req.data = task.get();
  int rc = uv_queue_work(
      loop_, &task->req,
      [](uv_work_t* req) { static_cast<Task*>(req->data)->work(); },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Task> owned(static_cast<Task*>(req->data));
        --*owned->in_flight;
        // Tasks are never cancelled, so the work ran; its completion still owes an answer.
        if (status < 0) log::error("worker task: " + uv::error_text(status));
        owned->done();
      });
  // uv_queue_work fails only without a work callback: a bug, so check throws (the task freed).
  uv::check(rc, "uv_queue_work");
  task.release();  // the completion's from here
  ++in_flight_;
}

}  // namespace roomd

namespace roomd {

void WorkerPool::run_in(Lane lane, std::function<void()> work, std::function<void()> done) {
  if (lane == Lane::any) return run(std::move(work), std::move(done));
  LaneState& s = state(lane);
  s.waiting.emplace_back(std::move(work), std::move(done));
  start(s);
}

void WorkerPool::start(LaneState& lane) {
  while (lane.running < lane.limit && !lane.waiting.empty()) {
    auto [work, done] = std::move(lane.waiting.front());
    lane.waiting.pop_front();
    ++lane.running;
    run(std::move(work), [this, &lane, done = std::move(done)] {
      --lane.running;
      done();
      start(lane);
    });
  }
}

std::size_t WorkerPool::in_flight() const {
  std::size_t n = in_flight_;
  for (const auto& lane : lanes_) n += lane.waiting.size();
  return n;
}

std::size_t WorkerPool::waiting() const {
  std::size_t n = 0;
  for (const auto& lane : lanes_) n += lane.waiting.size();
  return n;
}

}  // namespace roomd
