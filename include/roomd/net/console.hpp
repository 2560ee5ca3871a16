// Console: the operator's commands on the daemon's stdin (stats, rooms, who, kick, say,
// reload, shutdown), when stdin is a TTY or a pipe. Anything else — /dev/null under
// systemd is a regular file to libuv — means no console. EOF closes the console only.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "roomd/protocol/framer.hpp"
#include "roomd/base/uv.hpp"

namespace roomd {

class Server;

class Console {
 public:
  explicit Console(Server& server);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  bool active() const { return tty_ || pipe_; }

 private:
  uv_stream_t* stream() const;
  void on_line(std::string_view line);
  void print(std::string_view text);
  void close();

  Server& server_;
  std::unique_ptr<uv::Handle<uv_tty_t>> tty_;
  std::unique_ptr<uv::Handle<uv_pipe_t>> pipe_;
  Framer framer_{4096};
  std::vector<char> buffer_ = std::vector<char>(4096);
};

}  // namespace roomd
