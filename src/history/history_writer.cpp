// HistoryWriter: batching durable writes per loop turn, one transaction at a time.
#include "roomd/history/history_writer.hpp"

#include <map>
#include <string>

#include "roomd/base/log.hpp"

namespace roomd {

void HistoryWriter::append(StoredMessage message, std::function<void(bool)> committed) {
  pending_.push_back(std::move(message));
  pending_callbacks_.push_back(std::move(committed));
}

void HistoryWriter::flush() {
  if (writing_ || pending_.empty()) return;
  writing_ = true;
  auto batch = std::move(pending_);
  auto callbacks = std::move(pending_callbacks_);
  pending_.clear();
  pending_callbacks_.clear();
  // Retention rides along with the batch: rows older than the newest max_messages go.
  std::map<std::string, std::uint64_t> trims;
  for (const auto& m : batch)
    if (m.seq > max_messages_) trims[m.room] = m.seq - max_messages_;
  HistoryStore* store = &store_;
  struct Result {
    bool ran = false;  // stays false if the pool could not run the task
    std::string error;
    std::string trim_error;
    std::size_t skipped = 0;  // seqs stored already (kept as they were)
  };
  // The work touches only the store and what it carries; logging waits for the loop.
  tasks_.submit<Result>(
      [store, batch = std::move(batch), trims = std::move(trims)] {
        Result r{true, {}, {}, 0};
        r.error = store->append(batch, &r.skipped);
        if (r.error.empty())
          for (const auto& [room, upto] : trims)
            if (auto e = store->trim(room, upto); !e.empty()) r.trim_error = room + ": " + e;
        return r;
      },
      [this, callbacks = std::move(callbacks)](Result r) {
        writing_ = false;
        bool ok = r.ran && r.error.empty();
        if (!ok) log::error("history write failed: " + (r.ran ? r.error : std::string("task not run")));
        if (!r.trim_error.empty()) log::warning("history trim failed: " + r.trim_error);
        if (ok && r.skipped > 0)
          log::warning("history: " + std::to_string(r.skipped) + " messages had a seq stored already; the stored ones were kept");
        for (const auto& cb : callbacks)
          if (cb) cb(ok);
        flush();  // whatever collected meanwhile
      });
}

}  // namespace roomd
