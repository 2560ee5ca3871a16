// HistoryHelpers: history queries in idle-priority helper processes. See history_helper.hpp.
#include "roomd/history/history_helper.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <exception>

#include "roomd/base/log.hpp"
#include "roomd/history/history_store.hpp"

namespace roomd {

namespace {

std::optional<std::uint64_t> parse_number(const std::string& s) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

// query: room, before ("" for none), limit, then the search words only when there is a search.
HelperFields encode_query(const HistoryQuery& q) {
  HelperFields f{q.room, q.before ? std::to_string(*q.before) : std::string(), std::to_string(q.limit)};
  if (q.search) f.push_back(*q.search);
  return f;
}

std::optional<HistoryQuery> decode_query(const HelperFields& f) {
  if (f.size() != 3 && f.size() != 4) return std::nullopt;
  HistoryQuery q;
  q.room = f[0];
  if (!f[1].empty()) {
    q.before = parse_number(f[1]);
    if (!q.before) return std::nullopt;
  }
  auto limit = parse_number(f[2]);
  if (!limit || *limit > UINT32_MAX) return std::nullopt;
  q.limit = static_cast<std::uint32_t>(*limit);
  if (f.size() == 4) q.search = f[3];
  return q;
}

// page: error, bad_query ("1"/"0"), more ("1"/"0"), then the bodies, oldest first.
HelperFields encode_page(const HistoryPage& p) {
  HelperFields f{p.error, p.bad_query ? "1" : "0", p.more ? "1" : "0"};
  f.insert(f.end(), p.bodies.begin(), p.bodies.end());
  return f;
}

std::optional<HistoryPage> decode_page(const HelperFields& f) {
  if (f.size() < 3) return std::nullopt;
  HistoryPage p;
  p.error = f[0];
  p.bad_query = f[1] == "1";
  p.more = f[2] == "1";
  p.bodies.assign(f.begin() + 3, f.end());
  return p;
}

HistoryHelpers::HistoryHelpers(uv_loop_t* loop, std::string program, const std::string& db_path, std::size_t slots,
                               Fallback fallback)
    : loop_(loop), argv_{std::move(program), "--history-query-helper", db_path}, fallback_(std::move(fallback)),
      read_buffer_(64 * 1024) {
  for (std::size_t i = 0; i < std::max<std::size_t>(slots, 1); ++i) {
    helpers_.push_back(std::make_unique<Helper>());
    helpers_.back()->owner = this;
  }
}

HistoryHelpers::~HistoryHelpers() { close(); }

void HistoryHelpers::close() {
  if (closed_) return;
  closed_ = true;
  waiting_.clear();
  for (auto& h : helpers_) {
    h->busy.reset();
    stop(*h);
  }
  reap(true);
}

void HistoryHelpers::query(HistoryQuery query, Done done) {
  if (closed_) return;
  waiting_.push_back(Pending{std::move(query), std::move(done), 0});
  dispatch();
}

void HistoryHelpers::dispatch() {
  for (auto& hp : helpers_) {
    Helper& h = *hp;
    if (waiting_.empty()) return;
    if (h.busy) continue;
    if (!h.pipe && !start(h)) {
      // None can be started now: the pool answers what waits, rather than nobody.
      while (!waiting_.empty()) {
        Pending p = std::move(waiting_.front());
        waiting_.pop_front();
        fallback_(std::move(p.query), std::move(p.done));
      }
      return;
    }
    h.busy = std::move(waiting_.front());
    waiting_.pop_front();
    ++h.busy->attempts;
    struct Write {
      uv_write_t req;
      std::string bytes;
    };
    auto* w = new Write{{}, encode_fields(encode_query(h.busy->query))};
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    // A failed write needs nothing here: the helper is gone, and its pipe's read says so.
    int rc = uv_write(&w->req, h.pipe->stream(), &buf, 1,
                      [](uv_write_t* req, int) { delete reinterpret_cast<Write*>(req); });
    if (rc < 0) {
      delete w;
      lost(h, "cannot write to it: " + uv::error_text(rc));
    }
  }
}

bool HistoryHelpers::start(Helper& h) {
  auto spawned = spawn_helper(argv_, "history-query");
  if (!spawned) return false;
  auto pipe = std::make_unique<uv::Handle<uv_pipe_t>>([this](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); });
  if (int rc = uv_pipe_open(pipe->get(), spawned->fd); rc < 0) {
    log::error("history-query helper: " + uv::error_text(rc));
    ::close(spawned->fd);
    reap_helper(spawned->pid);
    return false;  // the pipe closes as it goes
  }
  pipe->get()->data = &h;
  h.pid = spawned->pid;
  h.pipe = std::move(pipe);
  h.received.clear();
  uv::read_start(
      h.pipe->stream(),
      [](uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
        auto* self = static_cast<Helper*>(handle->data)->owner;
        *buf = uv_buf_init(self->read_buffer_.data(), static_cast<unsigned>(self->read_buffer_.size()));
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* helper = static_cast<Helper*>(stream->data);
        helper->owner->on_read(*helper, nread, buf);
      });
  return true;
}

void HistoryHelpers::on_read(Helper& h, ssize_t nread, const uv_buf_t* buf) {
  if (nread < 0) return lost(h, nread == UV_EOF ? "it went away" : uv::error_text(static_cast<int>(nread)));
  h.received.append(buf->base, static_cast<std::size_t>(nread));
  HelperFields fields;
  bool malformed = false;
  if (!take_fields(h.received, fields, malformed)) {
    if (malformed) lost(h, "a malformed answer");
    return;
  }
  if (!h.busy) return lost(h, "an answer nobody asked for");
  auto page = decode_page(fields);
  if (!page) return lost(h, "a malformed answer");
  Pending answered = std::move(*h.busy);
  h.busy.reset();
  dispatch();  // the next query goes out before this answer's callback runs
  answered.done(std::move(*page));
}

void HistoryHelpers::lost(Helper& h, const std::string& why) {
  std::optional<Pending> unanswered = std::move(h.busy);
  h.busy.reset();
  bool again = unanswered && unanswered->attempts < 2;
  log::warning("the history-query helper (pid " + std::to_string(h.pid) + "): " + why +
               (!unanswered ? "; another starts with the next query"
                            : again ? "; its query goes to another" : "; its query goes to the pool"));
  stop(h);
  if (again) waiting_.push_front(std::move(*unanswered));  // asked once more, first
  else if (unanswered) fallback_(std::move(unanswered->query), std::move(unanswered->done));
  dispatch();
}

void HistoryHelpers::reap(bool wait) {
  std::erase_if(unreaped_, [wait](pid_t pid) { return reap_helper(pid, wait); });
}

void HistoryHelpers::stop(Helper& h) {
  if (!h.pipe) return;
  h.pipe.reset();  // uv_close now (no callback reaches h from here on); freed in its close callback
  // It may be in the middle of a query, at idle priority: it is not waited for on the loop.
  // SIGKILL (it only reads), then reap it now if it has gone, or later.
  if (h.pid > 0) {
    ::kill(h.pid, SIGKILL);
    unreaped_.push_back(h.pid);
  }
  reap(false);
  h.pid = -1;
}

int run_history_query_helper(const std::string& db_path) {
  become_idle_helper();
  try {
    HistoryStore store(db_path, HistoryStore::read_only);
    return serve_helper_requests([&store](const HelperFields& request) {
      auto q = decode_query(request);
      if (!q) return encode_page(HistoryPage{{}, false, "malformed query from the daemon", false});
      return encode_page(store.query(*q));
    });
  } catch (const std::exception& e) {
    log::error(std::string("history query helper: ") + e.what());
    return 1;
  }
}

}  // namespace roomd
