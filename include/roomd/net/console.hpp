// Console: the operator's lines on the daemon's stdin, when it is a TTY or a pipe, each
// handed to a command function whose answer goes to stdout (the commands themselves are the
// app's: console_commands.hpp). Anything else — /dev/null under systemd is a regular file to
// libuv — means no console. EOF closes the console only.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "roomd/protocol/framer.hpp"
#include "roomd/base/uv.hpp"

namespace roomd {

class Console {
 public:
  // Runs one line; returns what to print (each line ending in '\n'), possibly nothing.
  using OnLine = std::function<std::string(std::string_view line)>;
  Console(uv_loop_t* loop, OnLine on_line);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  bool active() const { return tty_ || pipe_; }

 private:
  uv_stream_t* stream() const;
  void on_line(std::string_view line);
  void print(std::string_view text);
  void close();

  OnLine on_line_;
  std::unique_ptr<uv::Handle<uv_tty_t>> tty_;
  std::unique_ptr<uv::Handle<uv_pipe_t>> pipe_;
  Framer framer_{4096};
  std::vector<char> buffer_ = std::vector<char>(4096);
};

}  // namespace roomd
