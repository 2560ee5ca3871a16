// roomcat: the bundled client. One libuv loop reads stdin and the socket together, so a
// server that goes away is noticed at once, even in the middle of a line the user types.
//
// Modes: --json passes protocol lines both ways; otherwise each stdin line is a slash
// command or a `say` in the current room, sent as JSON with an id, and server frames are
// shown as human lines. At stdin's EOF roomcat waits until every id it sent is answered,
// says bye, and exits 0 when the server closes.
//
// --reconnect: a connection lost after its welcome is retried with backoff; the new one
// takes the nick back and re-joins each room with `since`/`epoch`, so the server replays
// what was missed (docs/roomcat.md, Reconnecting). Given several servers (the nodes of a
// cluster), each new attempt goes to the next one; a server that announces it is draining
// (system lame_duck) is left for the next one at the time it names, with no backoff.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "roomd/app/cli.hpp"
#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/framer.hpp"
#include "roomd/base/names.hpp"
#include "roomd/base/rate_limiter.hpp"
#include "roomd/base/uv.hpp"
#include "roomd/net/tls.hpp"
#include "roomd_build_config.hpp"
#include "terminal.hpp"

namespace {

using roomd::ordered_json;
namespace uv = roomd::uv;

constexpr int kExitLost = 1;
constexpr std::size_t kStdoutHighWater = 1 << 20;  // pause the socket above this much unprinted
// --reconnect: the delay before attempt n is drawn from [b/2, b], b = 200 ms doubling to 5 s.
constexpr std::uint64_t kBackoffMinMs = 200;
constexpr std::uint64_t kBackoffMaxMs = 5000;
constexpr std::size_t kMaxQueuedOffline = 1000;  // lines typed while disconnected, at most
constexpr std::string_view kOwnIdPrefix = "roomcat-";  // ids of the requests roomcat makes itself
// A re-join round with says to send again: a `nick_taken` is asked again every kNickRetryMs
// for up to kNickRetryForMs, since a say's msg_id counts only under the nick that said it and
// a killed cluster node holds its clients' nicks until the others sweep it (2 heartbeats).
constexpr std::uint64_t kNickRetryMs = 250;
constexpr std::uint64_t kNickRetryForMs = 5000;

// One server to connect to, from the command line.
struct Target {
  std::string text;  // as given, for messages
  bool tls = false;  // tls://
  bool is_unix = false;
  std::string unix_path, host, port;
};

// HOST:PORT, [V6]:PORT, tls://HOST:PORT or unix:PATH; nothing for anything else.
std::optional<Target> parse_target(const std::string& text) {
  Target t;
  t.text = text;
  std::string rest = text;
  if (rest.starts_with("tls://")) {
    t.tls = true;
    rest = rest.substr(6);
  }
  if (rest.starts_with("unix:")) {
    if (rest.size() == 5) return std::nullopt;
    t.is_unix = true;
    t.unix_path = rest.substr(5);
    return t;
  }
  if (auto addr = roomd::parse_listen_address(rest)) {
    t.host = addr->host;
    t.port = std::to_string(addr->port);
    return t;
  }
  // A host name: HOST:PORT, resolved by the loop.
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) return std::nullopt;
  t.host = rest.substr(0, colon);
  t.port = rest.substr(colon + 1);
  return t;
}

class Client {
 public:
  Client(uv_loop_t* loop, bool json, bool reconnect, std::string nick, std::vector<std::string> rooms)
      : loop_(loop),
        json_(json),
        reconnect_(reconnect),
        nick_(std::move(nick)),
        rooms_(std::move(rooms)),
        rng_(std::random_device{}()) {
    // Unique per process: 64 random bits, then a counter (docs/protocol.md, Resending a say).
    char prefix[24];
    std::snprintf(prefix, sizeof prefix, "rc%016llx-", static_cast<unsigned long long>(rng_()));
    msg_id_prefix_ = prefix;
  }

  // tls:// targets: the client context (anchors, optional client certificate).
  void use_tls(std::shared_ptr<roomd::TlsContext> context) { tls_context_ = std::move(context); }
  // The servers, tried in this order (at least one).
  int run(std::vector<Target> targets);

 private:
  // What roomcat remembers of a room it is in, to re-join it after a reconnect.
  struct Room {
    std::string name;
    std::optional<std::string> key;    // given at the join
    std::optional<std::uint64_t> seq;  // the last seq seen: joined.seq, then each message
    std::optional<std::string> epoch;  // from the last joined
  };
  // One request of a re-join round: the nick ("" room) or a room; note is what the line says.
  struct Rejoin {
    std::string id;
    std::string room;
    std::string note;
  };

  static Client* from(uv_handle_t* h) { return static_cast<Client*>(h->data); }
  uv_stream_t* sock() { return pipe_ ? pipe_->stream() : tcp_->stream(); }

  void start_connect();
  void connect_failed(const std::string& what, int status);
  void connected();
  void start_stdin();
  void read_stdin_file();  // stdin is a file: uv_fs_read, chunk by chunk
  void start_socket_reads();
  void on_socket_bytes(std::string_view bytes);
  void write_socket(std::string bytes);
  void flush_tls();
  static void on_connected(uv_connect_t* req, int status);
  void on_socket_closed();
  void on_server_line(std::string_view line);
  void track(const ordered_json& frame, const std::string& op);
  void on_welcome(const ordered_json& frame);
  void on_stdin_line(std::string_view line);
  void on_stdin_eof();
  void send_json(const ordered_json& frame);
  void send_raw(std::string line);
  void maybe_finish();
  void print(std::string text);
  void print_now(std::string text);
  void notice(const std::string& text);
  void queue_request(roomd::Request request);
  void send_queued();
  void flush_raw();
  std::string prompt() const { return current_room_.empty() ? "> " : "[" + current_room_ + "]> "; }
  void lost(const std::string& why);
  void connection_lost(const std::string& why);
  void schedule_retry(std::optional<std::uint64_t> delay_ms = std::nullopt);
  const Target& target() const { return targets_[current_]; }
  void next_target() { current_ = (current_ + 1) % targets_.size(); }
  bool on_lame_duck(const ordered_json& frame);
  void move_when_idle();
  std::size_t in_flight() const;
  void begin_rejoin();
  bool on_rejoin_reply(const std::string& id, const ordered_json& frame, const std::string& op);
  void finish_rejoin();
  void forget_room(const std::string& room);
  void retry_nick();
  Room* find_room(const std::string& room);
  bool offline() const { return reconnecting_ || rejoining_ || moving_; }
  // Lines from stdin go out now: connected, the rooms re-joined, and (text mode, which paces
  // by it) welcomed. --json sends at once, as it always has.
  bool ready() const { return online_ && !offline() && (json_ || welcomed_); }
  void close_all();

  uv_loop_t* loop_;
  bool json_;
  bool reconnect_;
  std::string nick_;
  std::vector<std::string> rooms_;
  std::string current_room_;
  std::vector<Target> targets_;
  std::size_t current_ = 0;   // the target connected to, or tried next
  std::size_t first_tries_ = 0;  // before any welcome: targets tried (each once, then exit 1)
  // Every handle is owned here (or by terminal_) and closed by close_all(), which ends the
  // loop: nothing is left open when run() returns, except after its early return.
  std::optional<uv::Handle<uv_tcp_t>> tcp_;  // the socket: one of these two
  std::optional<uv::Handle<uv_pipe_t>> pipe_;
  uv_connect_t connect_req_{};
  uv_getaddrinfo_t resolve_req_{};
  std::optional<uv::Handle<uv_pipe_t>> stdin_pipe_;  // stdin outside interactive mode: one of these two
  std::optional<uv::Handle<uv_tty_t>> stdin_tty_;
  bool stdin_started_ = false;
  uv_fs_t stdin_file_read_{};  // stdin as a file: the read in progress
  roomd::Framer server_framer_{64 << 20};
  roomd::Framer stdin_framer_{64 << 20};
  std::uint64_t next_id_ = 1;
  std::set<std::uint64_t> unanswered_;
  bool stdin_done_ = false;
  bool bye_sent_ = false;
  bool bye_acked_ = false;
  std::string closed_reason_;
  int exit_code_ = 0;
  bool finished_ = false;
  std::size_t stdout_pending_ = 0;
  std::optional<uv::Handle<uv_pipe_t>> stdout_pipe_;  // present when stdout is written asynchronously
  bool sock_paused_ = false;
  std::unique_ptr<roomcat::Terminal> terminal_;
  // Says and whispers are paced by the server's advertised rate limit, so a fast pipe is
  // slowed down instead of refused; every request waits its turn to keep the order.
  std::deque<roomd::Request> queued_;
  std::unique_ptr<roomd::TokenBucket> bucket_;
  double rate_ = 0;
  // Paced requests sent and not yet answered, at most paced_window_ (0: no limit). The pacing
  // alone cannot keep a refusal away: a server that stalls reads lines sent over a while in
  // one go, with its bucket full at only `burst`. With w in flight and our own burst b,
  // what it reads at once is at most w + b <= its burst (and our rate is below its rate).
  std::set<std::uint64_t> paced_in_flight_;
  // Says sent on this connection and not answered yet, in the order they went out, with their
  // msg_id: after a loss they go out again first, once the rooms are re-joined.
  std::deque<roomd::Request> sent_says_;
  std::set<std::uint64_t> resend_ids_;  // says sent again (or waiting to be), until answered
  std::string msg_id_prefix_;
  std::uint64_t next_msg_id_ = 1;
  std::size_t paced_window_ = 0;
  bool welcomed_ = false;  // this connection's welcome has come
  std::optional<uv::Timer> pace_timer_;
  bool pace_timer_active_ = false;  // a one-shot: started and not yet fired
  std::optional<uv::Signal> sigint_;
  std::vector<char> sock_buf_ = std::vector<char>(64 * 1024);
  std::vector<char> stdin_buf_ = std::vector<char>(64 * 1024);

  // Reconnecting (--reconnect).
  bool online_ = false;         // the socket is connected and not yet lost
  bool ever_welcomed_ = false;  // a connection got as far as its welcome: from then on, retry
  bool reconnecting_ = false;   // from a loss until the next welcome
  bool rejoining_ = false;      // the re-join round's replies are not all in
  std::optional<uv::Timer> retry_timer_;
  // Lame duck: the server said when it will close us (loop time); at that time roomcat moves
  // to the next target itself, once its requests in flight are answered (moving_).
  std::optional<std::uint64_t> lame_duck_at_;
  std::optional<uv::Timer> move_timer_;
  bool moving_ = false;
  std::uint64_t backoff_ms_ = kBackoffMinMs;
  std::mt19937_64 rng_;
  std::vector<Room> joined_;                                  // in the order they were joined
  std::vector<std::pair<std::string, std::optional<std::string>>> join_keys_;  // last join sent, per room
  std::string own_nick_;  // the nick the server last acknowledged ("" for the guest nick)
  std::string guest_nick_;
  std::vector<Rejoin> rejoin_;
  std::string rejoin_nick_note_;  // why the nick could not be taken back
  std::size_t rejoin_pending_ = 0;
  std::optional<uv::Timer> nick_timer_;    // the round asks for the nick again (kNickRetryMs)
  std::uint64_t nick_retry_until_ = 0;     // loop time: after it a nick_taken is final
  std::string rejoin_out_;  // text mode: what the round printed, shown after its one line
  std::uint64_t next_own_id_ = 1;
  std::deque<std::string> raw_queue_;  // --json: lines waiting for the connection
  // TLS (tls://): the channel of the current connection, and what was sent before its handshake.
  std::shared_ptr<roomd::TlsContext> tls_context_;
  std::unique_ptr<roomd::TlsChannel> tls_;
  std::string tls_pending_;
};

struct WriteReq {
  uv_write_t req;
  std::string data;
  Client* client;
};

int Client::run(std::vector<Target> targets) {
  targets_ = std::move(targets);
  pace_timer_.emplace(loop_, [this] {
    pace_timer_active_ = false;
    send_queued();
  });
  retry_timer_.emplace(loop_, [this] { start_connect(); });
  nick_timer_.emplace(loop_, [this] { retry_nick(); });
  move_timer_.emplace(loop_, [this] {
    if (!online_) return;  // gone meanwhile: connection_lost took over
    moving_ = true;        // new lines wait for the next server
    move_when_idle();
  });
  bool interactive = uv_guess_handle(0) == UV_TTY && !json_;
  if (!interactive && (uv_guess_handle(1) == UV_NAMED_PIPE || uv_guess_handle(1) == UV_TTY)) {
    // Asynchronous stdout, so a slow terminal or reader applies backpressure to the socket.
    // A stdout the pipe cannot open is written synchronously instead.
    stdout_pipe_.emplace([this](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
    if (uv_pipe_open(stdout_pipe_->get(), 1) < 0) stdout_pipe_.reset();
  }
  start_connect();
  uv_run(loop_, UV_RUN_DEFAULT);  // until close_all() has closed every handle; returns no error
  return exit_code_;
}

// One attempt: a fresh socket handle, then (for TCP) a lookup of the host and a connect.
// Every way it fails ends in connect_failed, which retries or gives up.
void Client::start_connect() {
  if (finished_) return;
  connect_req_.data = this;
  if (target().is_unix) {
    pipe_.emplace([this](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
    pipe_->get()->data = this;
    // void: a failure reaches on_connected
    uv_pipe_connect(&connect_req_, pipe_->get(), target().unix_path.c_str(), on_connected);
    return;
  }
  tcp_.emplace([this](uv_tcp_t* t) { return uv_tcp_init(loop_, t); });
  tcp_->get()->data = this;
  resolve_req_.data = this;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop_, &resolve_req_,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* self = static_cast<Client*>(req->data);
        if (self->finished_) {  // given up meanwhile (stdin ended while reconnecting)
        } else if (status < 0) {
          self->connect_failed("cannot resolve host", status);
        } else if (int rc = uv_tcp_connect(&self->connect_req_, self->tcp_->get(), res->ai_addr, on_connected);
                   rc < 0) {
          // Refused and the like come to on_connected; this is a connect that could not
          // even start (no route, no address family, no socket).
          self->connect_failed("cannot connect", rc);
        }
        uv_freeaddrinfo(res);
      },
      target().host.c_str(), target().port.c_str(), &hints);
  if (rc < 0) connect_failed("cannot resolve host", rc);
}

void Client::connect_failed(const std::string& what, int status) {
  if (reconnecting_) return schedule_retry();  // silent: the loss was said once
  if (targets_.size() == 1) {
    std::fprintf(stderr, "roomcat: %s: %s\n", what.c_str(), uv_strerror(status));
  } else {
    // The first connection: each server is tried once before giving up.
    std::fprintf(stderr, "roomcat: %s: %s: %s\n", target().text.c_str(), what.c_str(), uv_strerror(status));
    if (++first_tries_ < targets_.size()) {  // the next one, from the loop (not inside this request's callback)
      tcp_.reset();
      pipe_.reset();
      next_target();
      return retry_timer_->start(0, 0);
    }
  }
  exit_code_ = kExitLost;
  close_all();
}

void Client::on_connected(uv_connect_t* req, int status) {
  auto* self = static_cast<Client*>(req->data);
  if (self->finished_) return;  // the handle was closed under a pending connect
  if (status < 0) return self->connect_failed("cannot connect", status);
  self->connected();
}

void Client::start_socket_reads() {
  uv::read_start(
      sock(),
      [](uv_handle_t* h, std::size_t, uv_buf_t* b) {
        auto* self = from(h);
        *b = uv_buf_init(self->sock_buf_.data(), static_cast<unsigned>(self->sock_buf_.size()));
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
        auto* self = from(reinterpret_cast<uv_handle_t*>(s));
        if (n > 0) self->on_socket_bytes({b->base, static_cast<std::size_t>(n)});
        else if (n < 0) self->on_socket_closed();
      });
}

void Client::on_socket_bytes(std::string_view bytes) {
  std::string plain;
  if (tls_) {
    auto status = tls_->feed(bytes, plain);
    if (tls_->take_handshake_news() && !tls_pending_.empty()) {
      tls_->encrypt(tls_pending_);
      tls_pending_.clear();
    }
    flush_tls();
    // A failed handshake (a certificate that does not verify) is not retried: it would fail again.
    if (status == roomd::TlsChannel::Status::failed) {
      std::string why = "TLS: " + tls_->error();
      if (why.find("certificate verify failed") != std::string::npos) why += " (is --ca the server's CA?)";
      return lost(why);
    }
    bytes = plain;
    if (status == roomd::TlsChannel::Status::closed) {
      server_framer_.feed(bytes, [this](std::string_view line) { on_server_line(line); }, [] {});
      if (!finished_ && online_) on_socket_closed();
      return;
    }
  }
  server_framer_.feed(bytes, [this](std::string_view line) { on_server_line(line); }, [] {});
}

void Client::flush_tls() {
  if (tls_ && tls_->has_output()) write_socket(tls_->take_output());
}

// EOF or an error on the socket: the end, or (--reconnect) the start of a retry.
void Client::on_socket_closed() {
  if (bye_acked_) {  // the server answered our bye: a normal end
    exit_code_ = 0;
    return close_all();
  }
  std::string why = closed_reason_.empty() ? "connection closed by server" : closed_reason_;
  // Not retried: without --reconnect, before any welcome, after our own bye or stdin's end,
  // or when an operator kicked us.
  if (!reconnect_ || !ever_welcomed_ || stdin_done_ || bye_sent_ || closed_reason_ == "kicked") return lost(why);
  if (!welcomed_) {  // a retry that was closed before its welcome (server_full): try again
    online_ = false;
    return schedule_retry();
  }
  connection_lost(why);
}

void Client::connected() {
  online_ = true;
  closed_reason_.clear();
  server_framer_ = roomd::Framer(64 << 20);  // nothing of the last connection's half line
  if (target().tls) {
    tls_ = std::make_unique<roomd::TlsChannel>(tls_context_, target().host);
    tls_pending_.clear();
    tls_->start_handshake();
    flush_tls();
  }
  if (!sock_paused_) start_socket_reads();   // else stdout's drain starts them
  if (stdin_started_) return;
  stdin_started_ = true;
  start_stdin();
  if (!json_) {
    if (!nick_.empty()) on_stdin_line("/nick " + nick_);
    for (const auto& room : rooms_) on_stdin_line("/join " + room);
  }
}

void Client::start_stdin() {
  // stdin: a TTY or a pipe is read by the loop; anything else (a file) the same way via a pipe
  // handle when possible.
  uv_stream_t* stdin_stream = nullptr;  // not in interactive mode, where terminal_ reads
  if (uv_guess_handle(0) == UV_TTY && !json_) {
    // Ctrl-C at the prompt leaves like Ctrl-D: acknowledged lines, bye, a restored terminal.
    // Once: a second Ctrl-C has SIGINT's default effect.
    sigint_.emplace(loop_, SIGINT, [this] {
      sigint_->stop();
      on_stdin_eof();
    });
    terminal_ = std::make_unique<roomcat::Terminal>(loop_, prompt(), [this](std::optional<std::string> line) {
      if (line) on_stdin_line(*line);
      else on_stdin_eof();
    });
  } else switch (uv_guess_handle(0)) {
    case UV_TTY:
      stdin_tty_.emplace([this](uv_tty_t* t) { return uv_tty_init(loop_, t, 0, 1); });
      stdin_stream = stdin_tty_->stream();
      break;
    case UV_FILE:
      // A regular file or /dev/null: epoll cannot watch it, so it is read with uv_fs_read
      // (on libuv's threadpool), one chunk after the other.
      return read_stdin_file();
    default:
      stdin_pipe_.emplace([this](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
      if (uv_pipe_open(stdin_pipe_->get(), 0) < 0) {
        std::fprintf(stderr, "roomcat: stdin must be a terminal or a pipe\n");
        exit_code_ = roomd::kExitUsage;
        return close_all();
      }
      stdin_stream = stdin_pipe_->stream();
  }
  if (stdin_stream) {
    stdin_stream->data = this;
    uv::read_start(
        stdin_stream,
        [](uv_handle_t* h, std::size_t, uv_buf_t* b) {
          auto* self = from(h);
          *b = uv_buf_init(self->stdin_buf_.data(), static_cast<unsigned>(self->stdin_buf_.size()));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          auto* self = from(reinterpret_cast<uv_handle_t*>(s));
          if (n > 0) {
            self->stdin_framer_.feed({b->base, static_cast<std::size_t>(n)},
                                     [self](std::string_view line) { self->on_stdin_line(line); }, [] {});
          } else if (n < 0) {
            uv::check(uv_read_stop(s), "uv_read_stop");
            self->on_stdin_eof();
          }
        });
  }
}

void Client::read_stdin_file() {
  stdin_file_read_.data = this;
  uv_buf_t buf = uv_buf_init(stdin_buf_.data(), static_cast<unsigned>(stdin_buf_.size()));
  int rc = uv_fs_read(loop_, &stdin_file_read_, 0, &buf, 1, -1, [](uv_fs_t* req) {
    auto* self = static_cast<Client*>(req->data);
    const ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (self->finished_) return;
    if (n > 0) {
      self->stdin_framer_.feed({self->stdin_buf_.data(), static_cast<std::size_t>(n)},
                               [self](std::string_view line) { self->on_stdin_line(line); }, [] {});
      if (!self->finished_) self->read_stdin_file();
    } else {
      self->on_stdin_eof();  // end of the file, or a read error
    }
  });
  if (rc < 0) on_stdin_eof();
}

void Client::send_raw(std::string line) {
  if (finished_ || !online_) return;
  if (!tls_) return write_socket(std::move(line));
  if (!tls_->handshake_done()) {
    tls_pending_ += line;
    return;
  }
  tls_->encrypt(line);
  flush_tls();
}

void Client::write_socket(std::string bytes) {
  if (finished_ || !online_) return;
  auto* w = new WriteReq{{}, std::move(bytes), this};
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  if (uv_write(&w->req, sock(), &buf, 1, [](uv_write_t* req, int) { delete static_cast<WriteReq*>(req->data); }) < 0)
    delete w;
}

void Client::send_json(const ordered_json& frame) { send_raw(roomd::encode_json(frame)); }

void Client::on_stdin_line(std::string_view line) {
  if (finished_) return;
  // While disconnected lines wait for the re-join, up to kMaxQueuedOffline of them.
  bool full = offline() && (json_ ? raw_queue_.size() : queued_.size()) >= kMaxQueuedOffline;
  if (json_) {
    if (full) {
      std::fprintf(stderr, "roomcat: line not sent: %zu lines already wait for the connection\n", raw_queue_.size());
      return;
    }
    // Remember the key of a join, to re-join with it.
    auto frame = ordered_json::parse(line, nullptr, false);
    auto op = frame.is_object() ? frame.find("op") : frame.end();
    if (frame.is_object() && op != frame.end() && *op == "join" && frame.contains("room") &&
        frame["room"].is_string()) {
      std::optional<std::string> key;
      if (auto k = frame.find("key"); k != frame.end() && k->is_string()) key = k->get<std::string>();
      std::string room = frame["room"].get<std::string>();
      std::erase_if(join_keys_, [&](const auto& p) { return p.first == room; });
      join_keys_.emplace_back(room, key);
    }
    raw_queue_.push_back(std::string(line) + "\n");
    return flush_raw();
  }
  auto parsed = roomd::parse_text_line(line);
  if (auto* e = std::get_if<roomd::RequestError>(&parsed)) {
    return print("! " + std::string(roomd::to_string(e->code)) + ": " + e->message + "\n");
  }
  auto req = std::get<roomd::Request>(parsed);
  if (req.op == roomd::Op::help) return print(std::string(roomd::text_help()));
  if (req.op == roomd::Op::bye) return on_stdin_eof();
  if (full) return print("! not sent: " + std::to_string(queued_.size()) + " lines already wait for the connection\n");
  if (req.current_room) {
    if (current_room_.empty()) return print("! not_member: join a room first (/join ROOM)\n");
    req.room = current_room_;
  }
  if (req.op == roomd::Op::join) {
    current_room_ = req.room;
    std::erase_if(join_keys_, [&](const auto& p) { return p.first == req.room; });
    join_keys_.emplace_back(req.room, req.key);
  }
  if (req.op == roomd::Op::leave && req.room == current_room_) current_room_.clear();
  if (terminal_) terminal_->set_prompt(prompt());
  queue_request(std::move(req));
}

void Client::flush_raw() {
  if (!ready()) return;
  while (!raw_queue_.empty()) {
    send_raw(std::move(raw_queue_.front()));
    raw_queue_.pop_front();
  }
  if (stdin_done_ && !bye_sent_) {
    bye_sent_ = true;
    send_json({{"op", "bye"}});
  }
}

void Client::queue_request(roomd::Request req) {
  std::uint64_t id = next_id_++;
  req.id = id;
  if (req.op == roomd::Op::say) req.msg_id = msg_id_prefix_ + std::to_string(next_msg_id_++);
  unanswered_.insert(id);
  queued_.push_back(std::move(req));
  send_queued();
}

void Client::send_queued() {
  if (!ready() || finished_) return;  // the welcome carries the limits to pace by
  while (!queued_.empty()) {
    const roomd::Request& next = queued_.front();
    bool limited = next.op == roomd::Op::say || next.op == roomd::Op::whisper;
    if (limited && paced_window_ && paced_in_flight_.size() >= paced_window_) return;  // an answer resumes
    if (limited && bucket_ && !bucket_->try_take(uv_now(loop_))) {
      if (!pace_timer_active_) {
        pace_timer_->start(static_cast<std::uint64_t>(1000.0 / rate_) + 1, 0);
        pace_timer_active_ = true;
      }
      return;
    }
    if (limited && next.id && next.id->is_number_unsigned()) paced_in_flight_.insert(next.id->get<std::uint64_t>());
    send_json(roomd::request_json(next));
    if (next.op == roomd::Op::say) sent_says_.push_back(next);
    queued_.pop_front();
  }
}

Client::Room* Client::find_room(const std::string& room) {
  auto it = std::find_if(joined_.begin(), joined_.end(), [&](const Room& r) { return r.name == room; });
  return it == joined_.end() ? nullptr : &*it;
}

void Client::forget_room(const std::string& room) {
  std::erase_if(joined_, [&](const Room& r) { return r.name == room; });
}

// What roomcat must know to reconnect, from every frame, in both modes: the nick, the rooms
// it is in with their keys, and per room the last seq and the epoch.
void Client::track(const ordered_json& frame, const std::string& op) {
  auto seq_of = [](const ordered_json& f) -> std::optional<std::uint64_t> {
    auto it = f.find("seq");
    if (it == f.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<std::uint64_t>();
  };
  const std::string room = frame.value("room", "");
  if (op == "message") {
    if (Room* r = find_room(room); r && seq_of(frame)) r->seq = seq_of(frame);
  } else if (op == "joined") {
    Room* r = find_room(room);
    if (!r) {
      joined_.push_back(Room{room, std::nullopt, std::nullopt, std::nullopt});
      r = &joined_.back();
    }
    if (auto k = std::find_if(join_keys_.begin(), join_keys_.end(), [&](const auto& p) { return p.first == room; });
        k != join_keys_.end())
      r->key = k->second;
    // The room's last seq; a server without it: the newest message replayed.
    r->seq = seq_of(frame);
    if (auto h = frame.find("history"); !r->seq && h != frame.end() && h->is_array() && !h->empty())
      r->seq = seq_of(h->back());
    if (auto e = frame.find("epoch"); e != frame.end() && e->is_string()) r->epoch = e->get<std::string>();
    else r->epoch.reset();
  } else if (op == "left") {
    forget_room(room);
  } else if (op == "system" && frame.value("event", "") == "reload" && !room.empty()) {
    forget_room(room);
  } else if (op == "ok" && frame.contains("nick") && frame["nick"].is_string()) {
    own_nick_ = frame["nick"].get<std::string>();
  }
}

void Client::on_server_line(std::string_view line) {
  auto frame = ordered_json::parse(line, nullptr, false);
  if (frame.is_discarded() || !frame.is_object()) return print(std::string(line) + "\n");
  const std::string op = frame.value("op", "");
  // What ends the connection decides the exit status: our bye answered is a normal end.
  if (op == "bye") bye_acked_ = true;
  if (op == "system" && (frame.value("event", "") == "shutdown" || frame.value("event", "") == "kicked"))
    closed_reason_ = frame.value("event", "");
  if (op == "system" && frame.value("event", "") == "lame_duck" && on_lame_duck(frame) && !json_) return;
  if (op == "error" && frame.value("code", "") == "slow_consumer") closed_reason_ = "slow_consumer";
  if (auto it = frame.find("id"); rejoining_ && it != frame.end() && it->is_string()) {
    if (on_rejoin_reply(it->get<std::string>(), frame, op)) {
      if (json_) print(std::string(line) + "\n");
      if (rejoin_pending_ == 0) finish_rejoin();
      return;
    }
  }
  track(frame, op);
  if (auto it = frame.find("id"); it != frame.end() && it->is_number_unsigned() &&
                                  paced_in_flight_.erase(it->get<std::uint64_t>()))
    send_queued();
  if (op == "welcome") on_welcome(frame);
  if (json_) return print(std::string(line) + "\n");
  if (op == "welcome") return;
  if (auto it = frame.find("id"); it != frame.end() && it->is_number_unsigned()) {
    const std::uint64_t id = it->get<std::uint64_t>();
    unanswered_.erase(id);
    resend_ids_.erase(id);
    std::erase_if(sent_says_, [&](const roomd::Request& r) { return r.id && *r.id == id; });
    if (moving_ && in_flight() == 0) move_timer_->start(0, 0);  // moves outside this read
    if (op == "ok" && frame.contains("seq")) return maybe_finish();  // our own message is shown already
  }
  if (op == "ping") return send_json({{"op", "ping"}});  // any line keeps us alive
  if (op == "pong" && !frame.contains("id")) return;
  print(roomd::render_text(frame));
  maybe_finish();
}

void Client::on_welcome(const ordered_json& frame) {
  // Pace ourselves a little under the advertised limit: a refused line would be lost.
  // The server's figures are read as numbers within sane bounds: a frame of another shape
  // must not stop roomcat (a number of another type throws, a huge one does not fit a size_t).
  auto number = [](const ordered_json& limits, const char* key, double fallback) {
    auto it = limits.find(key);
    return it != limits.end() && it->is_number() ? std::clamp(it->get<double>(), 0.0, 1e9) : fallback;  // roomd's own bounds
  };
  if (auto limits = frame.find("limits"); limits != frame.end() && limits->is_object() && limits->contains("rate")) {
    rate_ = std::max(0.001, number(*limits, "rate", 50.0)) * 0.95;
    double advertised_burst = std::max(2.0, number(*limits, "burst", 100.0));
    paced_window_ = static_cast<std::size_t>(advertised_burst / 2);
    double burst = std::max(1.0, advertised_burst - static_cast<double>(paced_window_));
    bucket_ = std::make_unique<roomd::TokenBucket>(rate_, burst, uv_now(loop_));
  }
  guest_nick_ = frame.value("nick", "");
  welcomed_ = true;
  ever_welcomed_ = true;
  if (reconnecting_) {
    reconnecting_ = false;
    return begin_rejoin();
  }
  if (json_) return flush_raw();
  send_queued();
  maybe_finish();
}

// The lost line: said once per loss, then attempts follow silently until one is welcomed.
// After a lame_duck the loss was announced: the next server is tried at the time the old one
// named, and only requests lost in flight are worth a line.
void Client::connection_lost(const std::string& why) {
  online_ = false;
  welcomed_ = false;
  reconnecting_ = true;
  moving_ = false;
  move_timer_->stop();
  std::optional<std::uint64_t> announced = std::exchange(lame_duck_at_, std::nullopt);
  if (rejoining_) {  // lost again before the round was done: show what it printed
    rejoining_ = false;
    print_now(std::move(rejoin_out_));
    rejoin_out_.clear();
  }
  rejoin_.clear();
  rejoin_pending_ = 0;
  nick_timer_->stop();
  paced_in_flight_.clear();
  // Says that went out and were not answered go out again after the re-join, before anything
  // typed since, in their order and with their msg_id: one that reached the room is answered
  // `duplicate` and not published again (and the replay shows it, once).
  const std::size_t resent = sent_says_.size();
  for (; !sent_says_.empty(); sent_says_.pop_back()) {
    if (sent_says_.back().id && sent_says_.back().id->is_number_unsigned())
      resend_ids_.insert(sent_says_.back().id->get<std::uint64_t>());
    queued_.push_front(std::move(sent_says_.back()));
  }
  // Other requests that went out and were not answered went with the connection.
  std::set<std::uint64_t> waiting;
  for (const auto& r : queued_)
    if (r.id && r.id->is_number_unsigned()) waiting.insert(r.id->get<std::uint64_t>());
  std::size_t unanswered = 0;
  for (auto it = unanswered_.begin(); it != unanswered_.end();) {
    if (waiting.contains(*it)) {
      ++it;
    } else {
      it = unanswered_.erase(it);
      ++unanswered;
    }
  }
  std::string requests;
  if (resent > 0)
    requests = std::to_string(resent) + (resent == 1 ? " say" : " says") + " unanswered, to be sent again";
  if (unanswered > 0)
    requests += (requests.empty() ? "" : "; ") + std::to_string(unanswered) +
                (unanswered == 1 ? " request" : " requests") + " unanswered, maybe not delivered";
  if (announced && why != "shutdown") {
    if (!requests.empty()) notice("the draining server closed the connection (" + requests + "); moving");
    const std::uint64_t now = uv_now(loop_);
    return schedule_retry(*announced > now ? *announced - now : 0);
  }
  std::string text = "connection lost (" + (why == "shutdown" ? std::string("server shut down") : why) +
                     "); reconnecting";
  if (!requests.empty()) text += " (" + requests + ")";
  notice(text);
  schedule_retry();
}

// The next attempt, at the next target: after `delay_ms`, or after the backoff's.
void Client::schedule_retry(std::optional<std::uint64_t> delay_ms) {
  tls_.reset();
  tcp_.reset();
  pipe_.reset();
  next_target();
  std::uint64_t delay = delay_ms.value_or(backoff_ms_ / 2 + rng_() % (backoff_ms_ / 2 + 1));  // jitter: [b/2, b]
  if (!delay_ms) backoff_ms_ = std::min(backoff_ms_ * 2, kBackoffMaxMs);
  retry_timer_->start(delay, 0);
}

// system lame_duck: the server drains for a restart and will close this connection in
// reconnect_ms. With --reconnect roomcat leaves then for the next target by itself, once what
// it sent is answered (whichever of the two ends comes first, the next attempt is at that time).
// Returns whether roomcat will move (and said so).
bool Client::on_lame_duck(const ordered_json& frame) {
  std::uint64_t in_ms = 0;
  if (auto it = frame.find("reconnect_ms"); it != frame.end() && it->is_number_unsigned()) in_ms = it->get<std::uint64_t>();
  closed_reason_ = "lame_duck";
  if (!reconnect_ || stdin_done_ || bye_sent_) return false;  // the server's close ends it
  lame_duck_at_ = uv_now(loop_) + in_ms;
  move_timer_->start(in_ms, 0);
  if (!json_) {  // instead of the server's own line, which tells a person to connect again
    const std::string next = targets_.size() > 1 ? "moving to " + targets_[(current_ + 1) % targets_.size()].text
                                                 : std::string("reconnecting");
    notice("the server is draining for a restart (lame duck); " + next + " in about " +
           std::to_string((in_ms + 999) / 1000) + " s");
  }
  return true;
}

// Requests sent and not answered yet (those still queued here are not in flight).
std::size_t Client::in_flight() const {
  std::size_t queued = 0;
  for (const auto& r : queued_)
    if (r.id && r.id->is_number_unsigned() && unanswered_.contains(r.id->get<std::uint64_t>())) ++queued;
  return unanswered_.size() - queued;
}

// Time to move (moving_): once nothing is in flight, close and go to the next target now. The
// server closes us at about this time anyway; either way connection_lost goes on.
void Client::move_when_idle() {
  if (finished_ || !moving_ || !online_) return;
  if (!json_ && in_flight() > 0) return;  // each reply checks again
  connection_lost("moving");
}

// The re-join round: the nick back, then each room with since = its last seq and its epoch.
// Its replies carry roomcat's own ids; the round ends when each has come back.
void Client::begin_rejoin() {
  rejoining_ = true;
  nick_retry_until_ = uv_now(loop_) + kNickRetryForMs;
  rejoin_.clear();
  rejoin_nick_note_.clear();
  rejoin_out_.clear();
  auto own_id = [this] { return std::string(kOwnIdPrefix) + std::to_string(next_own_id_++); };
  if (!own_nick_.empty() && own_nick_ != guest_nick_) {
    rejoin_.push_back({own_id(), "", ""});
    send_json({{"op", "nick"}, {"id", rejoin_.back().id}, {"nick", own_nick_}});
  }
  for (const Room& r : joined_) {
    rejoin_.push_back({own_id(), r.name, ""});
    ordered_json join{{"op", "join"}, {"id", rejoin_.back().id}, {"room", r.name}};
    if (r.key) join["key"] = *r.key;
    if (r.seq) join["since"] = *r.seq;
    if (r.seq && r.epoch) join["epoch"] = *r.epoch;
    send_json(join);
  }
  rejoin_pending_ = rejoin_.size();
  if (rejoin_pending_ == 0) finish_rejoin();
}

// A reply of the round (false: not one of ours). In text mode a room's replayed messages print
// as messages, minus those seen before the loss; the round's line says what was missed.
bool Client::on_rejoin_reply(const std::string& id, const ordered_json& frame, const std::string& op) {
  auto it = std::find_if(rejoin_.begin(), rejoin_.end(), [&](const Rejoin& r) { return r.id == id; });
  if (it == rejoin_.end() || op == "message") return false;
  const bool failed = op == "error";
  if (it->room.empty() && failed && frame.value("code", "") == "nick_taken" && !resend_ids_.empty() &&
      uv_now(loop_) < nick_retry_until_) {
    // Says wait to be sent again, and their msg_ids count under this nick only: the holder may
    // be our own old connection (a killed node keeps its nicks until the others sweep it).
    nick_timer_->start(kNickRetryMs, 0);
    return true;
  }
  --rejoin_pending_;
  const std::string why = failed ? frame.value("code", "") + ": " + frame.value("message", "") : "";
  if (it->room.empty()) {  // the nick
    if (failed) {
      rejoin_nick_note_ = frame.value("code", "") == "nick_taken" ? "nick " + own_nick_ + " is taken"
                                                                 : "nick " + own_nick_ + " refused: " + why;
      own_nick_.clear();  // keep the guest nick: no second try at the next reconnect
    } else {
      track(frame, op);
    }
    return true;
  }
  if (failed || op != "joined") {
    it->note = it->room + ": could not re-join (" + why + ")";
    forget_room(it->room);
    if (it->room == current_room_) {
      current_room_.clear();
      if (terminal_) terminal_->set_prompt(prompt());
    }
    return true;
  }
  Room* r = find_room(it->room);
  const bool have_last = r && r->seq;
  const std::uint64_t last = have_last ? *r->seq : 0;
  std::optional<std::string> epoch = r ? r->epoch : std::nullopt;
  const auto* history = frame.contains("history") && frame["history"].is_array() ? &frame["history"] : nullptr;
  auto e = frame.find("epoch");
  // Seqs compare only within one epoch: a room that started again counts from 1.
  bool same_room = epoch && e != frame.end() && e->is_string() && e->get<std::string>() == *epoch;
  std::size_t shown = 0;
  if (history) {
    for (const auto& m : *history) {
      auto s = m.find("seq");
      if (same_room && have_last && s != m.end() && s->is_number_unsigned() && s->get<std::uint64_t>() <= last)
        continue;
      ++shown;
      if (json_) continue;
      ordered_json msg = m;
      msg["op"] = "message";
      print(roomd::render_text(msg));
    }
  }
  bool resumed = frame.value("resumed", false);
  if (resumed)
    it->note = it->room + ": resumed, " +
               (shown == 0 ? std::string("nothing missed")
                           : std::to_string(shown) + (shown == 1 ? " missed message" : " missed messages") + " replayed");
  else
    it->note = it->room + ": messages may have been missed";
  track(frame, op);
  return true;
}

// The re-join round's nick, asked again (a nick_taken with says to send again).
void Client::retry_nick() {
  if (finished_ || !rejoining_ || !online_) return;
  auto it = std::find_if(rejoin_.begin(), rejoin_.end(), [](const Rejoin& r) { return r.room.empty(); });
  if (it == rejoin_.end()) return;
  it->id = std::string(kOwnIdPrefix) + std::to_string(next_own_id_++);
  send_json({{"op", "nick"}, {"id", it->id}, {"nick", own_nick_}});
}

void Client::finish_rejoin() {
  rejoining_ = false;
  backoff_ms_ = kBackoffMinMs;
  // With several servers the line names the one reached.
  std::string text = "reconnected " + (targets_.size() > 1 ? "to " + target().text + " " : std::string()) + "as " +
                     (own_nick_.empty() ? guest_nick_ : own_nick_);
  if (!rejoin_nick_note_.empty()) text += " (" + rejoin_nick_note_ + ")";
  for (const auto& r : rejoin_)
    if (!r.note.empty()) text += "; " + r.note;
  rejoin_.clear();
  notice(text);
  print_now(std::move(rejoin_out_));
  rejoin_out_.clear();
  if (json_) return flush_raw();
  send_queued();
  maybe_finish();
}

void Client::on_stdin_eof() {
  if (finished_ || stdin_done_) return;
  stdin_done_ = true;
  if (terminal_) terminal_->stop();
  if (reconnecting_) {  // no connection to finish on
    std::size_t unsent = json_ ? raw_queue_.size() : queued_.size();
    std::fprintf(stderr, "roomcat: end of input while disconnected; %zu line%s not sent\n", unsent,
                 unsent == 1 ? "" : "s");
    exit_code_ = kExitLost;
    return close_all();
  }
  if (json_) return flush_raw();
  maybe_finish();
}

void Client::maybe_finish() {
  if (!stdin_done_ || bye_sent_ || !ready() || !unanswered_.empty() || !queued_.empty()) return;
  bye_sent_ = true;
  send_json({{"op", "bye"}});
}

// One line about the connection: among the human lines in text mode, on stderr with --json
// (whose stdout holds protocol lines only).
void Client::notice(const std::string& text) {
  if (json_) {
    std::fprintf(stderr, "roomcat: %s\n", text.c_str());
    return;
  }
  print_now("* " + text + "\n");
}

// During a re-join round, text mode holds what it prints until the round's line is out.
void Client::print(std::string text) {
  if (rejoining_ && !json_) {
    rejoin_out_ += text;
    return;
  }
  print_now(std::move(text));
}

void Client::print_now(std::string text) {
  if (text.empty()) return;
  if (terminal_) return terminal_->print(text);
  if (!stdout_pipe_) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return;
  }
  stdout_pending_ += text.size();
  auto* w = new WriteReq{{}, std::move(text), this};
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  int rc = uv_write(&w->req, stdout_pipe_->stream(), &buf, 1, [](uv_write_t* req, int) {
    auto* w = static_cast<WriteReq*>(req->data);
    Client* self = w->client;
    self->stdout_pending_ -= w->data.size();
    if (self->sock_paused_ && self->stdout_pending_ < kStdoutHighWater / 2 && !self->finished_) {
      self->sock_paused_ = false;
      if (self->online_) self->start_socket_reads();  // else the next connection starts them
    }
    delete w;
  });
  if (rc < 0) {  // stdout cannot take a write at all (a failed one comes to the callback): the text is lost
    stdout_pending_ -= w->data.size();
    delete w;
    return;
  }
  if (stdout_pending_ > kStdoutHighWater && !sock_paused_) {
    sock_paused_ = true;
    if (online_) uv::check(uv_read_stop(sock()), "uv_read_stop");
  }
}

void Client::lost(const std::string& why) {
  std::string text = why == "shutdown"    ? "server shut down"
                     : why == "lame_duck" ? "server went away (lame duck: it drains for a restart)"
                                          : why;
  std::fprintf(stderr, "roomcat: %s\n", text.c_str());
  exit_code_ = kExitLost;
  close_all();
}

// Closes every handle, which lets the loop end. Handle::reset only starts uv_close; libuv
// frees each handle from its close callback, after cancelling its pending writes (whose
// callbacks see finished_) and a pending connect (whose callback sees finished_). A lookup
// still running finishes on its own; its callback sees finished_ too.
void Client::close_all() {
  if (finished_) return;
  finished_ = true;
  online_ = false;
  if (terminal_) terminal_->stop();
  sigint_.reset();
  pace_timer_.reset();
  retry_timer_.reset();
  nick_timer_.reset();
  move_timer_.reset();
  stdin_tty_.reset();
  stdin_pipe_.reset();
  stdout_pipe_.reset();
  tcp_.reset();
  pipe_.reset();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"roomcat: talk to a roomd server"};
  std::vector<std::string> target_texts;
  std::string nick, ca, cert, key;
  std::vector<std::string> rooms;
  bool json = false, reconnect = false, version = false;
  app.add_option("target", target_texts,
                 "HOST:PORT, [V6]:PORT, tls://HOST:PORT or unix:PATH (default 127.0.0.1:7000); several (the nodes of "
                 "a cluster): the first is used, and each reconnect goes to the next");
  app.add_option("--ca", ca, "tls://: the CA bundle to verify the server against (default: the system's)");
  app.add_option("--cert", cert, "tls://: a client certificate (PEM), with --key");
  app.add_option("--key", key, "tls://: the client certificate's key (PEM)");
  app.add_option("--nick", nick, "nick to take");
  app.add_option("--join", rooms, "room to join (repeatable; the last is the current room)");
  app.add_flag("--json", json, "raw protocol lines both ways");
  app.add_flag("--reconnect", reconnect,
               "on a lost connection retry with backoff (at the next target), re-join and resume each room; on a "
               "server's lame_duck, move to the next target at the time it names");
  app.add_flag("--version", version, "print the version");
  if (auto status = roomd::parse_command_line(app, argc, argv)) return *status;
  if (version) {
    std::printf("roomcat %s\n", ROOMD_VERSION);
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  if (target_texts.empty()) target_texts.push_back("127.0.0.1:7000");
  std::vector<Target> targets;
  bool any_tls = false;
  for (const auto& text : target_texts) {
    auto t = parse_target(text);
    if (!t) {
      std::fprintf(stderr, "roomcat: bad target '%s' (want HOST:PORT, [V6]:PORT, tls://HOST:PORT or unix:PATH)\n",
                   text.c_str());
      return roomd::kExitUsage;
    }
    any_tls = any_tls || t->tls;
    targets.push_back(std::move(*t));
  }
  std::shared_ptr<roomd::TlsContext> tls;
  if (any_tls) {
    if (cert.empty() != key.empty()) {
      std::fprintf(stderr, "roomcat: --cert and --key go together\n");
      return roomd::kExitUsage;
    }
    auto loaded = roomd::TlsContext::load(roomd::TlsContext::Side::client, {.cert = cert, .key = key, .ca = ca});
    if (auto* why = std::get_if<std::string>(&loaded)) {
      std::fprintf(stderr, "roomcat: TLS: %s\n", why->c_str());
      return roomd::kExitUsage;
    }
    tls = std::get<std::shared_ptr<roomd::TlsContext>>(std::move(loaded));
  } else if (!ca.empty() || !cert.empty() || !key.empty()) {
    std::fprintf(stderr, "roomcat: --ca, --cert and --key are for tls:// targets\n");
    return roomd::kExitUsage;
  }
  try {
    uv_loop_t* loop = uv_default_loop();
    if (!loop) throw std::runtime_error("cannot create the event loop");
    int rc;
    {
      Client client(loop, json, reconnect, nick, rooms);
      if (tls) client.use_tls(tls);
      rc = client.run(std::move(targets));
    }
    // Handles the client still held (run() returned before its loop) have started closing:
    // their close callbacks free them here.
    uv_run(loop, UV_RUN_DEFAULT);
    uv::check(uv_loop_close(loop), "uv_loop_close");
    return rc;
  } catch (const std::exception& e) {  // a libuv call that must not fail did
    std::fprintf(stderr, "roomcat: %s\n", e.what());
    return kExitLost;
  }
}
