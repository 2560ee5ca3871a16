// HistoryStore: SQLite schema, batched appends, paging and FTS5 search.
#include "roomd/history/history_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string_view>

#include "roomd/base/names.hpp"

namespace roomd {

namespace {

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS messages(
  id   INTEGER PRIMARY KEY,
  room TEXT NOT NULL,
  seq  INTEGER NOT NULL,
  body TEXT NOT NULL,
  text TEXT NOT NULL DEFAULT '',
  UNIQUE(room, seq)
);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, content='messages', content_rowid='id');
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES('epoch', lower(hex(randomblob(8))));
)sql";

// A prepared statement that finalizes itself, or, with `kept`, one that stays prepared on its
// connection for the next query with the same SQL (found again by its text: a reader has two
// or three) and is only reset and unbound here. Preparing the search took 7 of its 24 µs.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql, bool kept = false) : kept_(kept) {
    if (kept_)
      for (sqlite3_stmt* s = sqlite3_next_stmt(db, nullptr); s; s = sqlite3_next_stmt(db, s))
        if (!sqlite3_stmt_busy(s) && std::strcmp(sqlite3_sql(s), sql) == 0) {
          stmt_ = s;
          return;
        }
    if (sqlite3_prepare_v3(db, sql, -1, kept_ ? SQLITE_PREPARE_PERSISTENT : 0, &stmt_, nullptr) != SQLITE_OK)
      error_ = sqlite3_errmsg(db);
  }
  ~Statement() {
    if (!kept_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  explicit operator bool() const { return stmt_ != nullptr; }
  sqlite3_stmt* get() const { return stmt_; }
  const std::string& error() const { return error_; }
  void bind(int i, const std::string& s) { sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); }
  void bind(int i, std::int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  std::string column_text(int i) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, i))) : std::string();
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  std::string error_;
  bool kept_;
};

// The queries whose statements readers keep prepared (Statement with `kept`).
const char* const kPageSql = "SELECT body FROM messages WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3";
// A room's messages are appended in seq order, so their ids grow with seq: walking the
// index's matches newest id first, FTS5 can stop at the limit instead of sorting all.
const char* const kSearchSql =
    "SELECT m.body FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
    "WHERE messages_fts MATCH ?4 AND m.room = ?1 AND m.seq < ?2 ORDER BY messages_fts.rowid DESC LIMIT ?3";

// Closes a reader, finalizing the statements it kept: only ours, since the connection's list
// also holds those FTS5 prepared for itself, which it finalizes when it is closed.
void close_reader(sqlite3* db) {
  std::vector<sqlite3_stmt*> kept;
  for (sqlite3_stmt* s = sqlite3_next_stmt(db, nullptr); s; s = sqlite3_next_stmt(db, s))
    if (std::strcmp(sqlite3_sql(s), kPageSql) == 0 || std::strcmp(sqlite3_sql(s), kSearchSql) == 0) kept.push_back(s);
  for (sqlite3_stmt* s : kept) sqlite3_finalize(s);
  sqlite3_close(db);
}

sqlite3* open_db(const std::string& path, bool read_only) {
  sqlite3* db = nullptr;
  int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw std::runtime_error("cannot open history database " + path + ": " + why);
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

std::string exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) == SQLITE_OK) return {};
  std::string why = err ? err : sqlite3_errmsg(db);
  sqlite3_free(err);
  return why;
}

}  // namespace

struct HistoryStore::Lease {
  explicit Lease(const HistoryStore& s) : store(s), db(s.borrow_reader()) {}
  ~Lease() { store.give_back(db); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  const HistoryStore& store;
  sqlite3* const db;
};

sqlite3* HistoryStore::borrow_reader() const {
  {
    std::lock_guard lock(readers_mutex_);
    if (!idle_readers_.empty()) {
      sqlite3* db = idle_readers_.back();
      idle_readers_.pop_back();
      return db;
    }
  }
  return open_db(path_, true);  // at most one per thread querying at once
}

void HistoryStore::give_back(sqlite3* db) const {
  std::lock_guard lock(readers_mutex_);
  idle_readers_.push_back(db);
}

std::string fts_query(const std::string& words) {
  std::string out;
  std::string_view rest = words;
  for (auto w = next_word(rest); !w.empty(); w = next_word(rest)) {
    bool prefix = w.size() > 1 && w.back() == '*';
    if (prefix) w.remove_suffix(1);
    std::string quoted = "\"";
    for (char c : w) {
      if (c == '"') quoted += '"';  // "" is a literal quote inside an FTS5 string
      quoted += c;
    }
    quoted += '"';
    if (prefix) quoted += '*';
    if (!out.empty()) out += ' ';
    out += quoted;
  }
  return out;
}

HistoryStore::HistoryStore(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
  writer_ = open_db(path_, false);
  // WAL: readers do not block the writer. synchronous=FULL: an acknowledged message is on
  // disk, so it survives kill -9 and power loss alike.
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", kSchema}) {
    if (auto err = exec(writer_, sql); !err.empty()) {
      sqlite3_close(writer_);
      writer_ = nullptr;
      throw std::runtime_error("cannot prepare history database " + path_ + ": " + err);
    }
  }
  // 'open' is 1 while a writer has the file: found so at open, the last one died with it.
  {
    Statement open(writer_, "SELECT value FROM meta WHERE key = 'open'");
    opened_after_crash_ = open && sqlite3_step(open.get()) == SQLITE_ROW && open.column_text(0) == "1";
  }
  const char* mark = opened_after_crash_
                         ? "BEGIN IMMEDIATE; UPDATE meta SET value = lower(hex(randomblob(8))) WHERE key = 'epoch';"
                           " INSERT OR REPLACE INTO meta(key, value) VALUES('open', '1'); COMMIT"
                         : "INSERT OR REPLACE INTO meta(key, value) VALUES('open', '1')";
  if (auto err = exec(writer_, mark); !err.empty()) {
    sqlite3_close(writer_);
    writer_ = nullptr;
    throw std::runtime_error("cannot prepare history database " + path_ + ": " + err);
  }
}

HistoryStore::HistoryStore(std::string path, ReadOnly) : path_(std::move(path)) {
  give_back(open_db(path_, true));  // fails here, with the reason, if the file is not there
}

HistoryStore::~HistoryStore() {
  for (sqlite3* db : idle_readers_) close_reader(db);
  if (writer_) exec(writer_, "INSERT OR REPLACE INTO meta(key, value) VALUES('open', '0')");  // a clean close
  sqlite3_close(writer_);
}

std::string HistoryStore::append(const std::vector<StoredMessage>& batch, std::size_t* skipped) {
  if (!writer_) return "the history database is open read-only";
  if (auto err = exec(writer_, "BEGIN IMMEDIATE"); !err.empty()) return err;
  // OR IGNORE: a seq stored already stays as it is (a clustered room's feed is idempotent by
  // seq), and its text is not indexed twice.
  Statement insert(writer_, "INSERT OR IGNORE INTO messages(room, seq, body, text) VALUES(?, ?, ?, ?)");
  Statement index(writer_, "INSERT INTO messages_fts(rowid, text) VALUES(last_insert_rowid(), ?)");
  Statement epoch(writer_, "INSERT OR REPLACE INTO meta(key, value) VALUES('epoch:' || ?, ?)");
  if (!insert || !index || !epoch) {
    exec(writer_, "ROLLBACK");
    return !insert ? insert.error() : !index ? index.error() : epoch.error();
  }
  auto failed = [this] {
    std::string why = sqlite3_errmsg(writer_);
    exec(writer_, "ROLLBACK");
    return why;
  };
  std::map<std::string_view, std::string_view> epochs;  // each room's last, in seq order
  for (const auto& m : batch) {
    insert.bind(1, m.room);
    insert.bind(2, static_cast<std::int64_t>(m.seq));
    insert.bind(3, m.body);
    insert.bind(4, m.text);
    if (sqlite3_step(insert.get()) != SQLITE_DONE) return failed();
    sqlite3_reset(insert.get());
    if (!m.epoch.empty()) epochs[m.room] = m.epoch;
    if (sqlite3_changes(writer_) == 0) {
      if (skipped) ++*skipped;
      continue;
    }
    index.bind(1, m.text);
    if (sqlite3_step(index.get()) != SQLITE_DONE) return failed();
    sqlite3_reset(index.get());
  }
  for (const auto& [room, e] : epochs) {
    epoch.bind(1, std::string(room));
    epoch.bind(2, std::string(e));
    if (sqlite3_step(epoch.get()) != SQLITE_DONE) return failed();
    sqlite3_reset(epoch.get());
  }
  return exec(writer_, "COMMIT");
}

std::string HistoryStore::trim(const std::string& room, std::uint64_t keep_after_seq) {
  if (!writer_) return "the history database is open read-only";
  if (auto err = exec(writer_, "BEGIN IMMEDIATE"); !err.empty()) return err;
  Statement unindex(writer_,
                    "INSERT INTO messages_fts(messages_fts, rowid, text) "
                    "SELECT 'delete', id, text FROM messages WHERE room = ? AND seq <= ?");
  Statement remove(writer_, "DELETE FROM messages WHERE room = ? AND seq <= ?");
  for (Statement* s : {&unindex, &remove}) {
    s->bind(1, room);
    s->bind(2, static_cast<std::int64_t>(keep_after_seq));
    if (!*s || sqlite3_step(s->get()) != SQLITE_DONE) {
      std::string why = *s ? sqlite3_errmsg(writer_) : s->error();
      exec(writer_, "ROLLBACK");
      return why;
    }
  }
  return exec(writer_, "COMMIT");
}

RoomState HistoryStore::load(const std::string& room, std::uint32_t recent, bool clustered) const {
  RoomState state;
  Lease r(*this);
  Statement max(r.db, "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room = ?");
  max.bind(1, room);
  if (max && sqlite3_step(max.get()) == SQLITE_ROW)
    state.last_seq = static_cast<std::uint64_t>(sqlite3_column_int64(max.get(), 0));
  Statement last(r.db, "SELECT body FROM (SELECT seq, body FROM messages WHERE room = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq");
  last.bind(1, room);
  last.bind(2, static_cast<std::int64_t>(recent));
  while (last && sqlite3_step(last.get()) == SQLITE_ROW) state.recent.push_back(last.column_text(0));
  // One epoch per database, made with it and made again when the writer opens it after a
  // crash. (A file from a version before epochs gets one when the writer opens it.) A
  // clustered room's is the cluster's, recorded with its messages: its seqs are Redis', so a
  // crash of this node gives none of them again.
  Statement epoch(r.db, clustered ? "SELECT value FROM meta WHERE key = 'epoch:' || ?"
                                  : "SELECT value FROM meta WHERE key = 'epoch'");
  if (clustered) epoch.bind(1, room);
  if (epoch && sqlite3_step(epoch.get()) == SQLITE_ROW) state.epoch = epoch.column_text(0);
  return state;
}

HistoryPage HistoryStore::query(const HistoryQuery& q) const {
  HistoryPage page;
  try {
    Lease r(*this);
    std::string match = q.search ? fts_query(*q.search) : std::string();
    if (q.search && match.empty()) return page;  // no words: nothing matches
    const char* sql = match.empty() ? kPageSql : kSearchSql;
    Statement s(r.db, sql, true);
    if (!s) {
      page.error = s.error();
      return page;
    }
    s.bind(1, q.room);
    s.bind(2, static_cast<std::int64_t>(q.before.value_or(INT64_MAX)));
    s.bind(3, static_cast<std::int64_t>(q.limit) + 1);  // one more tells whether there is more
    if (!match.empty()) s.bind(4, match);
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) page.bodies.push_back(s.column_text(0));
    if (rc != SQLITE_DONE) {
      page.error = sqlite3_errmsg(r.db);
      page.bad_query = !match.empty();
      page.bodies.clear();
      return page;
    }
  } catch (const std::exception& e) {
    page.error = e.what();
    return page;
  }
  if (page.bodies.size() > q.limit) {
    page.more = true;
    page.bodies.pop_back();
  }
  std::reverse(page.bodies.begin(), page.bodies.end());
  return page;
}

}  // namespace roomd
