// The operators' HTTP endpoint without sockets (HttpExchange): routing, keep-alive and
// pipelining, the refusals, and the answers' text.
#include <doctest/doctest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "roomd/net/http_exchange.hpp"
#include "roomd/net/http_text.hpp"

using namespace roomd;

namespace {

const std::vector<HttpRoute> kRoutes{
    {"/healthz", [] { return HttpResponse{.status = 200, .body = "ok\n"}; }},
    {"/readyz", [] { return HttpResponse{.status = 503, .body = "shutting down\n"}; }},
    {"/broken", []() -> HttpResponse { throw std::runtime_error("no"); }},
};

std::optional<HttpExchange::Reply> feed(HttpExchange& x, std::string_view bytes) {
  return x.feed(bytes, [](unsigned method, std::string_view target) { return route_http_request(kRoutes, method, target); });
}

}  // namespace

TEST_CASE("http text: the status lines roomd answers with, and an unknown one") {
  CHECK(http_status_line(101) == "HTTP/1.1 101 Switching Protocols\r\n");
  CHECK(http_status_line(431) == "HTTP/1.1 431 Request Header Fields Too Large\r\n");
  CHECK(http_status_line(500) == "HTTP/1.1 500 Internal Server Error\r\n");
  CHECK(http_status_line(299) == "HTTP/1.1 299 Error\r\n");
  CHECK(http_answer(404, "text/plain", "x\n", "Allow: GET\r\n") ==
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        "X-Content-Type-Options: nosniff\r\nAllow: GET\r\nConnection: close\r\n\r\nx\n");
}

TEST_CASE("http exchange: a GET in pieces, then a pipelined HEAD after it") {
  HttpExchange x(8192);
  CHECK_FALSE(feed(x, "GET /healthz?probe=1 HTTP/1.1\r\nHo"));
  const std::string rest = "st: x\r\n\r\nHEAD /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  auto first = feed(x, rest);
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->keep_alive);
  CHECK(first->bytes ==
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n"
        "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\nok\n");
  auto second = feed(x, std::string_view(rest).substr(first->consumed));
  REQUIRE(second);
  CHECK(second->status == 503);
  CHECK_FALSE(second->keep_alive);
  CHECK(second->bytes.ends_with("Content-Length: 14\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"));
}

TEST_CASE("http exchange: 404, 405 with Allow, 500, a body, 400 and 431") {
  {
    HttpExchange x(8192);
    auto r = feed(x, "GET /nope HTTP/1.1\r\n\r\n");
    REQUIRE(r);
    CHECK(r->status == 404);
  }
  {
    HttpExchange x(8192);
    auto r = feed(x, "DELETE /healthz HTTP/1.1\r\n\r\n");
    REQUIRE(r);
    CHECK(r->status == 405);
    CHECK(r->bytes.find("\r\nAllow: GET, HEAD\r\n") != std::string::npos);
  }
  {
    HttpExchange x(8192);
    auto r = feed(x, "GET /broken HTTP/1.0\r\n\r\n");
    REQUIRE(r);
    CHECK(r->status == 500);
    CHECK_FALSE(r->keep_alive);  // HTTP/1.0 without keep-alive
  }
  {
    HttpExchange x(8192);
    auto r = feed(x, "POST /healthz HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc");
    REQUIRE(r);
    CHECK(r->status == 405);
    CHECK_FALSE(r->keep_alive);  // answered at the head; the body is never read
  }
  {
    HttpExchange x(8192);
    auto r = feed(x, "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n");
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(r->bytes.starts_with("HTTP/1.1 400 Bad Request\r\n"));
  }
  {
    HttpExchange x(64);
    auto r = feed(x, "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(100, 'a') + "\r\n\r\n");
    REQUIRE(r);
    CHECK(r->status == 431);
    CHECK_FALSE(r->keep_alive);
  }
  {
    HttpExchange x(64);  // over the limit before the head is complete
    CHECK_FALSE(feed(x, "GET /healthz HTTP/1.1\r\nX-Big: "));
    auto r = feed(x, std::string(100, 'a'));
    REQUIRE(r);
    CHECK(r->status == 431);
  }
}
