// Listener: one bound, listening socket (TCP v4/v6 or Unix) and the callback that accepts
// from it. A Unix socket path left by a dead daemon is replaced; one a live daemon answers
// on is an error. The Unix path is removed when the listener closes.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "roomd/base/log_throttle.hpp"
#include "roomd/base/names.hpp"
#include "roomd/base/uv.hpp"

namespace roomd {

// What a listener's connections speak, from its `listen` entry.
struct ListenerRole {
  bool admin = false;      // Unix only: its clients may use the `stats` op
  bool tls = false;        // encrypted ([tls])
  bool websocket = false;  // an HTTP upgrade to WebSocket (and the web client at `/`)
};

class Listener {
 public:
  using OnConnection = std::function<void(Listener&)>;

  // Binds and listens; throws std::runtime_error with a readable reason on failure.
  Listener(uv_loop_t* loop, const ListenAddress& address, ListenerRole role, OnConnection on_connection);
  // Adopts a listening socket handed over by systemd (socket activation). Its path, if any,
  // belongs to systemd and is left alone.
  Listener(uv_loop_t* loop, int fd, bool is_unix, ListenerRole role, OnConnection on_connection);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  uv_stream_t* stream() const;
  bool is_unix() const { return pipe_ != nullptr; }
  bool admin() const { return role_.admin; }
  const ListenerRole& role() const { return role_; }
  // The address actually bound (port 0 resolved to the kernel's choice).
  const std::string& bound_name() const { return bound_name_; }
  void accept_one();  // from libuv's connection callback
  void accept_failed(int status);  // ditto, with an error: counted, logged once per interval
  // Accepts that failed (EMFILE, ENFILE, ENOMEM ...) since the listener opened.
  std::uint64_t accept_failures() const { return accept_failures_; }

  static constexpr std::uint64_t kAcceptFailureLogMs = 10000;

 private:
  ListenAddress address_;
  ListenerRole role_;
  bool owns_path_ = false;
  OnConnection on_connection_;
  std::unique_ptr<uv::Handle<uv_tcp_t>> tcp_;
  std::unique_ptr<uv::Handle<uv_pipe_t>> pipe_;
  std::string bound_name_;
  std::uint64_t accept_failures_ = 0;
  LogThrottle failure_log_{kAcceptFailureLogMs};
};

// "1.2.3.4:5678" / "[::1]:5678" for a sockaddr from getsockname/getpeername.
std::string format_sockaddr(const sockaddr_storage& addr, std::string* ip_only = nullptr);

}  // namespace roomd
