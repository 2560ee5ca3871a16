// RedisLink: hiredis' async context on roomd's loop (redis_link.hpp).
#include "roomd/net/redis_link.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace roomd {

std::string_view to_string(RedisCloseReason reason) {
  switch (reason) {
    case RedisCloseReason::refused: return "refused";
    case RedisCloseReason::reset: return "reset";
    case RedisCloseReason::timeout: return "timeout";
    case RedisCloseReason::protocol: return "protocol";
    case RedisCloseReason::owner: return "closed";
  }
  return "closed";
}

// A command's callback, handed to hiredis as privdata. hiredis calls it exactly once: with
// the reply, or with nullptr when the context is freed first.
struct RedisLink::CommandSlot {
  RedisLink* link;
  Reply reply;
};

RedisLink::RedisLink(uv_loop_t* loop, RedisLinkSettings settings, Connected on_connected, Closed on_closed)
    : loop_(loop),
      settings_(std::move(settings)),
      on_connected_(std::move(on_connected)),
      on_closed_(std::move(on_closed)),
      deadline_(loop, [this] { check_deadlines(); }),
      notify_(loop, [this] { deliver_notices(); }) {}

RedisLink::~RedisLink() {
  silent_ = true;
  owner_closing_ = true;
  free_context();
}

void RedisLink::connect() {
  if (state_ != State::closed) return;
  ++generation_;
  closing_ = owner_closing_ = false;
  poll_error_ = 0;
  sent_at_.clear();
  const ListenAddress& a = settings_.address;
  redisAsyncContext* ac = a.kind == ListenAddress::Kind::unix_path ? redisAsyncConnectUnix(a.host.c_str())
                                                                    : redisAsyncConnect(a.host.c_str(), a.port);
  if (!ac) return post({generation_, false, RedisCloseReason::refused, "out of memory"});
  if (ac->err) {
    // Refused at once (a loopback port nobody listens on, a missing socket path).
    std::string detail = ac->errstr;
    redisAsyncFree(ac);
    return post({generation_, false, RedisCloseReason::refused, detail});
  }
  try {
    poll_ = std::make_unique<uv::Handle<uv_poll_t>>(
        [this, fd = ac->c.fd](uv_poll_t* p) { return uv_poll_init_socket(loop_, p, fd); });
  } catch (const std::exception& e) {
    redisAsyncFree(ac);
    return post({generation_, false, RedisCloseReason::refused, e.what()});
  }
  poll_->get()->data = this;
  context_ = ac;
  ac->data = this;
  ac->ev.data = this;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  state_ = State::connecting;
  connect_started_ms_ = uv_now(loop_);
  // The connect completes at the socket's first writable event.
  redisAsyncSetConnectCallback(ac, on_connect);
  const std::uint32_t shortest = std::min(settings_.connect_timeout_ms, settings_.command_timeout_ms);
  const std::uint64_t every = std::clamp<std::uint64_t>(shortest / 4, 10, 250);
  deadline_.start(every, every);
}

void RedisLink::close() {
  if (state_ == State::closed || closing_) return;
  owner_closing_ = true;
  free_context();
}

void RedisLink::fail(RedisCloseReason reason, std::string detail) {
  if (state_ == State::closed || closing_) return;
  closing_reason_ = reason;
  closing_detail_ = std::move(detail);
  free_context();
}

// Frees the context through hiredis: inside one of its reply callbacks hiredis defers it until
// the callback returns. Either way pending replies get nullptr, then cleanup() runs.
void RedisLink::free_context() {
  if (!context_ || closing_) return;
  closing_ = true;
  redisAsyncFree(context_);
}

// The context is going: hiredis calls this from its free, after the pending callbacks ran and
// before it closes the socket, so the poll handle stops watching a descriptor still open.
void RedisLink::cleanup(void* self) {
  auto* link = static_cast<RedisLink*>(self);
  redisAsyncContext* ac = link->context_;
  link->poll_.reset();
  link->events_ = 0;
  link->deadline_.stop();
  const bool was_open = link->state_ == State::open;
  link->state_ = State::closed;
  link->context_ = nullptr;
  link->sent_at_.clear();
  if (link->silent_ || link->owner_closing_) return;
  RedisCloseReason reason = link->closing_reason_;
  std::string detail = link->closing_detail_;
  if (!link->closing_) {
    // hiredis ended it itself (an EOF, a read or write error, a reply it could not parse).
    detail = ac && ac->errstr && *ac->errstr ? ac->errstr : "connection lost";
    if (!was_open) reason = RedisCloseReason::refused;
    else if (ac && ac->err == REDIS_ERR_PROTOCOL) reason = RedisCloseReason::protocol;
    else reason = RedisCloseReason::reset;
  }
  link->closing_ = true;  // stays until the next connect()
  link->post({link->generation_, false, reason, detail});
}

void RedisLink::post(Notice notice) {
  notices_.push_back(std::move(notice));
  notify_.start(0, 0);
}

void RedisLink::deliver_notices() {
  std::vector<Notice> batch;
  batch.swap(notices_);
  for (auto& n : batch) {
    if (n.generation != generation_) continue;  // of a connection since replaced
    if (n.connected) {
      if (state_ == State::open && on_connected_) on_connected_();
    } else if (on_closed_) {
      on_closed_(n.reason, n.detail);
    }
  }
}

void RedisLink::check_deadlines() {
  const std::uint64_t now = uv_now(loop_);
  if (poll_error_ < 0) return fail(RedisCloseReason::reset, "uv_poll_start: " + uv::error_text(poll_error_));
  if (state_ == State::connecting && now - connect_started_ms_ >= settings_.connect_timeout_ms)
    return fail(RedisCloseReason::timeout, "no connection within " + std::to_string(settings_.connect_timeout_ms) + " ms");
  auto overdue = [&] { return state_ == State::open && !sent_at_.empty() && now - sent_at_.front() >= settings_.command_timeout_ms; };
  if (!overdue()) return;
  // Timers run before the loop polls: after a long busy turn the reply may be waiting unread
  // in the socket. Read once before calling Redis frozen (this may also end the link).
  redisAsyncHandleRead(context_);
  if (overdue()) fail(RedisCloseReason::timeout, "no reply within " + std::to_string(settings_.command_timeout_ms) + " ms");
}

// ---- hiredis' event hooks ----------------------------------------------------------------

void RedisLink::update_poll() {
  if (!poll_) return;
  int rc = events_ ? uv_poll_start(poll_->get(), events_, on_poll) : uv_poll_stop(poll_->get());
  // This runs inside hiredis, which must not be freed from here: the deadline check ends the
  // link on its next tick. (uv_poll_start on a live socket does not fail in practice.)
  if (rc < 0) poll_error_ = rc;
}

void RedisLink::add_read(void* self) {
  auto* link = static_cast<RedisLink*>(self);
  link->events_ |= UV_READABLE;
  link->update_poll();
}
void RedisLink::del_read(void* self) {
  auto* link = static_cast<RedisLink*>(self);
  link->events_ &= ~UV_READABLE;
  link->update_poll();
}
void RedisLink::add_write(void* self) {
  auto* link = static_cast<RedisLink*>(self);
  link->events_ |= UV_WRITABLE;
  link->update_poll();
}
void RedisLink::del_write(void* self) {
  auto* link = static_cast<RedisLink*>(self);
  link->events_ &= ~UV_WRITABLE;
  link->update_poll();
}

void RedisLink::on_poll(uv_poll_t* handle, int status, int events) {
  auto* link = static_cast<RedisLink*>(handle->data);
  if (!link->context_) return;
  if (status < 0) {
    // libuv reports the socket's error condition (POLLERR) as a status and stops the handle:
    // the adapter that ships with hiredis 0.14 returned here and the link hung. The socket
    // says what happened.
    int error = 0;
    socklen_t len = sizeof error;
    if (getsockopt(link->context_->c.fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error == 0) error = -status;
    const bool connecting = link->state_ == State::connecting;
    return link->fail(connecting ? RedisCloseReason::refused : RedisCloseReason::reset, std::strerror(error));
  }
  // Either call may free the context (an error, an EOF): cleanup() then clears context_.
  if (events & UV_READABLE) redisAsyncHandleRead(link->context_);
  if (link->context_ && (events & UV_WRITABLE)) redisAsyncHandleWrite(link->context_);
}

void RedisLink::on_connect(const redisAsyncContext* ac, int status) {
  auto* link = static_cast<RedisLink*>(ac->data);
  // On failure hiredis frees the context next; cleanup() reports it as refused.
  if (status != REDIS_OK) return;
  link->state_ = State::open;
  link->post({link->generation_, true, RedisCloseReason::owner, {}});
}

void RedisLink::on_command_reply(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<CommandSlot> slot(static_cast<CommandSlot*>(privdata));
  RedisLink* link = slot->link;
  if (reply && !link->sent_at_.empty()) link->sent_at_.pop_front();  // replies come in order
  if (link->silent_ || !slot->reply) return;
  slot->reply(static_cast<const redisReply*>(reply));
}

void RedisLink::on_push_reply(redisAsyncContext*, void* reply, void* privdata) {
  auto* link = static_cast<RedisLink*>(privdata);
  // nullptr: the context is being freed (once per channel); the owner hears it as a close.
  if (!reply || link->silent_ || !link->on_push_) return;
  link->on_push_(*static_cast<const redisReply*>(reply));
}

// ---- commands ------------------------------------------------------------------------------

bool RedisLink::command(const std::vector<std::string>& args, Reply on_reply) {
  if (!context_ || closing_ || args.empty()) return false;
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto slot = std::make_unique<CommandSlot>(CommandSlot{this, std::move(on_reply)});
  if (redisAsyncCommandArgv(context_, on_command_reply, slot.get(), static_cast<int>(args.size()), argv.data(),
                            lens.data()) != REDIS_OK)
    return false;
  slot.release();  // hiredis owns it until on_command_reply
  sent_at_.push_back(uv_now(loop_));
  return true;
}

bool RedisLink::subscribe(const std::string& channel) {
  if (!context_ || closing_) return false;
  const char* argv[] = {"SUBSCRIBE", channel.data()};
  const std::size_t lens[] = {9, channel.size()};
  return redisAsyncCommandArgv(context_, on_push_reply, this, 2, argv, lens) == REDIS_OK;
}

bool RedisLink::unsubscribe(const std::string& channel) {
  if (!context_ || closing_) return false;
  const char* argv[] = {"UNSUBSCRIBE", channel.data()};
  const std::size_t lens[] = {11, channel.size()};
  return redisAsyncCommandArgv(context_, on_push_reply, this, 2, argv, lens) == REDIS_OK;
}

}  // namespace roomd
