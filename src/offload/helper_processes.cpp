// HelperProcesses: heavy work in idle-priority child processes. See helper_processes.hpp.
#include "roomd/offload/helper_processes.hpp"

#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>

#include "roomd/base/log.hpp"

extern char** environ;

namespace roomd {

namespace {

constexpr std::uint32_t kMaxField = 1u << 24;    // no key, query or stored message is near 16 MiB
constexpr std::uint32_t kMaxFields = 1u << 20;   // a history page has at most a few hundred

// The daemon's end is always a socket: send() without SIGPIPE, since a helper may be gone and
// the caller (a unit test, say) may not ignore the signal. The helper's end may be a pipe when
// someone drives it by hand: write(), with SIGPIPE ignored (become_idle_helper).
bool write_all(int fd, const void* data, std::size_t n, bool socket) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = socket ? ::send(fd, p, n, MSG_NOSIGNAL) : ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_fields(int fd, const HelperFields& fields, bool socket) {
  std::string out = encode_fields(fields);  // one buffer, one write
  return write_all(fd, out.data(), out.size(), socket);
}

bool read_fields(int fd, HelperFields& fields) {
  std::uint32_t count = 0;
  if (!read_all(fd, &count, sizeof count) || count > kMaxFields) return false;
  fields.assign(count, std::string());
  for (auto& f : fields) {
    std::uint32_t n = 0;
    if (!read_all(fd, &n, sizeof n) || n > kMaxField) return false;
    f.resize(n);
    if (!read_all(fd, f.data(), n)) return false;
  }
  return true;
}

}  // namespace

HelperProcesses::HelperProcesses(std::string name, std::string program, std::vector<std::string> args,
                                 std::size_t slots)
    : name_(std::move(name)), helpers_(std::max<std::size_t>(slots, 1)) {
  argv_.push_back(std::move(program));
  for (auto& a : args) argv_.push_back(std::move(a));
  for (std::size_t i = 0; i < helpers_.size(); ++i) free_.push_back(i);
}

HelperProcesses::~HelperProcesses() {
  for (auto& h : helpers_) stop(h);
}

std::string encode_fields(const HelperFields& fields) {
  std::string out;
  std::size_t total = sizeof(std::uint32_t);
  for (const auto& f : fields) total += sizeof(std::uint32_t) + f.size();
  out.reserve(total);
  auto put = [&out](std::uint32_t n) { out.append(reinterpret_cast<const char*>(&n), sizeof n); };
  put(static_cast<std::uint32_t>(fields.size()));
  for (const auto& f : fields) {
    put(static_cast<std::uint32_t>(f.size()));
    out += f;
  }
  return out;
}

bool take_fields(std::string& buffer, HelperFields& out, bool& malformed) {
  malformed = false;
  std::size_t at = 0;
  auto get = [&](std::uint32_t& n) {
    if (buffer.size() - at < sizeof n) return false;
    std::memcpy(&n, buffer.data() + at, sizeof n);
    at += sizeof n;
    return true;
  };
  std::uint32_t count = 0;
  if (!get(count)) return false;
  if (count > kMaxFields) {
    malformed = true;
    return false;
  }
  std::vector<std::pair<std::size_t, std::uint32_t>> spans;  // checked whole before anything is copied
  spans.reserve(std::min<std::uint32_t>(count, 1024));
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint32_t n = 0;
    if (!get(n)) return false;
    if (n > kMaxField) {
      malformed = true;
      return false;
    }
    if (buffer.size() - at < n) return false;
    spans.emplace_back(at, n);
    at += n;
  }
  out.clear();
  for (auto [from, n] : spans) out.emplace_back(buffer, from, n);
  buffer.erase(0, at);
  return true;
}

std::optional<SpawnedHelper> spawn_helper(const std::vector<std::string>& args, const std::string& name) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
    log::error("cannot start the " + name + " helper: socketpair: " + std::strerror(errno));
    return std::nullopt;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDIN_FILENO);  // dup2 clears CLOEXEC
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    log::error("cannot start the " + name + " helper " + args[0] + ": " + std::strerror(rc));
    return std::nullopt;
  }
  return SpawnedHelper{pid, fds[0]};
}

bool reap_helper(pid_t pid, bool wait) {
  if (pid <= 0) return true;
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &status, wait ? 0 : WNOHANG)) < 0 && errno == EINTR) {
  }
  return r != 0;  // reaped, or not ours to wait for any more
}

bool HelperProcesses::start(Helper& h) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
  }
  auto spawned = spawn_helper(argv_, name_);
  if (!spawned) return false;
  h = *spawned;
  std::lock_guard lock(mutex_);
  running_.push_back(h.pid);
  if (closed_) ::kill(h.pid, SIGKILL);  // shut down meanwhile: the call fails at once
  return true;
}

void HelperProcesses::stop(Helper& h) {
  if (h.fd >= 0) ::close(h.fd);  // its EOF: the helper exits
  reap_helper(h.pid);
  {
    std::lock_guard lock(mutex_);
    std::erase(running_, h.pid);
  }
  h = Helper{};
}

void HelperProcesses::shutdown() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (pid_t pid : running_) ::kill(pid, SIGKILL);  // a waiting call reads EOF; reaped by stop()
}

std::optional<HelperFields> HelperProcesses::call(const HelperFields& request) {
  std::size_t index;
  {
    std::unique_lock lock(mutex_);
    freed_.wait(lock, [this] { return !free_.empty(); });
    index = free_.back();
    free_.pop_back();
  }
  Helper& h = helpers_[index];
  std::optional<HelperFields> answer;
  for (int attempt = 0; attempt < 2 && !answer; ++attempt) {
    if (h.pid < 0 && !start(h)) break;
    HelperFields fields;
    if (write_fields(h.fd, request, true) && read_fields(h.fd, fields)) {
      answer = std::move(fields);
    } else {
      bool closing;
      {
        std::lock_guard lock(mutex_);
        closing = closed_;
      }
      if (!closing) log::warning("the " + name_ + " helper (pid " + std::to_string(h.pid) + ") went away; starting another");
      stop(h);
    }
  }
  {
    std::lock_guard lock(mutex_);
    free_.push_back(index);
  }
  freed_.notify_one();
  return answer;
}

void become_idle_helper() {
  // Die with the daemon; leave a terminal's Ctrl-C and a reload's SIGHUP to the daemon.
  // (Had it gone before this line, stdin is already at EOF and the request loop ends.)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGPIPE, SIG_IGN);
  sched_param param{};
  if (::sched_setscheduler(0, SCHED_IDLE, &param) != 0) (void)::nice(19);
}

int serve_helper_requests(const std::function<HelperFields(const HelperFields&)>& answer) {
  HelperFields request;
  while (read_fields(STDIN_FILENO, request))
    if (!write_fields(STDOUT_FILENO, answer(request), false)) break;
  return 0;
}

}  // namespace roomd
