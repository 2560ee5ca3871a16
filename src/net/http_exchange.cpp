// HttpExchange: one HTTP connection's requests and answers as bytes. See http_exchange.hpp.
#include "roomd/net/http_exchange.hpp"

#include <http_parser.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <utility>

#include "roomd/base/log.hpp"
#include "roomd/net/http_text.hpp"

namespace roomd {

namespace {
HttpResponse plain(int status, std::string_view text) {
  return {.status = status, .content_type = "text/plain; charset=utf-8", .body = std::string(text) + "\n"};
}
}  // namespace

HttpResponse route_http_request(const std::vector<HttpRoute>& routes, unsigned method, std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  HttpResponse response;
  auto route = std::find_if(routes.begin(), routes.end(), [path](const HttpRoute& r) { return r.path == path; });
  if (route == routes.end()) response = plain(404, "not found");
  else if (method != HTTP_GET && method != HTTP_HEAD) response = plain(405, "method not allowed");
  else {
    try {
      response = route->answer();
    } catch (const std::exception& e) {
      log::error("http: " + route->path + ": " + e.what());
      response = plain(500, "internal error");
    }
  }
  log::debug("http: " + std::string(http_method_str(static_cast<http_method>(method))) + " " + std::string(target) +
             " " + std::to_string(response.status));
  return response;
}

std::string render_http_response(const HttpResponse& r, bool head_only, bool keep_alive) {
  std::string headers = "Cache-Control: no-store\r\n";
  if (r.status == 405) headers += "Allow: GET, HEAD\r\n";
  return http_response_text(r.status, r.content_type, r.body, headers, keep_alive, head_only);
}

struct HttpExchangeCallbacks {
  static HttpExchange* self(http_parser* p) { return static_cast<HttpExchange*>(p->data); }

  static const http_parser_settings& settings() {
    static const http_parser_settings s = [] {
      http_parser_settings init{};
      http_parser_settings_init(&init);
      init.on_message_begin = [](http_parser* p) {
        self(p)->url_.clear();
        return 0;
      };
      init.on_url = [](http_parser* p, const char* at, size_t len) {
        self(p)->url_.append(at, len);
        return on_data(p, at, len);
      };
      init.on_header_field = on_data;
      init.on_header_value = on_data;
      init.on_headers_complete = on_headers_complete;
      init.on_message_complete = [](http_parser* p) {
        if (self(p)->answer_due_) return 0;  // answered at the headers already
        return pause_for_answer(p);
      };
      return init;
    }();
    return s;
  }

  static int on_data(http_parser* p, const char* at, size_t len) {
    self(p)->last_end_ = at + len;
    return 0;
  }
  // The head is what came in earlier reads plus this read up to its last header byte and
  // the blank line: within a few bytes, whatever the client's line endings.
  static int on_headers_complete(http_parser* p) {
    HttpExchange& x = *self(p);
    std::size_t head = x.head_bytes_ + static_cast<std::size_t>(x.last_end_ ? x.last_end_ - x.chunk_start_ : 0) + 4;
    if (head > x.max_head_bytes_) {
      x.too_large_ = true;
      return -1;  // stops the parser with an error
    }
    x.in_head_ = false;
    x.method_ = p->method;
    const bool has_body = (p->flags & F_CHUNKED) != 0 || (p->content_length > 0 && p->content_length != ULLONG_MAX);
    x.keep_alive_ = http_should_keep_alive(p) != 0 && !has_body && p->upgrade == 0;
    // A body is never read: the answer goes now and the connection closes after it.
    if (has_body) return pause_for_answer(p);
    return 0;
  }
  static int pause_for_answer(http_parser* p) {
    self(p)->answer_due_ = true;
    http_parser_pause(p, 1);
    return 0;
  }
};

HttpExchange::HttpExchange(std::size_t max_head_bytes)
    : max_head_bytes_(max_head_bytes), parser_(std::make_unique<http_parser>()) {
  http_parser_init(parser_.get(), HTTP_REQUEST);
  parser_->data = this;
}

HttpExchange::~HttpExchange() = default;

HttpExchange::Reply HttpExchange::refuse(int status, std::size_t consumed) {
  const HttpResponse response = status == 431 ? plain(431, "request head too large") : plain(400, "bad request");
  return {.bytes = render_http_response(response, false, false), .status = status, .keep_alive = false,
          .consumed = consumed};
}

std::optional<HttpExchange::Reply> HttpExchange::feed(std::string_view bytes, const Answerer& answer) {
  if (bytes.empty()) return std::nullopt;
  chunk_start_ = bytes.data();
  last_end_ = nullptr;
  const std::size_t parsed =
      http_parser_execute(parser_.get(), &HttpExchangeCallbacks::settings(), bytes.data(), bytes.size());
  const auto err = HTTP_PARSER_ERRNO(parser_.get());
  if (err == HPE_PAUSED) {
    http_parser_pause(parser_.get(), 0);
    answer_due_ = false;
    in_head_ = true;
    head_bytes_ = 0;
    const HttpResponse response = answer(method_, url_);
    return Reply{.bytes = render_http_response(response, method_ == HTTP_HEAD, keep_alive_),
                 .status = response.status, .keep_alive = keep_alive_, .consumed = parsed};
  }
  if (err != HPE_OK) {
    log::debug(std::string("http: bad request (") + http_errno_name(err) + ")");
    return refuse(too_large_ || err == HPE_HEADER_OVERFLOW ? 431 : 400, parsed);
  }
  if (in_head_) {
    head_bytes_ += parsed;
    if (head_bytes_ > max_head_bytes_) return refuse(431, parsed);
  }
  return std::nullopt;
}

}  // namespace roomd
