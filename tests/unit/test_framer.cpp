#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "roomd/protocol/framer.hpp"

using roomd::Framer;

namespace {
struct Collect {
  std::vector<std::string> frames;
  int overlong = 0;
  void feed(Framer& f, std::string_view bytes) {
    f.feed(bytes, [&](std::string_view s) { frames.emplace_back(s); }, [&] { ++overlong; });
  }
};
}  // namespace

TEST_CASE("framer: many frames in one read, CRLF, empty lines") {
  Framer f(100);
  Collect c;
  c.feed(f, "a\nbb\r\n\n\r\nccc\n");
  CHECK(c.frames == std::vector<std::string>{"a", "bb", "ccc"});
  CHECK(c.overlong == 0);
  CHECK(f.buffered() == 0);
}

TEST_CASE("framer: a frame split across reads, byte by byte") {
  Framer f(100);
  Collect c;
  for (char ch : std::string("{\"op\":\"ping\"}\r\nnext\n")) c.feed(f, std::string(1, ch));
  CHECK(c.frames == std::vector<std::string>{"{\"op\":\"ping\"}", "next"});
}

TEST_CASE("framer: CR split from its LF still ends one frame") {
  Framer f(4);
  Collect c;
  c.feed(f, "abcd\r");
  c.feed(f, "\n");
  CHECK(c.frames == std::vector<std::string>{"abcd"});  // exactly max, line ending not counted
  CHECK(c.overlong == 0);
}

TEST_CASE("framer: overlong line is reported once and skipped without buffering") {
  Framer f(10);
  Collect c;
  c.feed(f, "ok\n");
  c.feed(f, std::string(8, 'x'));
  c.feed(f, std::string(1000, 'y'));  // now over the limit
  CHECK(c.overlong == 1);
  CHECK(f.buffered() == 0);
  c.feed(f, std::string(5000, 'z'));  // still the same line: skipped, not buffered
  CHECK(f.buffered() == 0);
  CHECK(c.overlong == 1);
  c.feed(f, "zz\nafter\n");
  CHECK(c.frames == std::vector<std::string>{"ok", "after"});
  CHECK(c.overlong == 1);
}

TEST_CASE("framer: overlong line inside one read") {
  Framer f(5);
  Collect c;
  c.feed(f, "123456\n12345\n1234567890\r\nx\n");
  CHECK(c.frames == std::vector<std::string>{"12345", "x"});
  CHECK(c.overlong == 2);
}

TEST_CASE("framer: partial plus completion over the limit") {
  Framer f(5);
  Collect c;
  c.feed(f, "123");
  c.feed(f, "456\nok\n");
  CHECK(c.overlong == 1);
  CHECK(c.frames == std::vector<std::string>{"ok"});
}
