#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
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

// ---- The stoppable mode: feed(bytes, may_go, ...) / resume(may_go, ...) / unread() ----
//
// Written from the contract: may_go() is asked before each line; when it says no, the rest
// is kept unread and resume() goes on from it; a feed while bytes are kept goes behind them.
// Whatever the stops, the frames and the overlong count are those of a framer that never
// stops, fed the same bytes.

namespace {
struct Sink {
  std::vector<std::string> frames;
  int overlong = 0;
  auto on_frame() {
    return [this](std::string_view s) { frames.emplace_back(s); };
  }
  auto on_overlong() {
    return [this] { ++overlong; };
  }
  bool feed(Framer& f, std::string_view bytes, auto&& may_go) {
    return f.feed(bytes, may_go, on_frame(), on_overlong());
  }
  bool resume(Framer& f, auto&& may_go) { return f.resume(may_go, on_frame(), on_overlong()); }
};

// Says yes `left` times, then no; counts how often it was asked.
struct Budget {
  int left;
  int asked = 0;
  bool operator()() {
    ++asked;
    if (left <= 0) return false;
    --left;
    return true;
  }
};
auto always = [] { return true; };
auto never = [] { return false; };

using Frames = std::vector<std::string>;

// The frames of a whole stream, from the contract alone: each line ending in "\n" loses one
// '\r' before it; longer than max is one overlong, empty is dropped. An unfinished tail
// longer than max + 1 (a full frame and a '\r') is already known to be overlong.
struct Model {
  Frames frames;
  int overlong = 0;
};
Model model_of(std::string_view s, std::size_t max) {
  Model m;
  for (;;) {
    auto nl = s.find('\n');
    if (nl == std::string_view::npos) break;
    std::string_view line = s.substr(0, nl);
    s.remove_prefix(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max) ++m.overlong;
    else if (!line.empty()) m.frames.emplace_back(line);
  }
  if (s.size() > max + 1) ++m.overlong;
  return m;
}

// A framer that never stops, fed `s` in one go.
Sink plain(std::string_view s, std::size_t max) {
  Framer f(max);
  Sink k;
  k.feed(f, s, always);
  return k;
}
}  // namespace

TEST_CASE("framer stoppable: stop after the first frame of a chunk, resume later gives the rest") {
  Framer f(100);
  Sink s;
  // Byte-exact: NULs, high bytes and a lone '\r' inside a frame are payload.
  const std::string chunk = std::string("one\ntw\0o\r\n", 10) + "\xff\xfe\rthree\n" + "four\n";
  {
    std::string buf = chunk;  // the caller's read buffer, reused once feed returns
    Budget go{1};
    CHECK_FALSE(s.feed(f, buf, go));
    CHECK(go.asked == 2);  // asked before "one" (yes) and before the next line (no)
    buf.assign(buf.size(), '#');
  }
  CHECK(s.frames == Frames{"one"});
  CHECK(f.unread() == chunk.size() - 4);
  CHECK(f.buffered() == 0);

  // Still stopped: nothing moves.
  CHECK_FALSE(s.resume(f, never));
  CHECK(s.frames == Frames{"one"});
  CHECK(f.unread() == chunk.size() - 4);

  CHECK(s.resume(f, always));
  CHECK(s.frames == Frames{"one", std::string("tw\0o", 4), "\xff\xfe\rthree", "four"});
  CHECK(s.overlong == 0);
  CHECK(f.unread() == 0);
  CHECK(f.buffered() == 0);
  CHECK(s.frames == plain(chunk, 100).frames);

  // Nothing kept: resume is a no-op that says everything was cut.
  CHECK(s.resume(f, never));
  CHECK(s.frames.size() == 4);
}

TEST_CASE("framer stoppable: stop before the first line keeps the whole chunk") {
  Framer f(100);
  Sink s;
  CHECK_FALSE(s.feed(f, "a\nb\n", never));
  CHECK(s.frames.empty());
  CHECK(f.unread() == 4);
  CHECK(f.buffered() == 0);  // kept bytes are not a partial line
  CHECK(s.resume(f, always));
  CHECK(s.frames == Frames{"a", "b"});
  CHECK(f.unread() == 0);
}

TEST_CASE("framer stoppable: a partial line at the end of the kept bytes, completed later") {
  SUBCASE("completed by a feed after the resume") {
    Framer f(100);
    Sink s;
    CHECK_FALSE(s.feed(f, "a\nbc", never));
    CHECK(f.unread() == 4);
    CHECK(f.buffered() == 0);
    CHECK(s.resume(f, Budget{1}));  // "a", then "bc" is only a partial line: no frame to stop at
    CHECK(s.frames == Frames{"a"});
    CHECK(f.unread() == 0);
    CHECK(f.buffered() == 2);
    CHECK(s.feed(f, "d\ne\n", always));
    CHECK(s.frames == Frames{"a", "bcd", "e"});
    CHECK(f.buffered() == 0);
  }
  SUBCASE("completed by a feed while still stopped") {
    Framer f(100);
    Sink s;
    CHECK_FALSE(s.feed(f, "x\ny\nzz", Budget{1}));
    CHECK(s.frames == Frames{"x"});
    CHECK(f.unread() == 4);  // "y\nzz"
    CHECK_FALSE(s.feed(f, "z\n", never));
    CHECK(s.frames == Frames{"x"});
    CHECK(f.unread() == 6);
    CHECK(f.buffered() == 0);
    CHECK_FALSE(s.resume(f, Budget{1}));
    CHECK(s.frames == Frames{"x", "y"});
    CHECK(f.unread() == 4);  // "zzz\n"
    CHECK(s.resume(f, always));
    CHECK(s.frames == Frames{"x", "y", "zzz"});
    CHECK(f.unread() == 0);
    CHECK(f.buffered() == 0);
  }
  SUBCASE("a partial line held before the stop, completed inside the kept bytes") {
    Framer f(100);
    Sink s;
    CHECK(s.feed(f, "pa", never));  // no line to ask about: held as partial
    CHECK(f.unread() == 0);
    CHECK(f.buffered() == 2);
    CHECK_FALSE(s.feed(f, "rt\nnext\n", never));
    CHECK(s.frames.empty());
    CHECK(f.unread() == 8);
    CHECK(f.buffered() == 2);
    CHECK(s.resume(f, always));
    CHECK(s.frames == Frames{"part", "next"});
    CHECK(f.buffered() == 0);
  }
}

TEST_CASE("framer stoppable: a feed while stopped goes behind the kept bytes") {
  Framer f(100);
  Sink s;
  CHECK_FALSE(s.feed(f, "1\n2\n", Budget{1}));
  CHECK(s.frames == Frames{"1"});
  CHECK(f.unread() == 2);

  // Fed while stopped and still not allowed: appended, nothing delivered.
  CHECK_FALSE(s.feed(f, "3\n", never));
  CHECK_FALSE(s.feed(f, "4", never));
  CHECK(s.frames == Frames{"1"});
  CHECK(f.unread() == 5);

  // Allowed one: the kept "2" comes before anything fed later.
  CHECK_FALSE(s.feed(f, "\n5\n", Budget{1}));
  CHECK(s.frames == Frames{"1", "2"});
  CHECK(f.unread() == 6);  // "3\n4\n5\n"

  // The old 3-argument feed on a stopped framer also serves the kept bytes first.
  f.feed("6\n", [&](std::string_view v) { s.frames.emplace_back(v); }, [&] { ++s.overlong; });
  CHECK(s.frames == Frames{"1", "2", "3", "4", "5", "6"});
  CHECK(f.unread() == 0);
  CHECK(f.buffered() == 0);
  CHECK(s.overlong == 0);
}

TEST_CASE("framer stoppable: one frame per resume over a chunk of 100 frames") {
  constexpr std::size_t max = 64;
  std::string stream;
  Frames want;
  for (int i = 0; i < 100; ++i) {
    std::string frame = "frame-" + std::to_string(i) + std::string(static_cast<std::size_t>(i % 7), '.');
    want.push_back(frame);
    stream += frame + (i % 3 == 0 ? "\r\n" : "\n");
  }

  Framer f(max);
  Sink s;
  std::size_t left = stream.size();
  CHECK_FALSE(s.feed(f, stream, Budget{1}));
  REQUIRE(s.frames.size() == 1);
  left -= want[0].size() + 2;
  CHECK(f.unread() == left);
  int resumes = 0;
  bool all = false;
  while (!all && resumes < 1000) {
    std::size_t before = s.frames.size();
    Budget go{1};
    all = s.resume(f, go);
    ++resumes;
    REQUIRE(s.frames.size() == before + 1);  // exactly one frame each time
    left -= want[before].size() + (before % 3 == 0 ? 2 : 1);
    CHECK(f.unread() == left);
    CHECK(f.buffered() == 0);
    // Halfway through, more arrives while stopped (the kept bytes were partly cut already).
    if (resumes == 50) {
      CHECK_FALSE(s.feed(f, "late-1\nlate-2\n", never));
      left += 14;
      CHECK(f.unread() == left);
      want.push_back("late-1");
      want.push_back("late-2");
    }
  }
  CHECK(all);
  CHECK(resumes == 101);  // 99 of the chunk and the two that came late
  CHECK(s.frames == want);
  CHECK(f.unread() == 0);
  CHECK(s.overlong == 0);

  // The same bytes into a framer that never stops, in random splits (fixed seed).
  std::string all_bytes = stream + "late-1\nlate-2\n";
  std::mt19937 rng(20261201);
  for (int round = 0; round < 20; ++round) {
    Framer g(max);
    Sink t;
    std::size_t pos = 0;
    while (pos < all_bytes.size()) {
      std::size_t n = 1 + rng() % 40;
      t.feed(g, std::string_view(all_bytes).substr(pos, n), always);
      pos += std::min(n, all_bytes.size() - pos);
    }
    CHECK(t.frames == s.frames);
    CHECK(t.overlong == 0);
  }
}

TEST_CASE("framer stoppable: overlong lines with a stop before the verdict") {
  Framer f(5);
  Sink s;
  // "1234567" has no line ending yet but is already too long: the verdict is a line too, so
  // a stop before it keeps the bytes and reports nothing yet.
  CHECK_FALSE(s.feed(f, "ab\n1234567", Budget{1}));
  CHECK(s.frames == Frames{"ab"});
  CHECK(s.overlong == 0);
  CHECK(f.unread() == 7);
  CHECK_FALSE(s.resume(f, never));
  CHECK(s.overlong == 0);
  CHECK(f.unread() == 7);
  CHECK(s.resume(f, always));
  CHECK(s.overlong == 1);
  CHECK(f.unread() == 0);
  CHECK(f.buffered() == 0);
  // The rest of the line is skipped as it arrives, stopped or not, and counted once.
  CHECK(s.feed(f, std::string(5000, 'z'), never));
  CHECK(f.unread() == 0);
  CHECK(f.buffered() == 0);
  CHECK_FALSE(s.feed(f, "zz\nafter\n", never));  // the skip ends; "after" waits
  CHECK(s.overlong == 1);
  CHECK(s.resume(f, always));
  CHECK(s.frames == Frames{"ab", "after"});
  CHECK(s.overlong == 1);
}

TEST_CASE("framer stoppable: a held partial goes over the limit in kept bytes") {
  Framer f(5);
  Sink s;
  CHECK(s.feed(f, "123", never));
  CHECK(f.buffered() == 3);
  CHECK_FALSE(s.feed(f, "456\nok\n", never));
  CHECK(s.overlong == 0);
  CHECK(s.frames.empty());
  CHECK_FALSE(s.resume(f, Budget{1}));
  CHECK(s.overlong == 1);
  CHECK(s.frames.empty());
  CHECK(f.buffered() == 0);
  CHECK(s.resume(f, always));
  CHECK(s.frames == Frames{"ok"});
  CHECK(s.overlong == 1);
}

TEST_CASE("framer stoppable: CRLF split by a stop, empty lines, exactly max") {
  Framer f(4);
  Sink s;
  CHECK_FALSE(s.feed(f, "x\nabcd\r", never));
  CHECK_FALSE(s.feed(f, "\n\n\r\n\ny\n", never));
  CHECK(s.frames.empty());
  int resumes = 0;
  while (!s.resume(f, Budget{1}) && resumes < 100) ++resumes;
  CHECK(s.frames == Frames{"x", "abcd", "y"});  // "abcd" is exactly max; empties dropped
  CHECK(s.overlong == 0);
  CHECK(f.unread() == 0);
  CHECK(f.buffered() == 0);
}

TEST_CASE("framer stoppable: every stop position over crafted inputs matches the plain framer") {
  struct Case {
    std::string bytes;
    std::size_t max;
  };
  const std::vector<Case> cases = {
      {"a\nbb\r\n\n\r\nccc\n", 100},
      {"12345\r\n\n\r\n123456\n123456\r\n12345\r\n1234567890\r\nx\n", 5},
      {"abcd\r\nabcd\rx\n\r\r\n\rabc\nlast", 4},
      {std::string(30, 'L') + "\nok\n" + std::string(6, 'M') + "\r\n" + std::string(7, 'N'), 5},
      {"\n\n\n\r\n\r\r\n", 1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.bytes);
    CAPTURE(c.max);
    Sink want = plain(c.bytes, c.max);
    Model m = model_of(c.bytes, c.max);
    CHECK(want.frames == m.frames);
    CHECK(want.overlong == m.overlong);
    // Every split into two feeds, and every number of lines allowed before the first stop;
    // after that one line per resume, with a blocked resume in between.
    for (std::size_t split = 0; split <= c.bytes.size(); ++split) {
      for (int first = 0; first < 12; ++first) {
        CAPTURE(split);
        CAPTURE(first);
        Framer f(c.max);
        Sink s;
        std::string_view all(c.bytes);
        s.feed(f, all.substr(0, split), Budget{first});
        s.feed(f, all.substr(split), Budget{first % 3});
        int guard = 0;
        while (!s.resume(f, Budget{1}) && ++guard < 200) {
          std::size_t n = s.frames.size();
          std::size_t u = f.unread();
          CHECK_FALSE(s.resume(f, never));
          CHECK(s.frames.size() == n);
          CHECK(f.unread() == u);
        }
        CHECK(s.frames == want.frames);
        CHECK(s.overlong == want.overlong);
        CHECK(f.unread() == 0);
        Framer g(c.max);
        Sink t;
        t.feed(g, all, always);
        CHECK(f.buffered() == g.buffered());
      }
    }
  }
}

namespace {
// A random stream: short, empty, near-max and long lines, "\n", "\r\n" and stray '\r',
// NULs and high bytes; sometimes an unfinished last line.
std::string random_stream(std::mt19937& rng, std::size_t max) {
  static const char alphabet[] = {'a', 'b', 'c', '\r', '\0', '\xff', '{', '"'};
  std::string s;
  int lines = static_cast<int>(rng() % 40);
  for (int i = 0; i < lines; ++i) {
    std::size_t len;
    switch (rng() % 6) {
      case 0: len = 0; break;
      case 1: len = max + (rng() % 3) - 1; break;  // max - 1 .. max + 1
      case 2: len = max * 3 + rng() % 50; break;
      default: len = rng() % (max + 1); break;
    }
    for (std::size_t k = 0; k < len; ++k) s += alphabet[rng() % sizeof alphabet];
    if (i + 1 == lines && rng() % 3 == 0) break;  // unfinished tail
    switch (rng() % 4) {
      case 0: s += "\r\n"; break;
      case 1: s += "\r\r\n"; break;
      default: s += '\n'; break;
    }
  }
  return s;
}

std::vector<std::string_view> random_splits(std::mt19937& rng, std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t limit = 1 + rng() % 64;
  while (!s.empty()) {
    std::size_t n = std::min<std::size_t>(s.size(), rng() % (limit + 1));  // empty feeds too
    out.push_back(s.substr(0, n));
    s.remove_prefix(n);
  }
  return out;
}
}  // namespace

TEST_CASE("framer stoppable: random splits and random stops give the plain framer's frames") {
  std::mt19937 rng(0x600d5eed);
  const std::size_t maxes[] = {1, 2, 4, 7, 16, 64};
  for (int iter = 0; iter < 600; ++iter) {
    const std::size_t max = maxes[rng() % std::size(maxes)];
    const std::string stream = random_stream(rng, max);
    CAPTURE(iter);
    CAPTURE(max);
    CAPTURE(stream);
    const unsigned stop_pct = 10 + rng() % 80;
    auto maybe = [&] { return rng() % 100 >= stop_pct; };

    Framer stopped(max);
    Sink s;
    Framer lockstep(max);  // never stops, fed the same chunks at the same time
    Sink l;
    std::string scratch;   // the reader's buffer, overwritten after every feed
    for (std::string_view chunk : random_splits(rng, stream)) {
      l.feed(lockstep, chunk, always);
      scratch.assign(chunk);
      bool all = s.feed(stopped, scratch, maybe);
      scratch.assign(scratch.size(), '#');
      for (int r = static_cast<int>(rng() % 3); r > 0 && !all; --r) all = s.resume(stopped, maybe);
      CHECK(all == (stopped.unread() == 0));
      CHECK(stopped.buffered() <= max + 1);
      // Never ahead of, nor different from, the framer that never stops.
      REQUIRE(s.frames.size() <= l.frames.size());
      CHECK(std::equal(s.frames.begin(), s.frames.end(), l.frames.begin()));
      CHECK(s.overlong <= l.overlong);
      if (all) {  // caught up: the same state as the one that never stopped
        CHECK(s.frames.size() == l.frames.size());
        CHECK(s.overlong == l.overlong);
        CHECK(stopped.buffered() == lockstep.buffered());
      } else {
        std::size_t n = s.frames.size();
        int o = s.overlong;
        std::size_t u = stopped.unread();
        CHECK_FALSE(s.resume(stopped, never));
        CHECK(s.frames.size() == n);
        CHECK(s.overlong == o);
        CHECK(stopped.unread() == u);
      }
    }
    int guard = 0;
    while (!s.resume(stopped, maybe) && ++guard < 100000) {
    }
    CHECK(s.resume(stopped, always));
    CHECK(stopped.unread() == 0);
    CHECK(s.frames == l.frames);
    CHECK(s.overlong == l.overlong);
    CHECK(stopped.buffered() == lockstep.buffered());

    // And a third framer that never stops, fed the same bytes in other splits, and the model.
    Framer other(max);
    Sink o;
    for (std::string_view chunk : random_splits(rng, stream)) o.feed(other, chunk, always);
    CHECK(o.frames == s.frames);
    CHECK(o.overlong == s.overlong);
    CHECK(other.buffered() == stopped.buffered());
    Model m = model_of(stream, max);
    CHECK(m.frames == s.frames);
    CHECK(m.overlong == s.overlong);
  }
}
