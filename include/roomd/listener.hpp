// Listener: one bound, listening socket (TCP v4/v6 or Unix) and the callback that accepts
// from it. A Unix socket path left by a dead daemon is replaced; one a live daemon answers
// on is an error. The Unix path is removed when the listener closes.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "roomd/names.hpp"
#include "roomd/uv.hpp"

namespace roomd {

class Listener {
 public:
  using OnConnection = std::function<void(Listener&)>;

  // Binds and listens; throws std::runtime_error with a readable reason on failure.
  Listener(uv_loop_t* loop, const ListenAddress& address, OnConnection on_connection);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  uv_stream_t* stream() const;
  bool is_unix() const { return address_.kind == ListenAddress::Kind::unix_path; }
  // The address actually bound (port 0 resolved to the kernel's choice).
  const std::string& bound_name() const { return bound_name_; }

 private:
  ListenAddress address_;
  OnConnection on_connection_;
  std::unique_ptr<uv::Handle<uv_tcp_t>> tcp_;
  std::unique_ptr<uv::Handle<uv_pipe_t>> pipe_;
  std::string bound_name_;
};

// "1.2.3.4:5678" / "[::1]:5678" for a sockaddr from getsockname/getpeername.
std::string format_sockaddr(const sockaddr_storage& addr, std::string* ip_only = nullptr);

}  // namespace roomd
