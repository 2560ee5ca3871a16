// HistoryWriter: the loop side of durable history. Messages of persisted rooms collect in a
// batch during a loop turn; at the end of the turn the batch goes to the worker pool as one
// transaction, one batch at a time so rows land in seq order. Each message's `committed`
// callback runs on the loop once its batch is on disk; that is when a say's ok goes out.
// Queries run on the pool alongside (WAL readers do not wait for the writer) and see what
// has been committed.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "roomd/history/history_store.hpp"
#include "roomd/history/persistence.hpp"
#include "roomd/offload/worker_pool.hpp"

namespace roomd {

class HistoryWriter final : public Persistence {
 public:
  HistoryWriter(TaskRunner& tasks, HistoryStore& store, std::uint32_t max_messages_per_room)
      : tasks_(tasks), store_(store), max_messages_(max_messages_per_room) {}

  void append(StoredMessage message, std::function<void(bool)> committed) override;
  void query(HistoryQuery query, std::function<void(HistoryPage)> done) override;
  // Where queries go: by default the pool (query_on_pool); the daemon sends them to helper
  // processes at idle priority (history_helper.hpp), which fall back to the pool.
  using Reader = std::function<void(HistoryQuery, std::function<void(HistoryPage)>)>;
  void set_reader(Reader reader) { reader_ = std::move(reader); }
  void query_on_pool(HistoryQuery query, std::function<void(HistoryPage)> done);

  // Once per loop turn: send what collected, unless a batch is still being written.
  void flush();
  bool idle() const { return !writing_ && pending_.empty(); }
  void set_max_messages(std::uint32_t n) { max_messages_ = n; }

 private:
  TaskRunner& tasks_;
  HistoryStore& store_;
  std::uint32_t max_messages_;
  Reader reader_;
  std::vector<StoredMessage> pending_;
  std::vector<std::function<void(bool)>> pending_callbacks_;
  bool writing_ = false;
};

}  // namespace roomd
