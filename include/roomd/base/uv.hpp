// Small RAII owners for libuv handles. A handle's memory belongs to libuv from uv_close until
// its close callback, so the wrapper hands it over on destruction and the close callback
// frees it: no code outside this file calls uv_close.
#pragma once

#include <uv.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

namespace roomd::uv {

inline std::string error_text(int code) { return std::string(uv_strerror(code)); }

inline void check(int rc, const char* what) {
  if (rc < 0) throw std::runtime_error(std::string(what) + ": " + error_text(rc));
}

// Owns one initialised handle of type T (uv_timer_t, uv_tcp_t, …). `data` is the owner's;
// from close() on, the handle is libuv's until its close callback, which frees it. `init` is
// the uv_*_init call alone: one that fails has registered nothing, so the memory is freed at
// once and check throws. Whatever comes after (open, bind) is a step of its own, checked by
// the owner: the Handle then exists, and closes as usual when the owner gives up.
template <class T>
class Handle {
 public:
  template <class Init>
  explicit Handle(Init&& init) : raw_(new T{}) {
    int rc = init(raw_);
    if (rc < 0) {
      delete raw_;  // never initialised: libuv holds no reference yet
      raw_ = nullptr;
      check(rc, "uv handle init");
    }
  }
  ~Handle() { close(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  T* get() const { return raw_; }
  uv_handle_t* base() const { return reinterpret_cast<uv_handle_t*>(raw_); }
  uv_stream_t* stream() const { return reinterpret_cast<uv_stream_t*>(raw_); }
  explicit operator bool() const { return raw_ != nullptr; }

  // Starts uv_close. `on_closed`, if given, runs from the close callback, just before the
  // memory is freed: the point where an owner that lives as long as its handle may go.
  void close(std::function<void()> on_closed = {}) {
    if (!raw_) return;
    raw_->data = on_closed ? new std::function<void()>(std::move(on_closed)) : nullptr;
    uv_close(base(), [](uv_handle_t* h) {
      if (auto* then = static_cast<std::function<void()>*>(h->data)) {
        (*then)();
        delete then;
      }
      delete reinterpret_cast<T*>(h);
    });
    raw_ = nullptr;
  }
  void reset() { close(); }

 private:
  T* raw_;
};

// uv_read_start, checked. It fails only for a stream that is closing, already reading or not
// readable: a bug, so it throws. What goes wrong while reading (EOF, a reset) is no failure of
// the start: it reaches `read` as nread < 0.
inline void read_start(uv_stream_t* stream, uv_alloc_cb alloc, uv_read_cb read) {
  check(uv_read_start(stream, alloc, read), "uv_read_start");
}

class Timer {
 public:
  Timer(uv_loop_t* loop, std::function<void()> on_fire)
      : handle_([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }), on_fire_(std::move(on_fire)) {
    handle_.get()->data = this;
  }
  void start(std::uint64_t timeout_ms, std::uint64_t repeat_ms) {
    check(uv_timer_start(handle_.get(), [](uv_timer_t* t) { static_cast<Timer*>(t->data)->on_fire_(); },
                         timeout_ms, repeat_ms),
          "uv_timer_start");
  }
  void stop() { check(uv_timer_stop(handle_.get()), "uv_timer_stop"); }

 private:
  Handle<uv_timer_t> handle_;
  std::function<void()> on_fire_;
};

class Signal {
 public:
  Signal(uv_loop_t* loop, int signum, std::function<void()> on_signal)
      : handle_([loop](uv_signal_t* s) { return uv_signal_init(loop, s); }), on_signal_(std::move(on_signal)) {
    handle_.get()->data = this;
    check(uv_signal_start(handle_.get(),
                          [](uv_signal_t* s, int) { static_cast<Signal*>(s->data)->on_signal_(); },
                          signum),
          "uv_signal_start");
  }
  // No longer catches the signal; the last handle of a signal that stops gives it back its
  // default disposition. Safe from the signal's own callback.
  void stop() { check(uv_signal_stop(handle_.get()), "uv_signal_stop"); }

 private:
  Handle<uv_signal_t> handle_;
  std::function<void()> on_signal_;
};

// Runs a callback once per loop iteration, just before the loop blocks for I/O: the point
// where everything a turn produced is written out (Redis' beforeSleep).
class Prepare {
 public:
  Prepare(uv_loop_t* loop, std::function<void()> on_turn)
      : handle_([loop](uv_prepare_t* p) { return uv_prepare_init(loop, p); }), on_turn_(std::move(on_turn)) {
    handle_.get()->data = this;
    check(uv_prepare_start(handle_.get(), [](uv_prepare_t* p) { static_cast<Prepare*>(p->data)->on_turn_(); }),
          "uv_prepare_start");
  }

 private:
  Handle<uv_prepare_t> handle_;
  std::function<void()> on_turn_;
};

// While started, the loop polls without blocking: a phase left work for the next turn.
class Idle {
 public:
  explicit Idle(uv_loop_t* loop) : handle_([loop](uv_idle_t* i) { return uv_idle_init(loop, i); }) {}
  void start() {
    if (!active_) check(uv_idle_start(handle_.get(), [](uv_idle_t*) {}), "uv_idle_start");
    active_ = true;
  }
  void stop() {
    if (active_) uv_idle_stop(handle_.get());  // always 0
    active_ = false;
  }

 private:
  Handle<uv_idle_t> handle_;
  bool active_ = false;
};

}  // namespace roomd::uv
