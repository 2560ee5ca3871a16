// Connection: framing in, batched writes out, flow control and closing. See connection.hpp.
#include "roomd/net/connection.hpp"

#include <algorithm>

#include "roomd/protocol/codec.hpp"
#include "roomd/base/log.hpp"
#include "roomd/app/server.hpp"

namespace roomd {

namespace {
constexpr std::size_t kMaxIov = 1024;            // buffers per write call (IOV_MAX)
constexpr std::uint64_t kDrainDeadlineMs = 5000;  // a closing client gets this long to read
constexpr std::uint64_t kLingerMs = 2000;         // and this long after our FIN to send its own
}  // namespace

Connection::Connection(Server& server, std::uint64_t id, Transport transport)
    : server_(server), id_(id), framer_(server.config().limits.max_frame_bytes) {
  int rc = transport == Transport::tcp ? uv_tcp_init(server.loop(), &handle_.tcp)
                                       : uv_pipe_init(server.loop(), &handle_.pipe, 0);
  uv::check(rc, "connection init");
  handle_.tcp.data = this;  // `data` sits at the same place in every handle type
  write_req_.data = this;
  shutdown_req_.data = this;
  last_activity_ms_ = server.now_ms();
}

Connection::~Connection() = default;

void Connection::start(std::string peer, std::string ip, SessionId session) {
  peer_ = std::move(peer);
  ip_ = std::move(ip);
  session_ = session;
  admitted_ = true;  // counted against max_clients until released
  update_reading();
}

void Connection::reject(ErrorCode code, std::string_view message) {
  send(make_event(error_body(code, message)));
  end();
  update_reading();  // read so the peer's EOF (or a reset) is seen while we flush
}

// ---- reading --------------------------------------------------------------------------

void Connection::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
  *buf = static_cast<Connection*>(handle->data)->server_.read_buffer();
}

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(stream->data);
  if (nread > 0) return self->on_bytes({buf->base, static_cast<std::size_t>(nread)});
  if (nread == 0) return;  // EAGAIN, not EOF
  if (nread == UV_EOF) return self->on_eof();
  log::info("client " + self->peer_ + " read error: " + uv::error_text(static_cast<int>(nread)));
  self->close_now();
}

void Connection::on_bytes(std::string_view bytes) {
  last_activity_ms_ = server_.now_ms();
  pinged_ = false;
  if (state_ != State::open || session_ == 0) return;  // closing: input is discarded
  framer_.set_max_frame_bytes(server_.config().limits.max_frame_bytes);
  framer_.feed(
      bytes, [this](std::string_view frame) { on_frame(frame); },
      [this] { on_frame({}); });  // an empty frame stands for one that was too long
}

void Connection::on_frame(std::string_view frame) {
  if (state_ != State::open) return;  // a bye earlier in this read ended the session
  if (held_ || !backlog_.empty()) {
    // Answer in order: wait behind the request that is in the worker pool.
    backlog_.emplace_back(frame);
    return update_reading();
  }
  dispatch(frame);
}

void Connection::dispatch(std::string_view frame) {
  if (frame.empty()) {  // the framer never yields empty lines: this one was too long
    return server_.router().reject(session_, {ErrorCode::frame_too_large,
                                              "frame longer than " +
                                                  std::to_string(server_.config().limits.max_frame_bytes) +
                                                  " bytes; the rest of that line is skipped",
                                              {}});
  }
  if (!mode_known_) {
    mode_ = detect_mode(frame);
    mode_known_ = true;
  }
  ParseResult parsed = mode_ == Mode::json ? parse_json_request(frame) : parse_text_line(frame);
  if (auto* request = std::get_if<Request>(&parsed)) server_.router().handle(session_, *request);
  else server_.router().reject(session_, std::get<RequestError>(parsed));
}

void Connection::on_eof() {
  peer_eof_ = true;
  switch (state_) {
    case State::open:
      // The peer is gone or half-closed: the rooms hear it now; what is queued still goes
      // out, since a half-closed peer may be waiting for its replies.
      forget_session();
      end();
      break;
    case State::draining: break;  // flush, then close without waiting
    case State::shut: close_now(); break;
    case State::closing: break;
  }
}

void Connection::update_reading() {
  if (state_ == State::closing) return;
  bool want = true;  // closing states read to see the peer's EOF, discarding input
  if (state_ == State::open)
    want = !held_ && backlog_.empty() && queued_bytes_ <= server_.config().limits.max_outbound_bytes / 2;
  if (want == reading_) return;
  reading_ = want;
  if (want) uv_read_start(stream(), on_alloc, on_read);
  else uv_read_stop(stream());
}

void Connection::hold() {
  held_ = true;
  update_reading();
}

void Connection::release() {
  held_ = false;
  schedule_flush();  // the backlog is served from flush(), outside the router's call
}

void Connection::drain_backlog() {
  while (!backlog_.empty() && !held_ && state_ == State::open) {
    std::string frame = std::move(backlog_.front());
    backlog_.pop_front();
    dispatch(frame);
  }
  update_reading();
}

// ---- output ---------------------------------------------------------------------------

void Connection::send(const EventPtr& event) {
  if (state_ != State::open) return;
  enqueue(event->bytes(mode_));
}

void Connection::send_broadcast(const EventPtr& event, std::string_view room) {
  if (state_ != State::open) return;
  const Bytes& bytes = event->bytes(mode_);
  if (bytes->empty()) return;
  const auto& limits = server_.config().limits;
  if (queued_bytes_ + bytes->size() > limits.max_outbound_bytes) {
    if (limits.slow_consumer == SlowConsumerPolicy::drop) return note_drop(room);
    return slow_consumer();
  }
  if (!drops_.empty()) emit_drop_notices();
  enqueue(bytes);
}

void Connection::enqueue(const Bytes& bytes) {
  if (bytes->empty() || state_ == State::closing) return;
  queued_bytes_ += bytes->size();
  out_.push_back(bytes);
  schedule_flush();
  // Flow control: a client that does not read its replies stops being read.
  if (reading_ && queued_bytes_ > server_.config().limits.max_outbound_bytes / 2) update_reading();
}

void Connection::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  server_.schedule_flush(*this);
}

void Connection::end() {
  if (state_ != State::open) return;
  state_ = State::draining;
  deadline_ms_ = server_.now_ms() + kDrainDeadlineMs;
  schedule_flush();
}

void Connection::note_drop(std::string_view room) {
  ++server_.stats().dropped;
  for (auto& [name, count] : drops_)
    if (name == room) return void(++count);
  drops_.emplace_back(std::string(room), 1);
}

void Connection::emit_drop_notices() {
  auto drops = std::move(drops_);
  drops_.clear();
  for (auto& [room, count] : drops) {
    ordered_json notice{{"op", "system"}, {"event", "dropped"}, {"room", room}, {"count", count}};
    enqueue(make_event(std::move(notice))->bytes(mode_));
  }
}

void Connection::slow_consumer() {
  ++server_.stats().slow_consumers;
  log::warning("client " + peer_ + " is a slow consumer (" + std::to_string(queued_bytes_) +
               " bytes queued): disconnecting");
  // Keep only what a write already owns, so the error follows whole lines and the client
  // can read it at once if it ever reads again.
  std::size_t keep = std::max<std::size_t>(inflight_count_, front_offset_ > 0 ? 1 : 0);
  while (out_.size() > keep) {
    queued_bytes_ -= out_.back()->size();
    out_.pop_back();
  }
  enqueue(make_event(error_body(ErrorCode::slow_consumer,
                                "you are not reading fast enough; closing"))->bytes(mode_));
  end();
  // The router is told at the next safe point (flush), never from inside its own fan-out.
}

void Connection::forget_session() {
  if (session_ == 0) return;
  SessionId id = session_;
  session_ = 0;
  server_.router().disconnect(id);
}

std::size_t Connection::gather(uv_buf_t* bufs, std::size_t max_bufs, std::size_t* total) const {
  std::size_t n = 0;
  *total = 0;
  for (auto it = out_.begin(); it != out_.end() && n < max_bufs; ++it, ++n) {
    std::size_t skip = n == 0 ? front_offset_ : 0;
    const std::string& s = **it;
    bufs[n] = uv_buf_init(const_cast<char*>(s.data() + skip), static_cast<unsigned>(s.size() - skip));
    *total += s.size() - skip;
  }
  return n;
}

void Connection::consume(std::size_t bytes) {
  server_.stats().bytes_out += bytes;
  queued_bytes_ -= bytes;
  while (bytes > 0) {  // pop what was written; the front may be left part-written
    std::size_t left_in_front = out_.front()->size() - front_offset_;
    if (bytes < left_in_front) {
      front_offset_ += bytes;
      break;
    }
    bytes -= left_in_front;
    front_offset_ = 0;
    out_.pop_front();
  }
  after_consume();
}

void Connection::after_consume() {
  std::size_t half = server_.config().limits.max_outbound_bytes / 2;
  if (queued_bytes_ <= half) {
    if (!drops_.empty() && state_ == State::open) emit_drop_notices();
    if (!reading_) update_reading();
  }
}

void Connection::flush() {
  flush_scheduled_ = false;
  if (state_ == State::closing) return;
  if (state_ != State::open) forget_session();  // the safe point for a deferred leave
  if (!held_ && !backlog_.empty()) drain_backlog();
  if (writing_) return;                         // on_write continues
  if (!out_.empty()) {
    uv_buf_t bufs[kMaxIov];
    std::size_t total = 0;
    std::size_t n = gather(bufs, kMaxIov, &total);
    int written = uv_try_write(stream(), bufs, static_cast<unsigned>(n));
    if (written == UV_EAGAIN || written == UV_ENOSYS) written = 0;
    if (written < 0) {
      log::info("client " + peer_ + " write error: " + uv::error_text(written));
      return close_now();
    }
    consume(static_cast<std::size_t>(written));
    if (!out_.empty()) {
      n = gather(bufs, kMaxIov, &total);
      inflight_count_ = n;
      inflight_bytes_ = total;
      writing_ = true;
      int rc = uv_write(&write_req_, stream(), bufs, static_cast<unsigned>(n), on_write);
      if (rc < 0) {
        writing_ = false;
        return close_now();
      }
    }
  }
  if (out_.empty() && state_ == State::draining) begin_shutdown();
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  self->writing_ = false;
  if (status == UV_ECANCELED) return;  // closing
  if (status < 0) {
    log::info("client " + self->peer_ + " write error: " + uv::error_text(status));
    return self->close_now();
  }
  self->consume(self->inflight_bytes_);
  self->inflight_count_ = 0;
  self->inflight_bytes_ = 0;
  self->flush();
}

void Connection::begin_shutdown() {
  if (peer_eof_) return close_now();  // nobody left to linger for
  state_ = State::shut;
  deadline_ms_ = server_.now_ms() + kLingerMs;
  // Keep reading (and discarding) until the peer's EOF: closing with unread input would make
  // the kernel send a reset, which can destroy the last lines we just sent.
  update_reading();
  if (uv_shutdown(&shutdown_req_, stream(), on_shutdown) < 0) close_now();
}

void Connection::on_shutdown(uv_shutdown_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  if (status == UV_ECANCELED) return;
  if (status < 0 || self->peer_eof_) self->close_now();
}

void Connection::tick(std::uint64_t now) {
  if (state_ == State::closing) return;
  if (state_ == State::draining || state_ == State::shut) {
    if (now >= deadline_ms_) close_now();
    return;
  }
  if (session_ == 0) return;
  const std::uint64_t idle_ms = std::uint64_t{server_.config().limits.idle_timeout_s} * 1000;
  const std::uint64_t silent = now - last_activity_ms_;
  if (silent >= idle_ms) {
    log::info("client " + peer_ + " idle for " + std::to_string(silent / 1000) + " s: closing");
    forget_session();
    end();
  } else if (silent >= idle_ms / 2 && !pinged_) {
    pinged_ = true;
    if (mode_ == Mode::json) send(make_event(ordered_json{{"op", "ping"}}));
  }
}

void Connection::close_now() {
  if (state_ == State::closing) return;
  forget_session();
  state_ = State::closing;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_close);
}

void Connection::on_close(uv_handle_t* handle) {
  auto* self = static_cast<Connection*>(handle->data);
  self->server_.release(*self);  // destroys self
}

}  // namespace roomd
