// RedisLink: one connection to Redis on roomd's own loop. A hiredis async context whose socket
// a uv_poll_t watches, and a timer for the connect and command deadlines. Written here rather
// than taken from hiredis' adapters/libuv.h, which (as Debian's 0.14.1 ships it) drops poll
// errors, so a refused or reset connection never reaches any callback, and has no timeouts,
// so a frozen Redis is never noticed (docs/cluster.md).
//
// Every way a link ends -- refused, reset, timeout, a protocol error -- goes through one close
// path with a typed reason; the owner hears it once, from a clean stack (a later loop
// iteration), and decides when to connect again. The link reconnects nothing by itself.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "roomd/base/names.hpp"
#include "roomd/base/uv.hpp"

struct redisAsyncContext;
struct redisReply;

namespace roomd {

enum class RedisCloseReason {
  refused,   // the connection could not be made (refused, unreachable, a missing socket path)
  reset,     // it was made, then Redis closed it or the network reset it
  timeout,   // no connection, or no reply to a command, within the deadline
  protocol,  // a reply hiredis could not parse
  owner,     // the owner closed it (an unexpected reply, shutdown)
};
std::string_view to_string(RedisCloseReason reason);

struct RedisLinkSettings {
  ListenAddress address;  // ipv4, ipv6 or unix_path
  std::uint32_t connect_timeout_ms = 2000;
  // A command with no reply for this long closes the link (timeout): Redis is frozen
  // (SIGSTOP, a stuck disk, a partition) or the reply was lost.
  std::uint32_t command_timeout_ms = 2000;
};

class RedisLink {
 public:
  enum class State { closed, connecting, open };
  // A command's reply; nullptr when the link closed before it came.
  using Reply = std::function<void(const redisReply*)>;
  // What a subscribed link receives: messages and (un)subscribe confirmations, as arrays.
  using Push = std::function<void(const redisReply&)>;
  using Connected = std::function<void()>;
  using Closed = std::function<void(RedisCloseReason, const std::string& detail)>;

  RedisLink(uv_loop_t* loop, RedisLinkSettings settings, Connected on_connected, Closed on_closed);
  // Closes without calling anything back: pending replies are dropped unrun. Never from inside
  // one of the link's own callbacks.
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // Starts connecting, if closed. `on_connected` or `on_closed` follows on a later iteration.
  void connect();
  // The owner ends the link (its reason is for its own log): pending replies get nullptr,
  // `on_closed` is not called. Safe from inside a reply.
  void close();
  State state() const { return state_; }
  bool is_open() const { return state_ == State::open; }

  // Queues a command (binary-safe arguments). Commands may be queued while connecting; they
  // go out in order once connected. Returns false, and sends nothing, when closed.
  bool command(const std::vector<std::string>& args, Reply on_reply);
  // Pub/sub: after the first subscribe the link takes only (un)subscribes.
  bool subscribe(const std::string& channel);
  bool unsubscribe(const std::string& channel);
  void set_push(Push on_push) { on_push_ = std::move(on_push); }
  std::size_t awaiting_replies() const { return sent_at_.size(); }

 private:
  struct CommandSlot;
  struct Notice {
    std::uint64_t generation;
    bool connected;  // else closed
    RedisCloseReason reason;
    std::string detail;
  };

  void fail(RedisCloseReason reason, std::string detail);  // an error of ours: free, then tell
  void free_context();
  void update_poll();
  void check_deadlines();
  void post(Notice notice);
  void deliver_notices();

  // hiredis' hooks.
  static void on_poll(uv_poll_t* handle, int status, int events);
  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_command_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_push_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void add_read(void* self);
  static void del_read(void* self);
  static void add_write(void* self);
  static void del_write(void* self);
  static void cleanup(void* self);

  uv_loop_t* loop_;
  RedisLinkSettings settings_;
  Connected on_connected_;
  Closed on_closed_;
  Push on_push_;
  redisAsyncContext* context_ = nullptr;
  std::unique_ptr<uv::Handle<uv_poll_t>> poll_;  // on context_'s socket, while it exists
  int events_ = 0;
  int poll_error_ = 0;  // a failed uv_poll_start, seen inside hiredis; acted on by the deadline check
  State state_ = State::closed;
  std::uint64_t generation_ = 0;  // of the current connection; notices of older ones are dropped
  std::uint64_t connect_started_ms_ = 0;
  std::deque<std::uint64_t> sent_at_;  // when each command still awaiting a reply was queued
  // Why the context is being freed, when we (not hiredis) decided it; else read from hiredis.
  bool closing_ = false;
  bool owner_closing_ = false;
  RedisCloseReason closing_reason_ = RedisCloseReason::owner;
  std::string closing_detail_;
  bool silent_ = false;  // destroying: replies are dropped unrun
  uv::Timer deadline_;   // connect and command deadlines, while not closed
  uv::Timer notify_;     // delivers notices on the next iteration
  std::vector<Notice> notices_;
};

}  // namespace roomd
