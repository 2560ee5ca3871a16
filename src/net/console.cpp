// Console: stdin admin commands, answered on stdout.
#include "roomd/net/console.hpp"

#include <cstdio>

#include "roomd/base/log.hpp"
#include "roomd/base/names.hpp"
#include "roomd/app/server.hpp"

namespace roomd {

Console::Console(Server& server) : server_(server) {
  uv_loop_t* loop = server.loop();
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
  std::string_view rest = line;
  std::string_view cmd = next_word(rest);
  Router& router = server_.router();
  if (cmd == "stats") {
    print(server_.stats_line() + "\n");
  } else if (cmd == "rooms") {
    std::string out;
    for (const auto& r : router.rooms())
      out += r.name + " members=" + std::to_string(r.members) + " seq=" + std::to_string(r.last_seq) +
             (r.configured ? " configured" : " dynamic") + (r.keyed ? " keyed" : "") + " topic=" + r.topic + "\n";
    print(out.empty() ? "no rooms\n" : out);
  } else if (cmd == "who") {
    std::string_view room = next_word(rest);
    auto members = router.who(room);
    if (!members) return print("! no room '" + std::string(room) + "'\n");
    std::string out = std::string(room) + ":";
    for (const auto& n : *members) out += " " + n;
    print(out + "\n");
  } else if (cmd == "kick") {
    std::string nick(next_word(rest));
    if (nick.empty()) return print("! usage: kick NICK [REASON]\n");
    if (!router.kick(nick, rest)) return print("! no such nick '" + nick + "'\n");
    log::notice("console: kicked " + nick);
    print("kicked " + nick + "\n");
  } else if (cmd == "say") {
    std::string room(next_word(rest));
    if (room.empty() || rest.empty()) return print("! usage: say ROOM TEXT\n");
    if (auto error = router.server_say(room, rest)) return print("! " + *error + "\n");
    print("ok\n");
  } else if (cmd == "reload") {
    server_.reload();
    print("ok\n");
  } else if (cmd == "shutdown") {
    print("shutting down\n");
    server_.shutdown();
  } else if (cmd == "help" || cmd.empty()) {
    print("commands: stats, rooms, who ROOM, kick NICK [REASON], say ROOM TEXT, reload, shutdown\n");
  } else {
    print("! unknown command '" + std::string(cmd) + "' (try help)\n");
  }
}

}  // namespace roomd
