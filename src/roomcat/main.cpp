// roomcat: the bundled client. One libuv loop reads stdin and the socket together, so a
// server that goes away is noticed at once, even in the middle of a line the user types.
//
// Modes: --json passes protocol lines both ways; otherwise each stdin line is a slash
// command or a `say` in the current room, sent as JSON with an id, and server frames are
// shown as human lines. At stdin's EOF roomcat waits until every id it sent is answered,
// says bye, and exits 0 when the server closes.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "roomd/app/cli.hpp"
#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/framer.hpp"
#include "roomd/base/names.hpp"
#include "roomd/base/rate_limiter.hpp"
#include "roomd/base/uv.hpp"
#include "roomd_build_config.hpp"
#include "terminal.hpp"

namespace {

using roomd::ordered_json;
namespace uv = roomd::uv;

constexpr int kExitLost = 1;
constexpr std::size_t kStdoutHighWater = 1 << 20;  // pause the socket above this much unprinted

class Client {
 public:
  Client(uv_loop_t* loop, bool json, std::string nick, std::vector<std::string> rooms)
      : loop_(loop), json_(json), nick_(std::move(nick)), rooms_(std::move(rooms)) {}

  int run(const std::string& target);

 private:
  static Client* from(uv_handle_t* h) { return static_cast<Client*>(h->data); }
  uv_stream_t* sock() { return pipe_ ? pipe_->stream() : tcp_->stream(); }

  void connected();
  void start_socket_reads();
  static void on_connected(uv_connect_t* req, int status);
  void on_server_line(std::string_view line);
  void on_stdin_line(std::string_view line);
  void on_stdin_eof();
  void send_json(const ordered_json& frame);
  void send_raw(std::string line);
  void maybe_finish();
  void print(std::string text);
  void queue_request(roomd::Request request);
  void send_queued();
  std::string prompt() const { return current_room_.empty() ? "> " : "[" + current_room_ + "]> "; }
  void lost(const std::string& why);
  void close_all();

  uv_loop_t* loop_;
  bool json_;
  std::string nick_;
  std::vector<std::string> rooms_;
  std::string current_room_;
  bool is_unix_ = false;
  // Every handle is owned here (or by terminal_) and closed by close_all(), which ends the
  // loop: nothing is left open when run() returns, except after its early return.
  std::optional<uv::Handle<uv_tcp_t>> tcp_;  // the socket: one of these two
  std::optional<uv::Handle<uv_pipe_t>> pipe_;
  uv_connect_t connect_req_{};
  uv_getaddrinfo_t resolve_req_{};
  std::optional<uv::Handle<uv_pipe_t>> stdin_pipe_;  // stdin outside interactive mode: one of these two
  std::optional<uv::Handle<uv_tty_t>> stdin_tty_;
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
  bool welcomed_ = false;
  std::optional<uv::Timer> pace_timer_;
  bool pace_timer_active_ = false;  // a one-shot: started and not yet fired
  std::optional<uv::Signal> sigint_;
  std::vector<char> sock_buf_ = std::vector<char>(64 * 1024);
  std::vector<char> stdin_buf_ = std::vector<char>(64 * 1024);
};

struct WriteReq {
  uv_write_t req;
  std::string data;
  Client* client;
};

int Client::run(const std::string& target) {
  auto addr = roomd::parse_listen_address(target);
  std::string host, port;
  if (target.starts_with("unix:")) {
    is_unix_ = true;
  } else if (!addr) {
    // A host name: HOST:PORT, resolved by the loop.
    auto colon = target.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      std::fprintf(stderr, "roomcat: bad target '%s' (want HOST:PORT, [V6]:PORT or unix:PATH)\n", target.c_str());
      return roomd::kExitUsage;
    }
    host = target.substr(0, colon);
    port = target.substr(colon + 1);
  } else {
    host = addr->host;
    port = std::to_string(addr->port);
  }
  connect_req_.data = this;
  if (is_unix_) {
    pipe_.emplace([this](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
    pipe_->get()->data = this;
    // void: a failure reaches on_connected
    uv_pipe_connect(&connect_req_, pipe_->get(), target.substr(5).c_str(), on_connected);
  } else {
    tcp_.emplace([this](uv_tcp_t* t) { return uv_tcp_init(loop_, t); });
    tcp_->get()->data = this;
    resolve_req_.data = this;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(
        loop_, &resolve_req_,
        [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
          auto* self = static_cast<Client*>(req->data);
          if (status < 0) {
            std::fprintf(stderr, "roomcat: cannot resolve host: %s\n", uv_strerror(status));
            self->exit_code_ = kExitLost;
            self->close_all();
          } else if (int rc = uv_tcp_connect(&self->connect_req_, self->tcp_->get(), res->ai_addr, on_connected);
                     rc < 0) {
            // Refused and the like come to on_connected; this is a connect that could not
            // even start (no route, no address family, no socket).
            std::fprintf(stderr, "roomcat: cannot connect: %s\n", uv_strerror(rc));
            self->exit_code_ = kExitLost;
            self->close_all();
          }
          uv_freeaddrinfo(res);
        },
        host.c_str(), port.c_str(), &hints);
    if (rc < 0) {
      std::fprintf(stderr, "roomcat: cannot resolve host: %s\n", uv_strerror(rc));
      return kExitLost;
    }
  }
  pace_timer_.emplace(loop_, [this] {
    pace_timer_active_ = false;
    send_queued();
  });
  bool interactive = uv_guess_handle(0) == UV_TTY && !json_;
  if (!interactive && (uv_guess_handle(1) == UV_NAMED_PIPE || uv_guess_handle(1) == UV_TTY)) {
    // Asynchronous stdout, so a slow terminal or reader applies backpressure to the socket.
    // A stdout the pipe cannot open is written synchronously instead.
    stdout_pipe_.emplace([this](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
    if (uv_pipe_open(stdout_pipe_->get(), 1) < 0) stdout_pipe_.reset();
  }
  uv_run(loop_, UV_RUN_DEFAULT);  // until close_all() has closed every handle; returns no error
  return exit_code_;
}

void Client::on_connected(uv_connect_t* req, int status) {
  auto* self = static_cast<Client*>(req->data);
  if (status < 0) {
    std::fprintf(stderr, "roomcat: cannot connect: %s\n", uv_strerror(status));
    self->exit_code_ = kExitLost;
    return self->close_all();
  }
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
        if (n > 0) {
          self->server_framer_.feed({b->base, static_cast<std::size_t>(n)},
                                    [self](std::string_view line) { self->on_server_line(line); }, [] {});
        } else if (n < 0) {
          if (self->bye_acked_) {  // the server answered our bye: a normal end
            self->exit_code_ = 0;
            return self->close_all();
          }
          self->lost(self->closed_reason_.empty() ? "connection closed by server" : self->closed_reason_);
        }
      });
}

void Client::connected() {
  start_socket_reads();
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
  if (!json_) {
    if (!nick_.empty()) on_stdin_line("/nick " + nick_);
    for (const auto& room : rooms_) on_stdin_line("/join " + room);
  }
}

void Client::send_raw(std::string line) {
  if (finished_) return;
  auto* w = new WriteReq{{}, std::move(line), this};
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  if (uv_write(&w->req, sock(), &buf, 1, [](uv_write_t* req, int) { delete static_cast<WriteReq*>(req->data); }) < 0)
    delete w;
}

void Client::send_json(const ordered_json& frame) { send_raw(roomd::encode_json(frame)); }

void Client::on_stdin_line(std::string_view line) {
  if (json_) return send_raw(std::string(line) + "\n");
  auto parsed = roomd::parse_text_line(line);
  if (auto* e = std::get_if<roomd::RequestError>(&parsed)) {
    return print("! " + std::string(roomd::to_string(e->code)) + ": " + e->message + "\n");
  }
  auto req = std::get<roomd::Request>(parsed);
  if (req.op == roomd::Op::help) return print(std::string(roomd::text_help()));
  if (req.op == roomd::Op::bye) return on_stdin_eof();
  if (req.current_room) {
    if (current_room_.empty()) return print("! not_member: join a room first (/join ROOM)\n");
    req.room = current_room_;
  }
  if (req.op == roomd::Op::join) current_room_ = req.room;
  if (req.op == roomd::Op::leave && req.room == current_room_) current_room_.clear();
  if (terminal_) terminal_->set_prompt(prompt());
  queue_request(std::move(req));
}

void Client::queue_request(roomd::Request req) {
  std::uint64_t id = next_id_++;
  req.id = id;
  unanswered_.insert(id);
  queued_.push_back(std::move(req));
  send_queued();
}

void Client::send_queued() {
  if (!welcomed_ || finished_) return;  // the welcome carries the limits to pace by
  while (!queued_.empty()) {
    const roomd::Request& next = queued_.front();
    bool limited = next.op == roomd::Op::say || next.op == roomd::Op::whisper;
    if (limited && bucket_ && !bucket_->try_take(uv_now(loop_))) {
      if (!pace_timer_active_) {
        pace_timer_->start(static_cast<std::uint64_t>(1000.0 / rate_) + 1, 0);
        pace_timer_active_ = true;
      }
      return;
    }
    send_json(roomd::request_json(next));
    queued_.pop_front();
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
  if (op == "error" && frame.value("code", "") == "slow_consumer") closed_reason_ = "slow_consumer";
  if (json_) return print(std::string(line) + "\n");
  if (auto it = frame.find("id"); it != frame.end() && it->is_number_unsigned()) {
    unanswered_.erase(it->get<std::uint64_t>());
    if (op == "ok" && frame.contains("seq")) return maybe_finish();  // our own message is shown already
  }
  if (op == "ping") return send_json({{"op", "ping"}});  // any line keeps us alive
  if (op == "pong" && !frame.contains("id")) return;
  if (op == "welcome") {
    // Pace ourselves a little under the advertised limit: a refused line would be lost.
    if (auto limits = frame.find("limits"); limits != frame.end() && limits->contains("rate")) {
      rate_ = (*limits)["rate"].get<double>() * 0.95;
      double burst = std::max(1.0, (*limits)["burst"].get<double>() - 1);
      bucket_ = std::make_unique<roomd::TokenBucket>(rate_, burst, uv_now(loop_));
    }
    welcomed_ = true;
    return send_queued();
  }
  print(roomd::render_text(frame));
  maybe_finish();
}

void Client::on_stdin_eof() {
  stdin_done_ = true;
  if (terminal_) terminal_->stop();
  if (json_) {
    bye_sent_ = true;
    return send_json({{"op", "bye"}});
  }
  maybe_finish();
}

void Client::maybe_finish() {
  if (!stdin_done_ || bye_sent_ || !unanswered_.empty() || !queued_.empty()) return;
  bye_sent_ = true;
  send_json({{"op", "bye"}});
}

void Client::print(std::string text) {
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
      self->start_socket_reads();
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
    uv::check(uv_read_stop(sock()), "uv_read_stop");
  }
}

void Client::lost(const std::string& why) {
  std::fprintf(stderr, "roomcat: %s\n", why == "shutdown" ? "server shut down" : why.c_str());
  exit_code_ = kExitLost;
  close_all();
}

// Closes every handle, which lets the loop end. Handle::reset only starts uv_close; libuv
// frees each handle from its close callback, after cancelling its pending writes (whose
// callbacks see finished_).
void Client::close_all() {
  if (finished_) return;
  finished_ = true;
  if (terminal_) terminal_->stop();
  sigint_.reset();
  pace_timer_.reset();
  stdin_tty_.reset();
  stdin_pipe_.reset();
  stdout_pipe_.reset();
  tcp_.reset();
  pipe_.reset();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"roomcat: talk to a roomd server"};
  std::string target = "127.0.0.1:7000", nick;
  std::vector<std::string> rooms;
  bool json = false, version = false;
  app.add_option("target", target, "HOST:PORT, [V6]:PORT or unix:PATH (default 127.0.0.1:7000)");
  app.add_option("--nick", nick, "nick to take");
  app.add_option("--join", rooms, "room to join (repeatable; the last is the current room)");
  app.add_flag("--json", json, "raw protocol lines both ways");
  app.add_flag("--version", version, "print the version");
  if (auto status = roomd::parse_command_line(app, argc, argv)) return *status;
  if (version) {
    std::printf("roomcat %s\n", ROOMD_VERSION);
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  try {
    uv_loop_t* loop = uv_default_loop();
    if (!loop) throw std::runtime_error("cannot create the event loop");
    int rc;
    {
      Client client(loop, json, nick, rooms);
      rc = client.run(target);
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
