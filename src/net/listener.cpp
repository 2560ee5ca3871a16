// Listener: binding TCP and Unix sockets, stale Unix socket recovery.
#include "roomd/net/listener.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "roomd/base/log.hpp"

namespace roomd {

std::string format_sockaddr(const sockaddr_storage& addr, std::string* ip_only) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    uv::check(uv_ip4_name(a, host, sizeof host), "uv_ip4_name");
    if (ip_only) *ip_only = host;
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv::check(uv_ip6_name(a, host, sizeof host), "uv_ip6_name");
    if (ip_only) *ip_only = host;
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  if (ip_only) ip_only->clear();
  return "unix";
}

namespace {

// True when a daemon is accepting on the Unix socket at `path`.
bool unix_socket_is_live(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return live;
}

[[noreturn]] void fail(const ListenAddress& a, const std::string& why) {
  throw std::runtime_error("cannot listen on " + a.to_string() + ": " + why);
}

}  // namespace

namespace {
void on_conn(uv_stream_t* server, int status) {
  auto* self = static_cast<Listener*>(server->data);
  if (!self) return;
  if (status < 0) return self->accept_failed(status);
  self->accept_one();
}
}  // namespace

void Listener::accept_one() { on_connection_(*this); }

// libuv calls back with an error for each accept that failed (out of file descriptors when its
// own spare descriptor could not shed the connection, out of memory): possibly thousands a
// second while the condition lasts, so the log gets one line per interval with their count.
void Listener::accept_failed(int status) {
  ++accept_failures_;
  if (std::uint64_t count = failure_log_.note(uv_now(stream()->loop)))
    log::warning("accept failed on " + bound_name_ + ": " + uv::error_text(status) + " (" + std::to_string(count) +
                 (count == 1 ? " time" : " times") + " since the last report; reported at most every " +
                 std::to_string(kAcceptFailureLogMs / 1000) + " s)");
}

Listener::Listener(uv_loop_t* loop, int fd, bool is_unix, ListenerRole role, OnConnection on_connection)
    : address_{is_unix ? ListenAddress::Kind::unix_path : ListenAddress::Kind::ipv4, "", 0},
      role_(role),
      on_connection_(std::move(on_connection)) {
  int rc;
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) < 0)
    throw std::runtime_error("cannot use activated socket (fd " + std::to_string(fd) + "): " + std::strerror(errno));
  if (is_unix) {
    pipe_ = std::make_unique<uv::Handle<uv_pipe_t>>([loop](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
    pipe_->get()->data = this;
    rc = uv_pipe_open(pipe_->get(), fd);
    const auto* un = reinterpret_cast<const sockaddr_un*>(&bound);
    bound_name_ = std::string("unix:") + (un->sun_path[0] ? un->sun_path : "(abstract)");
  } else {
    tcp_ = std::make_unique<uv::Handle<uv_tcp_t>>([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); });
    tcp_->get()->data = this;
    rc = uv_tcp_open(tcp_->get(), fd);
    bound_name_ = format_sockaddr(bound);
  }
  if (rc < 0 || (rc = uv_listen(stream(), 511, on_conn)) < 0)
    throw std::runtime_error("cannot use activated socket " + bound_name_ + ": " + uv::error_text(rc));
  bound_name_ += " (socket activation)";
}

Listener::Listener(uv_loop_t* loop, const ListenAddress& address, ListenerRole role, OnConnection on_connection)
    : address_(address), role_(role), on_connection_(std::move(on_connection)) {
  int rc;
  if (address.kind == ListenAddress::Kind::unix_path) {
    struct stat st{};
    if (::lstat(address.host.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) fail(address, "the path exists and is not a socket");
      if (unix_socket_is_live(address.host)) fail(address, "another daemon is listening there");
      ::unlink(address.host.c_str());  // left over from a daemon that died
    }
    pipe_ = std::make_unique<uv::Handle<uv_pipe_t>>([loop](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
    pipe_->get()->data = this;
    if ((rc = uv_pipe_bind(pipe_->get(), address.host.c_str())) < 0) fail(address, uv::error_text(rc));
    // From here the path is ours: a failure removes it (a throwing constructor runs no destructor).
    auto fail_bound = [&address](const std::string& why) {
      ::unlink(address.host.c_str());
      fail(address, why);
    };
    // Clients need write permission to connect: anyone may chat, only the owner may administer.
    if (::chmod(address.host.c_str(), role_.admin ? 0600 : 0666) < 0)
      fail_bound(std::string("chmod: ") + std::strerror(errno));
    if ((rc = uv_listen(stream(), 511, on_conn)) < 0) fail_bound(uv::error_text(rc));
    owns_path_ = true;
    bound_name_ = address.to_string();
    return;
  }
  tcp_ = std::make_unique<uv::Handle<uv_tcp_t>>([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); });
  tcp_->get()->data = this;
  sockaddr_storage sa{};
  unsigned flags = 0;
  if (address.kind == ListenAddress::Kind::ipv4) {
    rc = uv_ip4_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in*>(&sa));
  } else {
    rc = uv_ip6_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in6*>(&sa));
    flags = UV_TCP_IPV6ONLY;  // so [::]:P and 0.0.0.0:P can both be listed
  }
  if (rc < 0) fail(address, uv::error_text(rc));
  // libuv sets SO_REUSEADDR on TCP binds, so a restart does not wait out TIME_WAIT.
  if ((rc = uv_tcp_bind(tcp_->get(), reinterpret_cast<sockaddr*>(&sa), flags)) < 0)
    fail(address, uv::error_text(rc));
  if ((rc = uv_listen(stream(), 511, on_conn)) < 0) fail(address, uv::error_text(rc));
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv::check(uv_tcp_getsockname(tcp_->get(), reinterpret_cast<sockaddr*>(&bound), &len), "uv_tcp_getsockname");
  bound_name_ = format_sockaddr(bound);
}

Listener::~Listener() {
  if (owns_path_) ::unlink(address_.host.c_str());
}

uv_stream_t* Listener::stream() const {
  return tcp_ ? reinterpret_cast<uv_stream_t*>(tcp_->get()) : reinterpret_cast<uv_stream_t*>(pipe_->get());
}

}  // namespace roomd
