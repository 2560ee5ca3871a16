#include "roomd/net/lazy_window.hpp"

#include <doctest/doctest.h>

using roomd::LazyWindow;

TEST_CASE("lazy window: a quiet server's presence waits the floor") {
  LazyWindow w;
  CHECK(w.ms() == LazyWindow::kFloorMs);
  w.after_flush(1);
  w.after_flush(LazyWindow::kBusyFlush - 1);
  CHECK(w.ms() == LazyWindow::kFloorMs);
}

TEST_CASE("lazy window: busy flushes double it up to the ceiling, light ones halve it back") {
  LazyWindow w;
  w.after_flush(LazyWindow::kBusyFlush);
  CHECK(w.ms() == 2 * LazyWindow::kFloorMs);
  for (int i = 0; i < 10; ++i) w.after_flush(10 * LazyWindow::kBusyFlush);
  CHECK(w.ms() == LazyWindow::kCeilingMs);
  w.after_flush(3);
  CHECK(w.ms() == LazyWindow::kCeilingMs / 2);
  for (int i = 0; i < 10; ++i) w.after_flush(0);
  CHECK(w.ms() == LazyWindow::kFloorMs);
}
