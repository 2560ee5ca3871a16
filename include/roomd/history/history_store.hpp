// HistoryStore: the SQLite file behind persisted rooms (WAL, FTS5 for search).
//
// Threading: every method opens or uses its own connection and is meant to run on a worker
// thread. The loop side guarantees one writer at a time (append/trim), in seq order; reads
// may run alongside it (WAL readers do not block the writer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "roomd/history/persistence.hpp"

struct sqlite3;

namespace roomd {

class HistoryStore {
 public:
  // Opens (creating the file, its directory and the schema); throws std::runtime_error with
  // a readable reason when it cannot. A file the last writer did not close (kill -9, a
  // crash, power loss) gets a new epoch: messages that were delivered but died uncommitted
  // had seqs that now go to others, so no resume may span the crash.
  explicit HistoryStore(std::string path);
  // Readers only (a history query helper): the file and its schema must exist; append and
  // trim refuse.
  struct ReadOnly {};
  static constexpr ReadOnly read_only{};
  HistoryStore(std::string path, ReadOnly);
  ~HistoryStore();
  HistoryStore(const HistoryStore&) = delete;
  HistoryStore& operator=(const HistoryStore&) = delete;

  const std::string& path() const { return path_; }
  // The last writer of this file did not close it (so the epoch changed at this open).
  bool opened_after_crash() const { return opened_after_crash_; }

  // Writer side (one at a time). Returns an error text, empty on success. Idempotent by
  // (room, seq): a message whose seq is stored already is skipped (the stored one is kept)
  // and counted in `skipped`. A message with an epoch records it as its room's.
  std::string append(const std::vector<StoredMessage>& batch, std::size_t* skipped = nullptr);
  std::string trim(const std::string& room, std::uint64_t keep_after_seq);

  // Reader side. `clustered`: the epoch is the room's own as its messages recorded it (the
  // cluster's; empty if none is stored yet), not the database's.
  RoomState load(const std::string& room, std::uint32_t recent, bool clustered = false) const;
  HistoryPage query(const HistoryQuery& q) const;

 private:
  // A read connection borrowed for one query and given back: opening one per query cost
  // more than a typical search (file, WAL index and schema each time).
  struct Lease;
  ::sqlite3* borrow_reader() const;
  void give_back(::sqlite3* db) const;

  std::string path_;
  ::sqlite3* writer_ = nullptr;
  bool opened_after_crash_ = false;
  mutable std::mutex readers_mutex_;           // pool threads only; the loop never reads
  mutable std::vector<::sqlite3*> idle_readers_;
};

// "apple pi*" -> "\"apple\" \"pi\"*": every word quoted (so NEAR, AND, quotes and
// parentheses are plain text), a trailing '*' kept as a prefix search. Empty: no words.
std::string fts_query(const std::string& words);

}  // namespace roomd
