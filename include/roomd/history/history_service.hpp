// HistoryService: durable history as the daemon runs it, behind the one Persistence interface.
//
// It owns the SQLite store, the writer and the read path:
// - writes: HistoryWriter (history_writer.hpp) batches a loop turn's messages into one
//   transaction on the worker pool, one batch at a time; flush() sends the batch.
// - reads: history pages and searches go to idle-priority helper processes
//   (history_helper.hpp), one per heavy slot; a query whose helper cannot answer goes to the
//   pool (the queries lane) rather than nowhere. WAL readers do not wait for the writer and
//   see what has been committed.
// Everything here runs on the loop; callbacks run on the loop.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "roomd/history/history_helper.hpp"
#include "roomd/history/history_store.hpp"
#include "roomd/history/history_writer.hpp"
#include "roomd/history/persistence.hpp"
#include "roomd/offload/worker_pool.hpp"

namespace roomd {

class HistoryService final : public Persistence {
 public:
  // Opens the store at `path` (throws std::runtime_error with a readable reason when it
  // cannot). `heavy_slots`: query helpers at most; `helper_program`: the roomd binary they run
  // as (normally /proc/self/exe). `tasks` must outlive the service.
  HistoryService(uv_loop_t* loop, TaskRunner& tasks, std::string path, std::size_t heavy_slots,
                 std::uint32_t max_messages_per_room, std::string helper_program);
  HistoryService(const HistoryService&) = delete;
  HistoryService& operator=(const HistoryService&) = delete;

  // Persistence.
  void append(StoredMessage message, std::function<void(bool ok)> committed) override;
  void query(HistoryQuery query, std::function<void(HistoryPage)> done) override;

  const std::string& path() const { return store_.path(); }
  // At start, on the loop: a persisted room's last seq and its `recent` newest messages;
  // `clustered`: with the room's own (the cluster's) epoch, not the database's.
  RoomState load(const std::string& room, std::uint32_t recent, bool clustered = false) const {
    return store_.load(room, recent, clustered);
  }
  // Once per loop turn: this turn's messages go out as one transaction (unless one is still
  // being written; then they go with the next).
  void flush() { writer_.flush(); }
  // Nothing waits to be written and nothing is being written.
  bool idle() const { return writer_.idle(); }
  void set_max_messages(std::uint32_t n) { writer_.set_max_messages(n); }
  // At shutdown: ends the query helpers and drops the queries waiting for them, so the loop
  // can run dry. Writes are not affected (wait for idle()). Idempotent.
  void close() { helpers_.close(); }

 private:
  void query_on_pool(HistoryQuery query, std::function<void(HistoryPage)> done);

  TaskRunner& tasks_;
  HistoryStore store_;
  HistoryWriter writer_;    // writes into store_
  HistoryHelpers helpers_;  // falls back to query_on_pool; destroyed first, as it uses the rest
};

}  // namespace roomd
