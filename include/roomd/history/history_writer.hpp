// HistoryWriter: the loop side of durable history. Messages of persisted rooms collect in a
// batch during a loop turn; at the end of the turn the batch goes to the worker pool as one
// transaction, one batch at a time so rows land in seq order. Each message's `committed`
// callback runs on the loop once its batch is on disk; that is when a say's ok goes out.
// Writes only: reads are HistoryService's (history_service.hpp), which owns this writer.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "roomd/history/history_store.hpp"
#include "roomd/history/persistence.hpp"  // StoredMessage
#include "roomd/offload/worker_pool.hpp"

namespace roomd {

class HistoryWriter {
 public:
  HistoryWriter(TaskRunner& tasks, HistoryStore& store, std::uint32_t max_messages_per_room)
      : tasks_(tasks), store_(store), max_messages_(max_messages_per_room) {}

  // Queues a message for the next batch (Persistence::append).
  void append(StoredMessage message, std::function<void(bool)> committed);

  // Once per loop turn: send what collected, unless a batch is still being written.
  void flush();
  bool idle() const { return !writing_ && pending_.empty(); }
  void set_max_messages(std::uint32_t n) { max_messages_ = n; }

 private:
  TaskRunner& tasks_;
  HistoryStore& store_;
  std::uint32_t max_messages_;
  std::vector<StoredMessage> pending_;
  std::vector<std::function<void(bool)>> pending_callbacks_;
  bool writing_ = false;
};

}  // namespace roomd
