// Persistence: what durable history is to its users (the router), as plain types and one
// interface. No SQLite, no libuv: the store (history_store.hpp) and what runs it on the loop
// build on this header; the router (core) needs only this one.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace roomd {

struct StoredMessage {
  std::string room;
  std::uint64_t seq = 0;
  std::string body;  // the message event as JSON
  std::string text;  // what search indexes
  // A clustered room's: the cluster's epoch of this seq, kept per room with its messages so a
  // restarted node goes on following the room from where its store ends. Empty otherwise.
  std::string epoch{};
};

struct HistoryQuery {
  std::string room;
  std::optional<std::uint64_t> before;
  std::uint32_t limit = 50;
  std::optional<std::string> search;  // user words; turned into a safe FTS5 query
};

struct HistoryPage {
  std::vector<std::string> bodies;  // oldest first
  bool more = false;
  std::string error;                // non-empty: the query failed (bad search, I/O)
  bool bad_query = false;
};

struct RoomState {
  std::uint64_t last_seq = 0;
  std::string epoch;                // the store's: it changes only with a new database
  std::vector<std::string> recent;  // oldest first
  // A clustered room's state in Redis: the seq its current incarnation began after (0, or a
  // node's stored maximum when Redis had lost the room; docs/cluster.md).
  std::uint64_t base = 0;
};

// Durable history of persisted rooms (the server's SQLite store on the worker pool).
class Persistence {
 public:
  virtual ~Persistence() = default;
  // Queues a message for the next batch; `committed(ok)` runs on the loop once its batch is
  // on disk (or failed). It may be empty.
  virtual void append(StoredMessage message, std::function<void(bool ok)> committed) = 0;
  virtual void query(HistoryQuery query, std::function<void(HistoryPage)> done) = 0;
};

}  // namespace roomd
