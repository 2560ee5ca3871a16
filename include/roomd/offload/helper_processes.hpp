// Helper processes: heavy work in child processes at idle CPU priority.
//
// Work that must yield to the loop cannot simply run on a low-priority thread of the daemon:
// such a thread shares locks with the loop (libuv's queue mutexes, the malloc arena, SQLite's
// own), and held by a thread that is kept off its CPU they stall the loop (a priority
// inversion, measured in docs/performance.md). A child process shares no lock with it. A
// helper is `program args...`, started with posix_spawn (safe in a threaded process) on
// first use, reading requests on its stdin and answering on its stdout, one at a time.
// HelperProcesses asks from pool threads, blocking (the key checks); HistoryHelpers
// (history_helper.hpp) asks from the loop, reading the answers as the loop reads any socket.
//
// The wire format, both ways: a 32-bit count of fields, then each field as a 32-bit length
// and its bytes (host byte order: both ends are the same binary).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace roomd {

using HelperFields = std::vector<std::string>;

// A helper started: its pid and our end of the socket pair (close-on-exec, blocking).
struct SpawnedHelper {
  pid_t pid = -1;
  int fd = -1;
};
// posix_spawn of argv[0] with argv, its stdin and stdout on one end of a socket pair. Logs
// and returns nothing when it cannot.
std::optional<SpawnedHelper> spawn_helper(const std::vector<std::string>& argv, const std::string& name);
// Reaps a helper that has gone or was told to go, so no zombie is left: waiting for it, or
// (`wait` false) only if it has already exited. True when there is nothing left to reap.
bool reap_helper(pid_t pid, bool wait = true);

// The wire form of one request or answer.
std::string encode_fields(const HelperFields& fields);
// Takes one whole request or answer off the front of `buffer` into `out`: true when there was
// one. Sets `malformed` (and takes nothing) when the front cannot be one.
bool take_fields(std::string& buffer, HelperFields& out, bool& malformed);

// Helpers asked from pool threads, blocking: each slot owns a helper; a pool thread borrows
// a free one, writes a request and waits for the answer. A helper that died is started again
// within the same call.
class HelperProcesses {
 public:
  // `name` names the helpers in log lines; at most `slots` requests at once.
  HelperProcesses(std::string name, std::string program, std::vector<std::string> args, std::size_t slots);
  ~HelperProcesses();
  HelperProcesses(const HelperProcesses&) = delete;
  HelperProcesses& operator=(const HelperProcesses&) = delete;

  // Blocking: call from a pool thread. The answer's fields, or nothing when no helper could
  // answer (it died twice, or cannot be started).
  std::optional<HelperFields> call(const HelperFields& request);
  // Kills every helper now, also one a pool thread is waiting for: that call answers nothing,
  // and no helper starts again. For the daemon's exit, which waits for every pool task: a
  // helper at idle priority can be kept off the CPU for minutes on a busy machine. Idempotent.
  void shutdown();

 private:
  using Helper = SpawnedHelper;
  bool start(Helper& h);
  void stop(Helper& h);

  std::string name_;
  std::vector<std::string> argv_;   // program first
  std::vector<Helper> helpers_;     // one per slot; a borrowed one is its thread's alone
  std::mutex mutex_;
  std::condition_variable freed_;
  std::vector<std::size_t> free_;   // indexes into helpers_, guarded by mutex_
  std::vector<pid_t> running_;      // the helpers' pids, guarded by mutex_
  bool closed_ = false;             // shutdown() was called; guarded by mutex_
};

// The helper's side. First: die with the daemon, leave SIGINT/SIGHUP to it, ignore SIGPIPE,
// and run at idle CPU priority.
void become_idle_helper();
// Then: answer each request on stdin with `answer` on stdout, until EOF. Returns the exit status.
int serve_helper_requests(const std::function<HelperFields(const HelperFields&)>& answer);

}  // namespace roomd
