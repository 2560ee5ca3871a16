// HttpExchange: the requests of one connection to the operators' HTTP endpoint
// (net/http_endpoint), parsed with http-parser, and the bytes of their answers, without the
// socket. The endpoint's connection hands in what it read and writes what comes out; the
// fuzz target http_request drives it the same way.
//
//   - GET and HEAD only (others: 405 with Allow); a path not in the table: 404; the query
//     string is ignored; a route that throws: 500;
//   - a request head over `max_head_bytes`: 431, and the connection closes; a malformed
//     request: 400, and it closes; a request with a body is answered at its head and the
//     connection then closes (the body is never read);
//   - keep-alive as HTTP/1.1 says (Connection: close, HTTP/1.0 without keep-alive: close).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct http_parser;

namespace roomd {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpRoute {
  std::string path;                     // "/metrics"
  std::function<HttpResponse()> answer;  // runs on the loop, once per GET or HEAD
};

// The answer to one request from a table of routes (see above), logged at debug level.
HttpResponse route_http_request(const std::vector<HttpRoute>& routes, unsigned method, std::string_view target);
// An answer's bytes, as the endpoint sends them (no-store; Allow on a 405).
std::string render_http_response(const HttpResponse& response, bool head_only, bool keep_alive);

class HttpExchange {
 public:
  // Answers a complete request: its method (http-parser's enum http_method) and target.
  using Answerer = std::function<HttpResponse(unsigned method, std::string_view target)>;

  struct Reply {
    std::string bytes;      // the whole answer, to send
    int status = 0;
    bool keep_alive = false;  // false: close the connection once it is sent; feed nothing more
    // Of the bytes fed, how many the request took: the rest (pipelined) is the next
    // request's, to be fed once this answer is written.
    std::size_t consumed = 0;
  };

  explicit HttpExchange(std::size_t max_head_bytes);
  ~HttpExchange();
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  // Bytes read. Nothing while the request is incomplete; once it is complete, its answer
  // (from `answer`), or once it is refused, the 400 or 431.
  std::optional<Reply> feed(std::string_view bytes, const Answerer& answer);

 private:
  friend struct HttpExchangeCallbacks;
  Reply refuse(int status, std::size_t consumed);

  std::size_t max_head_bytes_;
  std::unique_ptr<http_parser> parser_;
  bool in_head_ = true;      // the headers of the next request are not complete yet
  bool answer_due_ = false;  // the parser paused: a request is complete
  bool too_large_ = false;
  bool keep_alive_ = false;
  unsigned method_ = 0;
  std::size_t head_bytes_ = 0;  // of the current request's head, in earlier reads
  const char* chunk_start_ = nullptr;
  const char* last_end_ = nullptr;
  std::string url_;
};

}  // namespace roomd
