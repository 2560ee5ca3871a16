// Connection: framing in, serving while allowed, batched writes out, closing. See connection.hpp.
#include "roomd/net/connection.hpp"

#include <algorithm>
#include <utility>

#include "roomd/base/log.hpp"
#include "roomd/net/http_text.hpp"
#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/wire.hpp"

namespace roomd {

namespace {
constexpr std::size_t kMaxIov = 1024;            // buffers per write call (IOV_MAX)
constexpr std::uint64_t kDrainDeadlineMs = 5000;  // a closing client gets this long to read
constexpr std::uint64_t kLingerMs = 2000;         // and this long after our FIN to send its own
// TLS: ciphertext made ahead of the socket. The rest stays in out_ as shared plaintext, so a
// slow TLS reader holds one copy of a broadcast per connection only for what is in flight.
constexpr std::size_t kTlsAheadBytes = 64 * 1024;
constexpr std::size_t kTlsRecordBytes = 16 * 1024;  // small lines are gathered into records this big

// The WebSocket close frame for a reason: 1000/1001 as RFC 6455 has them (1001, going away:
// `idle`, `lame_duck`); a roomd error is 4000 + its place in ErrorCode, with its wire name as
// the reason (docs/protocol.md).
std::pair<std::uint16_t, std::string_view> websocket_close_of(CloseReason reason) {
  auto roomd_error = [](ErrorCode code) {
    return std::pair<std::uint16_t, std::string_view>{static_cast<std::uint16_t>(4000 + static_cast<int>(code)),
                                                      to_string(code)};
  };
  switch (reason) {
    case CloseReason::normal: return {1000, ""};
    case CloseReason::idle: return {1001, "idle"};
    case CloseReason::slow_consumer: return roomd_error(ErrorCode::slow_consumer);
    case CloseReason::shutting_down: return roomd_error(ErrorCode::shutting_down);
    // Not an error: "going away", as a server that goes down; the reason says to come back.
    case CloseReason::lame_duck: return {1001, "lame_duck"};
  }
  return {1000, ""};
}
}  // namespace

Connection::Connection(const ConnectionContext& context, ConnectionId id, Transport transport,
                       std::shared_ptr<TlsContext> tls, std::shared_ptr<const WebSocketSite> websocket)
    : context_(context), id_(id), framer_(context.limits->max_frame_bytes) {
  uv_loop_t* loop = context.loop;
  if (transport == Transport::tcp) tcp_.emplace([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); });
  else pipe_.emplace([loop](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
  stream()->data = this;
  write_req_.data = this;
  shutdown_req_.data = this;
  last_activity_ms_ = created_ms_ = now_ms();
  if (tls) tls_ = std::make_unique<TlsChannel>(std::move(tls));
  if (websocket) {
    ws_ = std::make_unique<WebSocketChannel>(std::move(websocket), context.limits->websocket_max_head_bytes);
    mode_ = Mode::websocket;  // JSON only, each line one message
    mode_known_ = true;
  }
}

Connection::~Connection() = default;

void Connection::start(std::string peer, std::string ip, SessionId session) {
  peer_ = std::move(peer);
  ip_ = std::move(ip);
  session_ = session;
  admitted_ = true;  // counted against max_clients until freed
  update_reading();
}

void Connection::start_upgrade(std::string peer, std::string ip) {
  peer_ = std::move(peer);
  ip_ = std::move(ip);
  admitted_ = true;
  update_reading();
}

void Connection::start_session(SessionId session) {
  if (state_ != State::open) return;
  session_ = session;
  if (!ws_messages_.empty()) want_resume();  // sent right behind the upgrade request
  else update_reading();
}

void Connection::reject(const EventPtr& refusal) {
  if (ws_) {  // before any upgrade: the refusal is an HTTP answer
    const std::string text = refusal->body().value("message", std::string("refused"));
    enqueue(Bytes::make(http_answer(503, "text/plain; charset=utf-8", text + "\n")));
  } else {
    send(refusal);
  }
  drain();
  update_reading();  // read so the peer's EOF (or a reset) is seen while we flush
}

// ---- reading and serving ----------------------------------------------------------------

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(stream->data);
  if (nread > 0 && self->tls_) return self->on_cipher({buf->base, static_cast<std::size_t>(nread)});
  if (nread > 0) return self->on_bytes({buf->base, static_cast<std::size_t>(nread)});
  if (nread == 0) return;  // EAGAIN, not EOF
  if (nread == UV_EOF) return self->on_eof();
  log::info("client " + self->peer_ + " read error: " + uv::error_text(static_cast<int>(nread)));
  self->close_now();
}

bool Connection::may_serve() const {
  return state_ == State::open && session_ != 0 && holds_ == 0 && limits().flow.may_serve(queued_bytes_);
}

// Activity, for the idle timeout, is a whole line (SPEC: "any line from the client counts as
// alive"), or a whole WebSocket frame: a peer trickling a byte now and then without ever
// ending its line is idle.
void Connection::note_alive() {
  last_activity_ms_ = now_ms();
  pinged_ = false;
}

void Connection::on_bytes(std::string_view bytes) {
  if (ws_) return on_websocket(bytes);
  if (bytes.find('\n') != std::string_view::npos) note_alive();
  if (state_ != State::open || session_ == 0) return;  // closing: input is discarded
  framer_.set_max_frame_bytes(limits().max_frame_bytes);
  framer_.feed(
      bytes, [this] { return may_serve(); }, [this](std::string_view frame) { serve(frame); },
      [this] { serve_overlong(); });
  update_reading();
}

// ---- TLS (tls.hpp) ----------------------------------------------------------------------

void Connection::on_cipher(std::string_view bytes) {
  if (tls_->failed()) return;  // said once; what comes after is discarded
  std::string plain;
  TlsChannel::Status status = tls_->feed(bytes, plain);
  if (tls_->take_handshake_news()) {
    ++context_.counters->tls_handshakes;
    log::debug("client " + peer_ + " TLS: " + tls_->description());
    want_write();  // what was queued before the handshake (the welcome) can go now
  }
  take_tls_output();  // handshake records, tickets, alerts: every call may make some
  if (status == TlsChannel::Status::failed) return tls_failed();
  if (!plain.empty()) on_bytes(plain);
  if (status == TlsChannel::Status::closed) on_eof();  // the peer's close_notify
}

void Connection::take_tls_output() {
  std::string records = tls_->take_output();
  if (records.empty()) return;
  if (state_ == State::shut || state_ == State::closing) return;  // after our FIN nothing more is sent
  add_queued(records.size());
  cipher_bytes_ += records.size();
  cipher_.push_back(Bytes::make(std::move(records)));
  want_write();
}

// Plaintext goes into records while the ciphertext ahead of the socket is small; our
// close_notify follows the last of it when the connection is draining.
void Connection::encrypt_queued() {
  if (!out_.empty() && tls_->handshake_done()) tls_->set_busy(true);  // until tick() finds it idle
  char record[kTlsRecordBytes];
  while (!out_.empty() && cipher_bytes_ < kTlsAheadBytes && tls_->handshake_done() && !tls_->failed()) {
    std::size_t taken = 0, items = 0, size = 0;
    for (auto it = out_.begin(); it != out_.end() && taken + (*it)->size() <= sizeof record; ++it, ++items) {
      std::copy((*it)->begin(), (*it)->end(), record + taken);
      taken += (*it)->size();
    }
    bool done = items > 0 ? tls_->encrypt({record, taken}) : tls_->encrypt(*out_.front());
    if (!done) break;
    if (items == 0) items = 1;
    for (std::size_t i = 0; i < items; ++i) {
      size += out_.front()->size();
      out_.pop_front();
    }
    remove_queued(size);
    take_tls_output();
  }
  if (tls_->failed()) {
    if (!out_.empty()) tls_failed();  // failed just now (tls_failed empties out_)
    return;
  }
  if (out_.empty() && state_ == State::draining) {
    tls_->shutdown();
    take_tls_output();
  }
}

void Connection::tls_failed() {
  if (!tls_->handshake_done()) ++context_.counters->tls_handshake_failures;
  log::info("client " + peer_ + (tls_->handshake_done() ? " TLS error: " : " TLS handshake failed: ") + tls_->error());
  // Nothing more can be encrypted: the plaintext is dropped, the alert OpenSSL made goes out,
  // then FIN.
  std::size_t size = 0;
  for (const auto& bytes : out_) size += bytes->size();
  out_.clear();
  remove_queued(size);
  finish();
  want_write();
}

// ---- WebSocket (websocket.hpp) ----------------------------------------------------------

void Connection::on_websocket(std::string_view bytes) {
  if (state_ != State::open) return;  // closing: input is discarded
  const bool was_handshake = ws_->status() == WebSocketChannel::Status::handshake;
  const std::uint64_t frames_before = ws_->messages_received();
  const auto status = ws_->feed(bytes, ws_messages_, limits().max_frame_bytes);
  if (ws_->messages_received() != frames_before || (was_handshake && status == WebSocketChannel::Status::open)) {
    note_alive();
  }
  // Messages that came before a close (the peer's, or one for an error) are served first, and
  // their replies go out before the channel's close frame, which must be the last frame.
  serve_messages();
  take_websocket_output();
  using Status = WebSocketChannel::Status;
  switch (status) {
    case Status::handshake: break;
    case Status::open:
      if (was_handshake) {
        ++context_.counters->websocket_upgrades;
        context_.turn->upgraded.push_back(id_);  // the owner makes its session this turn
      }
      break;
    case Status::answered:
      if (ws_->refused()) ++context_.counters->websocket_refused;
      else ++context_.counters->websocket_pages;
      log::debug("client " + peer_ + " HTTP: " + ws_->why());
      drain();  // the answer, then FIN
      break;
    case Status::closing:
      log::info("client " + peer_ + " WebSocket " + ws_->why());
      ws_messages_.clear();  // what a hold kept from being served now is dropped with the session
      finish();
      break;
  }
  update_reading();
}

void Connection::take_websocket_output() {
  std::string bytes = ws_->take_output();
  if (!bytes.empty()) enqueue(Bytes::make(std::move(bytes)));
}

void Connection::serve_messages() {
  while (!ws_messages_.empty() && may_serve()) {
    std::string message = std::move(ws_messages_.front());
    ws_messages_.pop_front();
    serve(message);
  }
}

void Connection::resume() {
  resume_wanted_ = false;
  if (state_ != State::open || session_ == 0) return;
  if (ws_) {
    serve_messages();
    return update_reading();
  }
  framer_.resume([this] { return may_serve(); }, [this](std::string_view frame) { serve(frame); },
                 [this] { serve_overlong(); });
  update_reading();
}

void Connection::serve_overlong() {
  context_.sessions->reject(session_, {ErrorCode::frame_too_large,
                                       "frame longer than " + std::to_string(limits().max_frame_bytes) +
                                           " bytes; the rest of that line is skipped",
                                       {}});
}

void Connection::serve(std::string_view frame) {
  if (!mode_known_) {
    mode_ = detect_mode(frame);
    mode_known_ = true;
  }
  ParseResult parsed = mode_ == Mode::text ? parse_text_line(frame) : parse_json_request(frame);
  if (auto* request = std::get_if<Request>(&parsed)) context_.sessions->handle(session_, *request);
  else context_.sessions->reject(session_, std::get<RequestError>(parsed));
}

void Connection::on_eof() {
  peer_eof_ = true;
  switch (state_) {
    case State::open:
      // The peer is gone or half-closed: the rooms hear it this turn; what is queued still
      // goes out, since a half-closed peer may be waiting for its replies.
      finish();
      break;
    case State::draining: break;  // flush, then close without waiting
    case State::shut: close_now(); break;
    case State::closing: break;
  }
}

void Connection::update_reading() {
  if (state_ == State::closing) return;
  bool want = true;  // closing states read to see the peer's EOF, discarding input
  if (state_ == State::open) {
    const bool upgrading = ws_ && ws_->status() == WebSocketChannel::Status::handshake;
    want = upgrading || (may_serve() && unread() == 0);
  }
  if (want == reading_) return;
  int rc = want ? uv_read_start(
                      stream(),
                      [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
                        *buf = static_cast<Connection*>(h->data)->context_.read_buffer;
                      },
                      on_read)
                : uv_read_stop(stream());
  if (rc < 0) {
    log::info("client " + peer_ + " cannot read: " + uv::error_text(rc));
    return close_now();
  }
  reading_ = want;
}

void Connection::hold() {
  ++holds_;
  update_reading();
}

void Connection::release() {
  if (holds_ > 0 && --holds_ == 0) want_resume();  // served in the turn's resume phase
}

void Connection::want_resume() {
  if (resume_wanted_ || state_ != State::open) return;
  resume_wanted_ = true;
  context_.turn->resume.push_back(id_);
}

// ---- output ---------------------------------------------------------------------------

void Connection::send(const EventPtr& event) {
  if (state_ != State::open) return;
  enqueue(event->bytes(mode_));
}

void Connection::send_broadcast(const EventPtr& event, std::string_view room) {
  if (state_ != State::open) return;
  const Bytes& bytes = event->bytes(mode_);
  if (admit_broadcast(bytes, room)) enqueue(bytes);
}

void Connection::send_lazy(const EventPtr& event, std::string_view room) {
  if (state_ != State::open) return;
  const Bytes& bytes = event->bytes(mode_);
  if (admit_broadcast(bytes, room)) enqueue(bytes, false);
}

bool Connection::admit_broadcast(const Bytes& bytes, std::string_view room) {
  if (bytes->empty()) return false;
  if (skipping_) {  // cut by the output budget, until its queue drains
    note_drop(room);
    return false;
  }
  if (!limits().flow.fits(queued_bytes_, bytes->size())) {
    if (limits().flow.slow_consumer == SlowConsumerPolicy::drop) note_drop(room);
    else slow_consumer("is a slow consumer (" + std::to_string(queued_bytes_) + " bytes queued)");
    return false;
  }
  if (!drops_.empty()) emit_drop_notices();
  return true;
}

void Connection::enqueue(const Bytes& bytes, bool urgent) {
  if (bytes->empty() || state_ == State::closing) return;
  add_queued(bytes->size());
  out_.push_back(bytes);
  if (urgent || write_wanted_) {
    want_write();
  } else if (!lazy_wanted_) {
    lazy_wanted_ = true;
    context_.turn->lazy.push_back(id_);
  }
  // Flow control: a client that does not read its replies is neither served nor read.
  if (reading_ && !limits().flow.may_serve(queued_bytes_)) update_reading();
}

void Connection::want_write() {
  if (write_wanted_) return;
  write_wanted_ = true;
  context_.turn->write.push_back(id_);
}

void Connection::end() {
  session_ = 0;  // the router has forgotten it already
  drain();
}

void Connection::finish(CloseReason reason) {
  retire_session();
  drain(reason);
}

void Connection::drain(CloseReason reason) {
  if (state_ != State::open) return;
  set_state(State::draining);
  deadline_ms_ = now_ms() + kDrainDeadlineMs;
  if (ws_) {  // the close frame follows the last message (a no-op if one was sent already)
    auto [code, why] = websocket_close_of(reason);
    ws_->close(code, why);
    take_websocket_output();
  }
  want_write();
}

void Connection::retire_session() {
  if (session_ == 0) return;
  context_.turn->ended.push_back(session_);
  session_ = 0;
}

void Connection::note_drop(std::string_view room) {
  ++context_.counters->dropped;
  for (auto& [name, count] : drops_)
    if (name == room) return void(++count);
  drops_.emplace_back(std::string(room), 1);
}

void Connection::emit_drop_notices() {
  auto drops = std::move(drops_);
  drops_.clear();
  for (auto& [room, count] : drops) {
    enqueue(make_event(wire::system_dropped(room, count))->bytes(mode_));
  }
}

void Connection::slow_consumer(const std::string& why) {
  ++context_.counters->slow_consumers;
  log::warning("client " + peer_ + " " + why + ": disconnecting");
  // Keep only what a write already owns, so the error follows whole lines and the client
  // can read it at once if it ever reads again.
  // (Under TLS a write owns ciphertext only: all of out_ may go.)
  std::size_t keep = tls_ ? 0 : std::max<std::size_t>(inflight_count_, front_offset_ > 0 ? 1 : 0);
  while (out_.size() > keep) {
    remove_queued(out_.back()->size());
    out_.pop_back();
  }
  enqueue(make_event(wire::error_slow_consumer())->bytes(mode_));
  // Called from inside the router's fan-out: the router hears it in the ended phase.
  finish(CloseReason::slow_consumer);
}

std::size_t Connection::gather(uv_buf_t* bufs, std::size_t max_bufs, std::size_t* total) const {
  std::size_t n = 0;
  *total = 0;
  const std::deque<Bytes>& queue = wire();
  for (auto it = queue.begin(); it != queue.end() && n < max_bufs; ++it, ++n) {
    std::size_t skip = n == 0 ? front_offset_ : 0;
    const std::string& s = **it;
    bufs[n] = uv_buf_init(const_cast<char*>(s.data() + skip), static_cast<unsigned>(s.size() - skip));
    *total += s.size() - skip;
  }
  return n;
}

void Connection::consume(std::size_t bytes) {
  context_.counters->bytes_out += bytes;
  remove_queued(bytes);
  if (tls_) cipher_bytes_ -= bytes;
  std::deque<Bytes>& queue = wire();
  while (bytes > 0) {  // pop what was written; the front may be left part-written
    std::size_t left_in_front = queue.front()->size() - front_offset_;
    if (bytes < left_in_front) {
      front_offset_ += bytes;
      break;
    }
    bytes -= left_in_front;
    front_offset_ = 0;
    queue.pop_front();
  }
  if (!limits().flow.may_serve(queued_bytes_)) return;
  if (skipping_ && queued_bytes_ == 0) set_skipping(false);  // drained: it takes broadcasts again
  if (!drops_.empty() && state_ == State::open && !skipping_) emit_drop_notices();
  limits_changed();  // drained below half: serve what was kept, or read again
}

void Connection::limits_changed() {
  // Decided from the state now, not from a crossing of the limit: a reload may have moved it.
  if (unread() > 0) {
    if (may_serve()) want_resume();  // served in the next resume phase
  } else if (!reading_) {
    update_reading();
  }
}

bool Connection::flush_lazy() {
  if (!std::exchange(lazy_wanted_, false)) return false;  // written meanwhile with urgent output
  want_write();
  return true;
}

void Connection::write() {
  write_wanted_ = false;
  lazy_wanted_ = false;  // whatever presence is queued goes with this write
  if (state_ == State::closing || writing_) return;  // on_write continues
  if (tls_) encrypt_queued();
  if (state_ == State::closing) return;
  if (!wire().empty()) {
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
    if (state_ == State::closing) return;  // consume() may have closed it (a read that cannot start)
    if (!wire().empty()) {
      n = gather(bufs, kMaxIov, &total);
      inflight_count_ = n;
      inflight_bytes_ = total;
      if (int rc = uv_write(&write_req_, stream(), bufs, static_cast<unsigned>(n), on_write); rc < 0) {
        log::info("client " + peer_ + " write error: " + uv::error_text(rc));
        return close_now();
      }
      writing_ = true;
    }
  }
  if (out_.empty() && wire().empty() && state_ == State::draining) begin_shutdown();
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
  self->write();
}

void Connection::begin_shutdown() {
  if (peer_eof_) return close_now();  // nobody left to linger for
  set_state(State::shut);
  deadline_ms_ = now_ms() + kLingerMs;
  // Keep reading (and discarding) until the peer's EOF: closing with unread input would make
  // the kernel send a reset, which can destroy the last lines we just sent.
  update_reading();
  if (state_ == State::closing) return;
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
  if (tls_ && tls_->busy() && !writing_ && out_.empty() && cipher_.empty()) tls_->set_busy(false);
  if (tls_ && !tls_->handshake_done() && now - created_ms_ >= limits().tls_handshake_timeout_ms) {
    ++context_.counters->tls_handshake_failures;
    log::info("client " + peer_ + " TLS handshake not finished in " + std::to_string(now - created_ms_) + " ms: closing");
    return close_now();
  }
  if (ws_ && ws_->status() == WebSocketChannel::Status::handshake &&
      now - created_ms_ >= limits().websocket_handshake_timeout_ms) {
    log::info("client " + peer_ + " sent no WebSocket upgrade in " + std::to_string(now - created_ms_) + " ms: closing");
    return close_now();
  }
  if (session_ == 0) return;
  const std::uint64_t idle_ms = std::uint64_t{limits().idle_timeout_s} * 1000;
  const std::uint64_t silent = now - last_activity_ms_;
  if (silent >= idle_ms) {
    log::info("client " + peer_ + " idle for " + std::to_string(silent / 1000) + " s: closing");
    finish(CloseReason::idle);
  } else if (ws_) {
    // A WebSocket ping, at the interval or at half the idle timeout if that comes first; a
    // browser answers with a pong, which is activity.
    const std::uint64_t ping_ms = std::min(std::uint64_t{limits().websocket_ping_interval_s} * 1000, idle_ms / 2);
    if (!pinged_ && silent >= ping_ms) {
      pinged_ = true;
      ws_->ping();
      take_websocket_output();
    }
  } else if (silent >= idle_ms / 2 && !pinged_) {
    pinged_ = true;
    if (mode_ == Mode::json) send(make_event(wire::ping()));
  }
}

void Connection::close_now() {
  if (state_ == State::closing) return;
  retire_session();
  set_state(State::closing);
  remove_queued(queued_bytes_);  // what is still queued is dropped: it no longer counts
  auto on_closed = [turn = context_.turn, id = id_] { turn->closed.push_back(id); };
  if (tcp_) tcp_->close(on_closed);
  else pipe_->close(on_closed);
}

// ---- the output budget (output_budget.hpp) ----------------------------------------------

void Connection::add_queued(std::size_t bytes) {
  queued_bytes_ += bytes;
  context_.counters->queued_bytes += bytes;
  if (counts_against_budget()) context_.counters->budgeted_bytes += bytes;
}

void Connection::remove_queued(std::size_t bytes) {
  queued_bytes_ -= bytes;
  context_.counters->queued_bytes -= bytes;
  if (counts_against_budget()) context_.counters->budgeted_bytes -= bytes;
}

void Connection::set_state(State state) {
  const bool counted = counts_against_budget();
  state_ = state;
  if (counted && !counts_against_budget()) context_.counters->budgeted_bytes -= queued_bytes_;
}

void Connection::set_skipping(bool skipping) {
  const bool counted = counts_against_budget();
  skipping_ = skipping;
  if (counted && !counts_against_budget()) context_.counters->budgeted_bytes -= queued_bytes_;
  else if (!counted && counts_against_budget()) context_.counters->budgeted_bytes += queued_bytes_;
}

void Connection::cut_for_budget(std::uint64_t total, std::uint64_t budget) {
  if (!counts_against_budget()) return;
  ++context_.counters->budget_cuts;
  const std::string why = "has one of the largest queues (" + std::to_string(queued_bytes_) + " bytes) while all clients' output (" +
                          std::to_string(total) + " bytes) is over limits.max_total_outbound_bytes (" +
                          std::to_string(budget) + ")";
  if (limits().flow.slow_consumer == SlowConsumerPolicy::disconnect) return slow_consumer(why);
  log::warning("client " + peer_ + " " + why + ": skipping its broadcasts until its queue drains");
  set_skipping(true);
}

}  // namespace roomd
