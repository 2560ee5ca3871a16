// Connection: one client stream. It owns the socket handle, the framer, the mode (JSON or
// text) and the output queue; it turns bytes into requests for its SessionSink and what the
// router sends into batched writes. It never sees the server: what it needs is handed in
// (ConnectionContext), and what it asks of its owner goes on the turn's lists (TurnQueues).
//
// Output queue: a deque of shared immutable byte strings (a broadcast's bytes are shared by
// every recipient). In the turn's write phase write() sends as much as the kernel takes
// with one uv_try_write (writev), then hands the rest to one uv_write; its completion
// continues. Writing never serves requests.
//
//   out_:  [ msg A (front_offset_ bytes already sent) | msg B | msg C | ... ]
//            '--------- inflight_count_ items owned by the pending uv_write ---'
//
// Serving: frames are served as they are cut, while the session is not held and its output
// is under half the limit (flow_control.hpp); otherwise the framer keeps the unread rest, the
// socket is not read, and the turn's resume phase goes on once the hold is released or the
// output has drained.
//
// Lifetime: the owner frees a Connection in the turn's closed phase, after its handle's close
// callback and after the router has heard that its session ended.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "roomd/base/uv.hpp"
#include "roomd/core/session.hpp"
#include "roomd/net/flow_control.hpp"
#include "roomd/net/tls.hpp"
#include "roomd/net/turn_queues.hpp"
#include "roomd/net/websocket.hpp"
#include "roomd/protocol/event.hpp"
#include "roomd/protocol/framer.hpp"

namespace roomd {

struct ConnectionLimits {
  std::size_t max_frame_bytes = 65536;
  FlowLimits flow;
  std::uint32_t idle_timeout_s = 300;
  std::uint32_t tls_handshake_timeout_ms = 10000;
  std::uint32_t websocket_ping_interval_s = 30;         // a WebSocket ping after this long silent
  std::uint32_t websocket_handshake_timeout_ms = 10000;  // the upgrade request must come by then
  std::size_t websocket_max_head_bytes = 8192;           // and be no longer than this
};

// Why a connection ends: the one close path says it to the log and, on WebSocket, in the
// close frame (websocket_close_code).
enum class CloseReason {
  normal,          // the session ended (quit), or the peer closed
  idle,            // silent for limits.idle_timeout_s
  slow_consumer,   // its output outgrew the limits
  shutting_down,   // the server stops
  lame_duck,       // the server drains for a restart (SIGUSR2): reconnect, elsewhere
};

struct ConnectionCounters {
  std::uint64_t slow_consumers = 0;
  std::uint64_t dropped = 0;    // broadcasts skipped under slow_consumer = "drop"
  std::uint64_t bytes_out = 0;
  // The output budget (output_budget.hpp), kept as queues change, never by a walk:
  std::uint64_t queued_bytes = 0;    // every connection's queued output, until it is closed
  std::uint64_t budgeted_bytes = 0;  // of it, connections open and taking broadcasts: what the budget limits
  std::uint64_t budget_cuts = 0;     // connections cut because the total was over the budget
  std::uint64_t tls_handshakes = 0;          // completed
  std::uint64_t tls_handshake_failures = 0;  // failed or timed out
  std::uint64_t websocket_upgrades = 0;      // upgrades accepted
  std::uint64_t websocket_refused = 0;       // upgrade requests refused (Origin, version, malformed)
  std::uint64_t websocket_pages = 0;         // web client files served
};

// What every connection of one owner shares, handed in at construction.
struct ConnectionContext {
  uv_loop_t* loop = nullptr;
  const ConnectionLimits* limits = nullptr;  // the owner's, changed in place on reload
  SessionSink* sessions = nullptr;           // where requests go
  TurnQueues* turn = nullptr;                // what the owner works through each turn
  ConnectionCounters* counters = nullptr;
  uv_buf_t read_buffer{};                    // one buffer for every read: idle clients hold none
};

class Connection final : public Outbox {
 public:
  enum class Transport { tcp, unix_socket };

  // `tls`: the context of a TLS listener (null for plaintext); `websocket`: the site of a
  // WebSocket listener (null for line streams). The connection keeps both.
  Connection(const ConnectionContext& context, ConnectionId id, Transport transport,
             std::shared_ptr<TlsContext> tls = nullptr, std::shared_ptr<const WebSocketSite> websocket = nullptr);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  ConnectionId id() const { return id_; }
  uv_stream_t* stream() const { return tcp_ ? tcp_->stream() : pipe_->stream(); }
  const std::string& peer() const { return peer_; }
  const std::string& ip() const { return ip_; }
  bool admitted() const { return admitted_; }
  bool in_session() const { return session_ != 0; }  // the router knows it (and it had its welcome)

  // After uv_accept: start reading; `session` is the router's id for it.
  void start(std::string peer, std::string ip, SessionId session);
  // After uv_accept on a WebSocket listener: read the upgrade request; the session comes once
  // it is accepted (the turn's `upgraded` list, then start_session).
  void start_upgrade(std::string peer, std::string ip);
  void start_session(SessionId session);
  bool is_websocket() const { return ws_ != nullptr; }
  // Upgraded, still open, and without a session yet.
  bool awaiting_session() const {
    return state_ == State::open && session_ == 0 && ws_ && ws_->status() == WebSocketChannel::Status::open;
  }
  // Refused (server_full, shutting_down): `refusal` is the only line, then close.
  void reject(const EventPtr& refusal);

  // Outbox
  void send(const EventPtr& event) override;
  void send_broadcast(const EventPtr& event, std::string_view room) override;
  void send_lazy(const EventPtr& event, std::string_view room) override;
  void end() override;
  void hold() override;
  void release() override;

  // The turn's phases (TurnQueues): serve what was read and kept; write what is queued.
  void resume();
  void write();
  // The coalescing timer: presence queued since is written now (joins the write list).
  bool flush_lazy();  // false: written meanwhile, or not on the lazy list
  // Ends the session (the router hears it in the turn's ended phase) and closes once the
  // output is written.
  void finish(CloseReason reason = CloseReason::normal);
  // The limits changed (a reload): serve or read again if they now allow it.
  void limits_changed();
  // Close at once, dropping queued output (reset, write error, deadline passed).
  void close_now();
  // The output budget (output_budget.hpp): this connection's queue counts against it while
  // it is open and takes broadcasts; cut_for_budget makes it a slow consumer by its policy
  // (disconnect, or skip broadcasts until its queue has drained), after which it does not.
  std::size_t queued_bytes() const { return queued_bytes_; }
  bool counts_against_budget() const { return state_ == State::open && !skipping_; }
  void cut_for_budget(std::uint64_t total, std::uint64_t budget);
  // Once per tick: idle ping and timeout, and deadlines of closing connections.
  void tick(std::uint64_t now_ms);

 private:
  enum class State {
    open,      // reading and answering
    draining,  // finishing: writing what is queued, then FIN
    shut,      // FIN sent: waiting for the peer's EOF (or the deadline) before closing
    closing,   // uv_close called
  };

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  void on_cipher(std::string_view bytes);  // TLS: decrypt, then on_bytes
  void on_websocket(std::string_view bytes);  // WebSocket: the upgrade, then messages
  void take_websocket_output();
  void serve_messages();  // WebSocket: the messages read and not yet served, while allowed
  std::size_t unread() const { return framer_.unread() + ws_messages_.size(); }
  void encrypt_queued();
  void take_tls_output();
  void tls_failed();
  // What the socket is written from: the output queue itself, or (TLS) its ciphertext.
  std::deque<Bytes>& wire() { return tls_ ? cipher_ : out_; }
  const std::deque<Bytes>& wire() const { return tls_ ? cipher_ : out_; }

  const ConnectionLimits& limits() const { return *context_.limits; }
  std::uint64_t now_ms() const { return uv_now(context_.loop); }
  bool may_serve() const;
  void on_bytes(std::string_view bytes);
  void note_alive();  // a whole line or WebSocket message came: not idle
  void serve(std::string_view frame);  // parse and hand to the session sink
  void serve_overlong();
  void on_eof();
  void enqueue(const Bytes& bytes, bool urgent = true);
  bool admit_broadcast(const Bytes& bytes, std::string_view room);  // the slow-consumer policy
  void want_write();
  void want_resume();
  std::size_t gather(uv_buf_t* bufs, std::size_t max_bufs, std::size_t* total) const;
  void consume(std::size_t bytes);
  void note_drop(std::string_view room);
  void emit_drop_notices();
  void slow_consumer(const std::string& why);
  void add_queued(std::size_t bytes);
  void remove_queued(std::size_t bytes);
  void set_state(State state);         // keeps the budget's counter right as the state moves
  void set_skipping(bool skipping);    // likewise
  void update_reading();  // reads while serving and nothing is kept; always when closing
  void retire_session();
  void drain(CloseReason reason = CloseReason::normal);
  void begin_shutdown();

  const ConnectionContext& context_;
  const ConnectionId id_;
  std::optional<uv::Handle<uv_tcp_t>> tcp_;
  std::optional<uv::Handle<uv_pipe_t>> pipe_;
  uv_write_t write_req_{};
  uv_shutdown_t shutdown_req_{};

  SessionId session_ = 0;
  bool admitted_ = false;
  std::string peer_;
  std::string ip_;
  Framer framer_;
  Mode mode_ = Mode::json;
  bool mode_known_ = false;
  State state_ = State::open;

  std::deque<Bytes> out_;
  std::unique_ptr<TlsChannel> tls_;
  std::deque<Bytes> cipher_;    // TLS: records made from out_, waiting for the socket
  std::size_t cipher_bytes_ = 0;
  std::unique_ptr<WebSocketChannel> ws_;
  std::deque<std::string> ws_messages_;  // WebSocket: messages read, not yet served
  std::uint64_t created_ms_ = 0;
  std::size_t front_offset_ = 0;  // bytes of wire().front() already written
  std::size_t queued_bytes_ = 0;
  std::size_t inflight_count_ = 0;
  std::size_t inflight_bytes_ = 0;
  bool writing_ = false;
  bool write_wanted_ = false;
  bool lazy_wanted_ = false;  // on the turn's lazy list: presence waits for the coalescing timer
  bool resume_wanted_ = false;
  bool reading_ = false;
  bool peer_eof_ = false;
  int holds_ = 0;  // requests of this session waiting outside (Outbox::hold)
  bool skipping_ = false;  // cut by the output budget under "drop": broadcasts skipped until drained

  std::vector<std::pair<std::string, std::uint64_t>> drops_;  // room -> skipped messages
  std::uint64_t last_activity_ms_ = 0;
  bool pinged_ = false;
  std::uint64_t deadline_ms_ = 0;  // for draining/shut
};

}  // namespace roomd
