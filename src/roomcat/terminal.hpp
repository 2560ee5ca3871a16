// Terminal: line editing for roomcat's interactive mode, through libedit's readline-compatible
// callback interface driven by the loop (uv_poll on stdin), so the socket is served while the
// user types. print() puts a line above the prompt and redraws what was being typed.
//
// readline's state is process-wide, so there is at most one Terminal.
#pragma once

#include <uv.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "roomd/base/uv.hpp"

namespace roomcat {

class Terminal {
 public:
  // nullopt: end of input (Ctrl-D).
  using OnLine = std::function<void(std::optional<std::string>)>;

  Terminal(uv_loop_t* loop, std::string prompt, OnLine on_line);
  ~Terminal();
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  void print(std::string_view text);
  void set_prompt(std::string prompt);
  // Restores the terminal; stops reading and closes the poll. Safe to call twice, and from
  // within the line callback.
  void stop();

 private:
  std::optional<roomd::uv::Handle<uv_poll_t>> poll_;  // while active
  void (*handler_)(char*) = nullptr;
  std::string prompt_;
  OnLine on_line_;
  bool active_ = false;
};

}  // namespace roomcat
