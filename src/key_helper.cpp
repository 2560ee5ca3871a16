// KeyHelpers: argon2id checks in helper processes. See key_helper.hpp.
#include "roomd/key_helper.hpp"

#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <csignal>
#include <cstring>

#include "roomd/keys.hpp"
#include "roomd/log.hpp"

extern char** environ;

namespace roomd {

namespace {

constexpr std::uint32_t kMaxField = 1u << 24;  // no hash or key is anywhere near 16 MiB

// write(), not send(): the helper's end may be a pipe when someone drives it by hand. Both
// processes ignore SIGPIPE, so a vanished peer is an EPIPE here.
bool write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
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

bool write_field(int fd, const std::string& s) {
  auto n = static_cast<std::uint32_t>(s.size());
  return write_all(fd, &n, sizeof n) && write_all(fd, s.data(), s.size());
}

bool read_field(int fd, std::string& s) {
  std::uint32_t n = 0;
  if (!read_all(fd, &n, sizeof n) || n > kMaxField) return false;
  s.resize(n);
  return read_all(fd, s.data(), n);
}

}  // namespace

KeyHelpers::KeyHelpers(std::string program, std::size_t slots)
    : program_(std::move(program)), helpers_(std::max<std::size_t>(slots, 1)) {
  for (std::size_t i = 0; i < helpers_.size(); ++i) free_.push_back(i);
}

KeyHelpers::~KeyHelpers() {
  for (auto& h : helpers_) stop(h);
}

bool KeyHelpers::start(Helper& h) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDIN_FILENO);  // dup2 clears CLOEXEC
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  char* argv[] = {program_.data(), const_cast<char*>("--key-check-helper"), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, program_.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    log::error("cannot start the key-check helper " + program_ + ": " + std::strerror(rc));
    return false;
  }
  h.pid = pid;
  h.fd = fds[0];
  return true;
}

void KeyHelpers::stop(Helper& h) {
  if (h.fd >= 0) ::close(h.fd);  // its EOF: the helper exits
  if (h.pid > 0) {
    int status = 0;
    while (::waitpid(h.pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  h = Helper{};
}

bool KeyHelpers::ask(Helper& h, const std::string& hash, const std::string& key, bool* answer) {
  char reply = 0;
  if (!write_field(h.fd, hash) || !write_field(h.fd, key) || !read_all(h.fd, &reply, 1)) return false;
  *answer = reply == '1';
  return true;
}

bool KeyHelpers::verify(const std::string& hash, const std::string& key) {
  std::size_t index;
  {
    std::unique_lock lock(mutex_);
    freed_.wait(lock, [this] { return !free_.empty(); });
    index = free_.back();
    free_.pop_back();
  }
  Helper& h = helpers_[index];
  bool answer = false;
  bool asked = false;
  for (int attempt = 0; attempt < 2 && !asked; ++attempt) {
    if (h.pid < 0 && !start(h)) break;
    asked = ask(h, hash, key, &answer);
    if (!asked) {
      log::warning("the key-check helper (pid " + std::to_string(h.pid) + ") went away; starting another");
      stop(h);
    }
  }
  if (!asked) answer = false;  // fail closed
  {
    std::lock_guard lock(mutex_);
    free_.push_back(index);
  }
  freed_.notify_one();
  return answer;
}

int run_key_check_helper() {
  // Die with the daemon; leave a terminal's Ctrl-C and a reload's SIGHUP to the daemon.
  // (Had it gone before this line, stdin is already at EOF and the loop below ends.)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGPIPE, SIG_IGN);
  sched_param param{};
  if (::sched_setscheduler(0, SCHED_IDLE, &param) != 0) (void)::nice(19);
  if (!keys_init()) return 1;
  std::string hash, key;
  while (read_field(STDIN_FILENO, hash) && read_field(STDIN_FILENO, key)) {
    char reply = verify_key(hash, key) ? '1' : '0';
    if (!write_all(STDOUT_FILENO, &reply, 1)) break;
  }
  return 0;
}

}  // namespace roomd
