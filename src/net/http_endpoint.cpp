// HttpEndpoint: the operators' HTTP connections, one request at a time; HttpExchange parses
// them and makes the answers.
#include "roomd/net/http_endpoint.hpp"

#include <utility>

#include "roomd/base/log.hpp"

namespace roomd {

namespace {
// After our FIN: how long the peer has to send its own before the socket is closed anyway.
constexpr std::uint64_t kLingerMs = 2000;
}  // namespace

class HttpEndpoint::Client : public std::enable_shared_from_this<Client> {
 public:
  explicit Client(HttpEndpoint& endpoint)
      : endpoint_(&endpoint),
        tcp_([loop = endpoint.loop_](uv_tcp_t* t) { return uv_tcp_init(loop, t); }),
        timer_(endpoint.loop_, [this] { on_timer(); }),
        exchange_(endpoint.limits_.max_head_bytes) {
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
    auto reply = exchange_.feed({data, n}, [this](unsigned method, std::string_view target) {
      return endpoint_->answer(method, target);
    });
    if (!reply) return;
    // What came after this request (pipelined) waits for its answer: at most one read.
    if (reply->keep_alive) pending_.assign(data + reply->consumed, n - reply->consumed);
    send(std::move(reply->bytes), reply->keep_alive);
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
  State state_ = State::reading;
  bool reading_ = false;
  bool keep_alive_ = false;  // of the answer being written
  HttpExchange exchange_;
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
  return route_http_request(routes_, method, target);
}

}  // namespace roomd
