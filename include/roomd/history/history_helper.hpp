// HistoryHelpers: history pages and searches answered by helper processes at idle priority.
//
// A search is tens of microseconds of SQLite and FTS5 work. On a pool thread it competes with
// the loop for the CPUs at the same priority, and a flood of searches from many connections
// (each paced, together not) raised the p99 of ordinary messages by half on two cores
// (docs/performance.md). At idle priority in the daemon it would share the malloc arena and
// libuv's locks with the loop; in a child process, `roomd --history-query-helper PATH`, it
// shares nothing, and it only runs on a CPU that nothing else wants. Each helper opens the
// database read-only (WAL: readers in other processes see what has been committed).
#pragma once

#include <uv.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "roomd/base/uv.hpp"
#include "roomd/history/persistence.hpp"
#include "roomd/offload/helper_processes.hpp"

namespace roomd {

// The wire form of a query and of its page (HelperFields).
HelperFields encode_query(const HistoryQuery& query);
std::optional<HistoryQuery> decode_query(const HelperFields& fields);
HelperFields encode_page(const HistoryPage& page);
std::optional<HistoryPage> decode_page(const HelperFields& fields);

// The loop side. Each helper has one query at a time; the others wait here, in order. A
// helper's answer arrives on its pipe like any other read, so no thread is woken between
// the query and the loop (with a pool thread in between, waiting for the helper, messages
// fared worse than with the query on the pool thread itself). A helper that dies is started again and its query asked
// once more; a query whose helper died twice, or that none could be started for, goes to
// `fallback` (the pool). Callbacks run on the loop.
class HistoryHelpers {
 public:
  using Done = std::function<void(HistoryPage)>;
  using Fallback = std::function<void(HistoryQuery, Done)>;
  // `program`: the roomd binary (normally /proc/self/exe); `slots` helpers at most.
  HistoryHelpers(uv_loop_t* loop, std::string program, const std::string& db_path, std::size_t slots,
                 Fallback fallback);
  ~HistoryHelpers();
  HistoryHelpers(const HistoryHelpers&) = delete;
  HistoryHelpers& operator=(const HistoryHelpers&) = delete;

  void query(HistoryQuery query, Done done);
  // Ends every helper (they exit at their socket's EOF) and drops the queries still waiting:
  // at shutdown, so the loop can run dry. Idempotent.
  void close();

 private:
  struct Pending {
    HistoryQuery query;
    Done done;
    int attempts = 0;
  };
  struct Helper {
    HistoryHelpers* owner = nullptr;
    pid_t pid = -1;
    std::unique_ptr<uv::Handle<uv_pipe_t>> pipe;  // our end of its socket; none while stopped
    std::string received;                         // bytes of the answer so far
    std::optional<Pending> busy;
  };
  void dispatch();
  bool start(Helper& h);
  void lost(Helper& h, const std::string& why);
  void stop(Helper& h);
  void reap(bool wait);
  void on_read(Helper& h, ssize_t nread, const uv_buf_t* buf);

  uv_loop_t* loop_;
  std::vector<std::string> argv_;
  std::vector<std::unique_ptr<Helper>> helpers_;
  std::deque<Pending> waiting_;
  Fallback fallback_;
  std::vector<char> read_buffer_;
  std::vector<pid_t> unreaped_;  // stopped helpers not yet reaped
  bool closed_ = false;
};

// The helper's side: answers queries on stdin/stdout until EOF. Returns the exit status.
int run_history_query_helper(const std::string& db_path);

}  // namespace roomd
