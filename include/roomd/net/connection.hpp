// Connection: one client stream. It owns the socket handle, the framer, the mode (JSON or
// text) and the output queue; it turns bytes into requests for the router and the router's
// events into batched writes.
//
// Output queue: a deque of shared immutable byte strings (a broadcast's bytes are shared by
// every recipient). Once per loop turn flush() writes as much as the kernel takes with one
// uv_try_write (writev), then hands the rest to one uv_write; its completion continues.
//
//   out_:  [ msg A (front_offset_ bytes already sent) | msg B | msg C | ... ]
//            '--------- inflight_count_ items owned by the pending uv_write ---'
//
// Lifetime: the Server owns each Connection. uv_close is asynchronous, so a Connection is
// destroyed only from its handle's close callback; write callbacks cancelled by the close
// still find it alive.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "roomd/protocol/event.hpp"
#include "roomd/protocol/framer.hpp"
#include "roomd/core/router.hpp"

namespace roomd {

class Server;

class Connection final : public Outbox {
 public:
  enum class Transport { tcp, unix_socket };

  Connection(Server& server, std::uint64_t id, Transport transport);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  std::uint64_t id() const { return id_; }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }
  const std::string& peer() const { return peer_; }
  const std::string& ip() const { return ip_; }
  bool admitted() const { return admitted_; }

  // After uv_accept: start reading; `session` is the router's id for it (0: rejected).
  void start(std::string peer, std::string ip, SessionId session);
  // Over max_clients or max_clients_per_ip: the error is the only line, then close.
  void reject(ErrorCode code, std::string_view message);

  // Outbox
  void send(const EventPtr& event) override;
  void send_broadcast(const EventPtr& event, std::string_view room) override;
  void end() override;
  void hold() override;
  void release() override;

  // Called by the server once per loop turn (and on write completion).
  void flush();
  // Once a second: idle ping and timeout, and deadlines of closing connections.
  void tick(std::uint64_t now_ms);
  // Close at once, dropping queued output (reset, write error, deadline passed).
  void close_now();


 private:
  enum class State {
    open,      // reading and answering
    draining,  // end() called: writing what is queued, then FIN
    shut,      // FIN sent: waiting for the peer's EOF (or the deadline) before closing
    closing,   // uv_close called
  };

  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_close(uv_handle_t* handle);

  void on_bytes(std::string_view bytes);
  void on_frame(std::string_view frame);
  void dispatch(std::string_view frame);  // parse and hand to the router
  void on_eof();
  void enqueue(const Bytes& bytes);
  void schedule_flush();
  std::size_t gather(uv_buf_t* bufs, std::size_t max_bufs, std::size_t* total) const;
  void consume(std::size_t bytes);
  void after_consume();
  void note_drop(std::string_view room);
  void emit_drop_notices();
  void slow_consumer();
  void update_reading();  // reads while open, not held, and not backed up; always when closing
  void drain_backlog();
  void forget_session();
  void begin_shutdown();

  Server& server_;
  const std::uint64_t id_;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle_;
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
  std::size_t front_offset_ = 0;
  std::size_t queued_bytes_ = 0;
  std::size_t inflight_count_ = 0;
  std::size_t inflight_bytes_ = 0;
  bool writing_ = false;
  bool flush_scheduled_ = false;
  bool reading_ = false;
  bool peer_eof_ = false;
  bool held_ = false;                 // a request is in the worker pool
  std::deque<std::string> backlog_;   // frames that arrived meanwhile, in order

  std::vector<std::pair<std::string, std::uint64_t>> drops_;  // room -> skipped messages
  std::uint64_t last_activity_ms_ = 0;
  bool pinged_ = false;
  std::uint64_t deadline_ms_ = 0;  // for draining/shut
};

}  // namespace roomd
