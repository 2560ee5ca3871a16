// Terminal: libedit line editing on the loop.
#include "terminal.hpp"

#include <editline/readline.h>

#include <cstdio>

namespace roomcat {

namespace {
Terminal* current = nullptr;  // readline's callback carries no user data
Terminal::OnLine* current_on_line = nullptr;
}  // namespace

Terminal::Terminal(uv_loop_t* loop, std::string prompt, OnLine on_line)
    : prompt_(std::move(prompt)), on_line_(std::move(on_line)) {
  current = this;
  current_on_line = &on_line_;
  // Signals are the loop's business (roomcat turns Ctrl-C into a clean goodbye); libedit's
  // own handlers would re-raise them at the whole process group.
  rl_catch_signals = 0;
  handler_ = [](char* line) {
    if (!current_on_line) return;
    if (!line) return (*current_on_line)(std::nullopt);
    std::string text(line);
    std::free(line);
    // libedit keeps the entered text as its line until the next key; a fresh handler starts
    // an empty one, so a message printed before then does not redraw the old text.
    rl_callback_handler_remove();
    rl_callback_handler_install(current->prompt_.c_str(), current->handler_);
    if (!text.empty()) add_history(text.c_str());
    (*current_on_line)(std::move(text));
  };
  rl_callback_handler_install(prompt_.c_str(), handler_);
  try {
    poll_.emplace([loop](uv_poll_t* p) { return uv_poll_init(loop, p, 0); });
    poll_->get()->data = this;
    roomd::uv::check(uv_poll_start(poll_->get(), UV_READABLE,
                                   [](uv_poll_t* p, int status, int) {
                                     auto* self = static_cast<Terminal*>(p->data);
                                     if (status < 0 || !self->active_) return;
                                     rl_callback_read_char();
                                   }),
                     "uv_poll_start");
  } catch (...) {
    // No destructor runs for a constructor that throws: give the terminal back here.
    poll_.reset();
    rl_callback_handler_remove();
    current_on_line = nullptr;
    current = nullptr;
    throw;
  }
  active_ = true;
}

Terminal::~Terminal() { stop(); }

void Terminal::stop() {
  if (!active_) return;
  active_ = false;
  poll_.reset();  // starts uv_close, which stops the poll; the fd stays open (it is stdin)
  rl_callback_handler_remove();
  current_on_line = nullptr;
  current = nullptr;
  std::fputs("\n", stdout);
  std::fflush(stdout);
}

void Terminal::print(std::string_view text) {
  if (!active_) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return;
  }
  // Erase the prompt line, write the text where it was, then draw the prompt and the
  // half-typed line again below it.
  std::fputs("\r\033[K", stdout);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  rl_forced_update_display();
}

void Terminal::set_prompt(std::string prompt) {
  prompt_ = std::move(prompt);
  if (active_) rl_set_prompt(prompt_.c_str());
}

}  // namespace roomcat
