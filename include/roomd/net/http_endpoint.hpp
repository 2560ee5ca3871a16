// HttpEndpoint: the operators' small HTTP/1.1 server ([http] listen): a listener and its
// connections, on the daemon's loop. It serves a fixed table of paths handed in (the app's
// /metrics, /healthz, /readyz) and nothing else. What a request gets is HttpExchange's
// (net/http_exchange.hpp: the parsing, the routing, the answers' bytes); the connection adds:
//
//   - one request at a time: what a client pipelines waits, unread past one read, until the
//     answer before it is written;
//   - each request must arrive complete within `idle_timeout_s` of the connection's accept
//     or its previous answer, so a silent connection and a slow-loris one are both closed;
//   - at most `max_connections` at once; more are accepted and closed at once.
//
// Closing on purpose writes the answer, then FIN, then discards input until the peer's FIN
// (or 2 s), so the kernel does not reset the answer away.
//
// Lifetime: a connection lives until its handle's close callback, which frees it; one that
// is closing no longer refers to its endpoint, so the endpoint may go first.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "roomd/base/names.hpp"
#include "roomd/base/uv.hpp"
#include "roomd/net/http_exchange.hpp"
#include "roomd/net/listener.hpp"

namespace roomd {

struct HttpLimits {
  std::size_t max_head_bytes = 8192;
  std::uint32_t idle_timeout_s = 10;
  std::size_t max_connections = 64;
};

class HttpEndpoint {
 public:
  // Binds and listens; throws std::runtime_error naming the address when it cannot.
  HttpEndpoint(uv_loop_t* loop, const ListenAddress& address, HttpLimits limits, std::vector<HttpRoute> routes);
  ~HttpEndpoint();  // stops listening and closes every connection
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  const std::string& bound_name() const { return listener_.bound_name(); }
  std::size_t connections() const { return clients_.size(); }
  std::uint64_t requests() const { return requests_; }
  // A reload: applies to each request from the next one on.
  void set_idle_timeout(std::uint32_t seconds) { limits_.idle_timeout_s = seconds; }

  class Client;  // one HTTP connection (http_endpoint.cpp)

 private:
  friend class Client;
  void on_connection(Listener& listener);
  HttpResponse answer(unsigned method, std::string_view target);  // routes one request
  void forget(Client* client);  // it is closing: no longer ours to close

  uv_loop_t* loop_;
  HttpLimits limits_;
  std::vector<HttpRoute> routes_;
  std::vector<char> read_buffer_;
  std::unordered_map<Client*, std::shared_ptr<Client>> clients_;
  std::uint64_t requests_ = 0;
  Listener listener_;  // last: its callback uses the members above
};

}  // namespace roomd
