// HttpEndpoint: the operators' HTTP connections, one request at a time, parsed with
// http-parser (libhttp-parser-dev).
#include "roomd/net/http_endpoint.hpp"

#include <http_parser.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <utility>

#include "roomd/base/log.hpp"

namespace roomd {

namespace {
// After our FIN: how long the peer has to send its own before the socket is closed anyway.
constexpr std::uint64_t kLingerMs = 2000;

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

HttpResponse plain(int status, std::string_view text) {
  return {.status = status, .content_type = "text/plain; charset=utf-8", .body = std::string(text) + "\n"};
}

std::string render(const HttpResponse& r, bool head_only, bool keep_alive) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  out += "Content-Type: " + r.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  out += "Cache-Control: no-store\r\n";
  if (r.status == 405) out += "Allow: GET, HEAD\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  if (!head_only) out += r.body;
  return out;
}
}  // namespace

class HttpEndpoint::Client : public std::enable_shared_from_this<Client> {
 public:
  explicit Client(HttpEndpoint& endpoint)
      : endpoint_(&endpoint),
        tcp_([loop = endpoint.loop_](uv_tcp_t* t) { return uv_tcp_init(loop, t); }),
        timer_(endpoint.loop_, [this] { on_timer(); }) {
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    write_req_.data = this;
    shutdown_req_.data = this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  uv_stream_t* stream() const { return tcp_.stream(); }

  void start() {
    tcp_.get()->data = this;
    arm_request_deadline();
    read(true);
  }

  // At once, dropping whatever is unwritten. The client lives on until its handle's close
  // callback (it holds itself there), but no longer refers to the endpoint.
  void close() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    auto self = shared_from_this();
    if (endpoint_) endpoint_->forget(this);
    endpoint_ = nullptr;
    timer_.stop();
    tcp_.close([self] {});
  }

 private:
  enum class State {
    reading,  // waiting for (the rest of) a request
    writing,  // an answer is being written; the socket is not read
    shut,     // FIN sent after a closing answer: input is discarded until the peer's FIN
    closed,
  };

  static const http_parser_settings& settings() {
    static const http_parser_settings s = [] {
      http_parser_settings init{};
      http_parser_settings_init(&init);
      init.on_message_begin = [](http_parser* p) { return self(p)->on_message_begin(); };
      init.on_url = [](http_parser* p, const char* at, size_t len) { return self(p)->on_url(at, len); };
      init.on_header_field = [](http_parser* p, const char* at, size_t len) { return self(p)->on_data(at, len); };
      init.on_header_value = [](http_parser* p, const char* at, size_t len) { return self(p)->on_data(at, len); };
      init.on_headers_complete = [](http_parser* p) { return self(p)->on_headers_complete(); };
      init.on_message_complete = [](http_parser* p) { return self(p)->on_message_complete(); };
      return init;
    }();
    return s;
  }
  static Client* self(http_parser* p) { return static_cast<Client*>(p->data); }

  int on_message_begin() {
    url_.clear();
    return 0;
  }
  int on_url(const char* at, std::size_t len) {
    url_.append(at, len);
    return on_data(at, len);
  }
  int on_data(const char* at, std::size_t len) {
    last_end_ = at + len;
    return 0;
  }
  // The head is what came in earlier reads plus this read up to its last header byte and
  // the blank line: within a few bytes, whatever the client's line endings.
  int on_headers_complete() {
    std::size_t head = head_bytes_ + static_cast<std::size_t>(last_end_ ? last_end_ - chunk_start_ : 0) + 4;
    if (head > endpoint_->limits_.max_head_bytes) {
      too_large_ = true;
      return -1;  // stops the parser with an error
    }
    in_head_ = false;
    method_ = parser_.method;
    const bool has_body =
        (parser_.flags & F_CHUNKED) != 0 || (parser_.content_length > 0 && parser_.content_length != ULLONG_MAX);
    keep_alive_ = http_should_keep_alive(&parser_) != 0 && !has_body && parser_.upgrade == 0;
    // A body is never read: the answer goes now and the connection closes after it.
    if (has_body) return pause_for_answer();
    return 0;
  }
  int on_message_complete() {
    if (answer_due_) return 0;  // answered at the headers already
    return pause_for_answer();
  }
  int pause_for_answer() {
    answer_due_ = true;
    http_parser_pause(&parser_, 1);
    return 0;
  }

  static void on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
    auto& buffer = static_cast<Client*>(handle->data)->endpoint_->read_buffer_;
    *buf = uv_buf_init(buffer.data(), static_cast<unsigned>(buffer.size()));
  }
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto* c = static_cast<Client*>(stream->data);
    if (nread == 0) return;  // EAGAIN
    if (nread < 0) return c->close();  // the peer's FIN (also the one a shut socket waits for), or a reset
    if (c->state_ == State::reading) c->feed(buf->base, static_cast<std::size_t>(nread));
  }

  void feed(const char* data, std::size_t n) {
    if (n == 0) return;
    chunk_start_ = data;
    last_end_ = nullptr;
    std::size_t parsed = http_parser_execute(&parser_, &settings(), data, n);
    const auto err = HTTP_PARSER_ERRNO(&parser_);
    if (err == HPE_PAUSED) {
      http_parser_pause(&parser_, 0);
      answer_due_ = false;
      in_head_ = true;
      head_bytes_ = 0;
      // What came after this request (pipelined) waits for its answer: at most one read.
      if (keep_alive_) pending_.assign(data + parsed, n - parsed);
      HttpResponse response = endpoint_->answer(method_, url_);
      return send(render(response, method_ == HTTP_HEAD, keep_alive_), keep_alive_);
    }
    if (err != HPE_OK) {
      const bool large = too_large_ || err == HPE_HEADER_OVERFLOW;
      log::debug(std::string("http: bad request (") + http_errno_name(err) + ")");
      return send(render(large ? plain(431, "request head too large") : plain(400, "bad request"), false, false), false);
    }
    if (in_head_) {
      head_bytes_ += parsed;
      if (head_bytes_ > endpoint_->limits_.max_head_bytes)
        send(render(plain(431, "request head too large"), false, false), false);
    }
  }

  void send(std::string bytes, bool keep_alive) {
    keep_alive_ = keep_alive;
    state_ = State::writing;
    read(false);
    out_ = std::move(bytes);
    uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    if (int rc = uv_write(&write_req_, stream(), &buf, 1, on_write); rc < 0) {
      log::debug("http: write: " + uv::error_text(rc));
      close();
    }
  }
  static void on_write(uv_write_t* req, int status) {
    auto* c = static_cast<Client*>(req->data);
    if (c->state_ == State::closed) return;  // cancelled by the close
    if (status < 0) return c->close();
    c->out_.clear();
    if (!c->keep_alive_) return c->shut();
    c->state_ = State::reading;
    c->arm_request_deadline();
    std::string rest = std::move(c->pending_);
    c->pending_.clear();
    c->feed(rest.data(), rest.size());
    if (c->state_ == State::reading) c->read(true);
  }

  void shut() {
    state_ = State::shut;
    timer_.start(kLingerMs, 0);
    if (uv_shutdown(&shutdown_req_, stream(), [](uv_shutdown_t* req, int status) {
          auto* c = static_cast<Client*>(req->data);
          if (status < 0 && c->state_ != State::closed) c->close();
        }) < 0)
      return close();
    read(true);  // discard until the peer's FIN
  }

  void read(bool on) {
    if (on == reading_) return;
    reading_ = on;
    if (on) uv::read_start(stream(), on_alloc, on_read);
    else uv_read_stop(stream());  // always 0
  }

  // A request must be complete this long after the accept or the previous answer.
  void arm_request_deadline() { timer_.start(std::uint64_t{endpoint_->limits_.idle_timeout_s} * 1000, 0); }
  void on_timer() {
    if (state_ == State::reading) log::debug("http: closing a connection idle or too slow with its request");
    close();
  }

  HttpEndpoint* endpoint_;  // null once closed
  uv::Handle<uv_tcp_t> tcp_;
  uv::Timer timer_;
  uv_write_t write_req_{};
  uv_shutdown_t shutdown_req_{};
  http_parser parser_{};
  State state_ = State::reading;
  bool reading_ = false;
  bool in_head_ = true;      // the headers of the next request are not complete yet
  bool answer_due_ = false;  // the parser paused: a request is complete
  bool too_large_ = false;
  bool keep_alive_ = false;
  unsigned method_ = 0;
  std::size_t head_bytes_ = 0;  // of the current request's head, in earlier reads
  const char* chunk_start_ = nullptr;
  const char* last_end_ = nullptr;
  std::string url_;
  std::string pending_;  // read past the request being answered
  std::string out_;      // the answer being written
};

HttpEndpoint::HttpEndpoint(uv_loop_t* loop, const ListenAddress& address, HttpLimits limits, std::vector<HttpRoute> routes)
    : loop_(loop),
      limits_(limits),
      routes_(std::move(routes)),
      read_buffer_(16 * 1024),
      listener_(loop, address, ListenerRole{}, [this](Listener& l) { on_connection(l); }) {}

HttpEndpoint::~HttpEndpoint() {
  auto clients = std::move(clients_);
  clients_.clear();
  for (auto& [raw, client] : clients) client->close();
}

void HttpEndpoint::on_connection(Listener& listener) {
  auto client = std::make_shared<Client>(*this);
  if (int rc = uv_accept(listener.stream(), client->stream()); rc < 0) {
    log::warning("http: accept failed: " + uv::error_text(rc));
    return client->close();
  }
  if (clients_.size() >= limits_.max_connections) {
    log::warning("http: " + std::to_string(clients_.size()) + " connections open already; closing a new one");
    return client->close();
  }
  clients_.emplace(client.get(), client);
  client->start();
}

void HttpEndpoint::forget(Client* client) { clients_.erase(client); }

HttpResponse HttpEndpoint::answer(unsigned method, std::string_view target) {
  ++requests_;
  std::string_view path = target.substr(0, target.find('?'));
  HttpResponse response;
  auto route = std::find_if(routes_.begin(), routes_.end(), [path](const HttpRoute& r) { return r.path == path; });
  if (route == routes_.end()) response = plain(404, "not found");
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

}  // namespace roomd
