// Console: stdin lines in, answers on stdout.
#include "roomd/net/console.hpp"

#include <cstdio>

#include "roomd/base/log.hpp"

namespace roomd {

Console::Console(uv_loop_t* loop, OnLine on_line) : on_line_(std::move(on_line)) {
  switch (uv_guess_handle(0)) {
    case UV_TTY:
      tty_ = std::make_unique<uv::Handle<uv_tty_t>>([loop](uv_tty_t* t) { return uv_tty_init(loop, t, 0, 1); });
      break;
    case UV_NAMED_PIPE:
      // The open is a step after the init (uv::Handle): if it throws, the Handle closes.
      pipe_ = std::make_unique<uv::Handle<uv_pipe_t>>([loop](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
      uv::check(uv_pipe_open(pipe_->get(), 0), "console: uv_pipe_open");
      break;
    default:
      log::debug("console: stdin is not a TTY or a pipe; no console");
      return;
  }
  stream()->data = this;
  uv::read_start(
      stream(),
      [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
        auto* self = static_cast<Console*>(h->data);
        *buf = uv_buf_init(self->buffer_.data(), static_cast<unsigned>(self->buffer_.size()));
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* self = static_cast<Console*>(s->data);
        if (!self) return;
        if (nread > 0) {
          self->framer_.feed(
              {buf->base, static_cast<std::size_t>(nread)}, [self](std::string_view line) { self->on_line(line); },
              [self] { self->print("! line too long\n"); });
        } else if (nread < 0) {
          log::info("console: stdin closed; the daemon goes on");
          self->close();
        }
      });
}

Console::~Console() = default;

uv_stream_t* Console::stream() const {
  return tty_ ? reinterpret_cast<uv_stream_t*>(tty_->get()) : reinterpret_cast<uv_stream_t*>(pipe_->get());
}

void Console::close() {
  // Handle::reset only starts uv_close; the memory goes in the close callback.
  if (tty_) tty_.reset();
  if (pipe_) pipe_.reset();
}

void Console::print(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void Console::on_line(std::string_view line) {
  if (std::string answer = on_line_(line); !answer.empty()) print(answer);
}

}  // namespace roomd
