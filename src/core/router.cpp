// Router: rooms, nicks and fan-out. See router.hpp for the rules it keeps.
#include "roomd/core/router.hpp"

#include <algorithm>
#include <utility>

#include "roomd/protocol/wire.hpp"
#include "roomd/base/names.hpp"

namespace roomd {

struct Router::Room {
  std::string name;
  std::string topic;
  bool configured = false;
  std::uint32_t max_members = 1000;
  bool read_only = false;
  std::unordered_set<std::string> speakers;  // folded nicks
  std::string key;
  bool persist = false;
  std::uint64_t next_seq = 1;
  // Members in join order; a member's index here is kept in its Session so leaving is O(1).
  std::vector<Session*> members;
  // The newest messages, oldest first, seq consecutive.
  std::deque<EventPtr> history;
};

struct Router::Session {
  struct Membership {
    Room* room;
    std::size_t slot;  // index in room->members
  };
  SessionId id;
  std::string nick;
  Outbox* out;
  TokenBucket bucket;   // says and whispers: refused when empty
  TokenBucket queries;  // joins, history, who, rooms: wait when empty
  bool admin;
  std::vector<Membership> rooms;  // join order: the last one is the "current" room
  std::string source;             // whose budget its key guesses use
};

Router::Router(RouterSettings settings, const std::vector<RoomConfig>& rooms, Clock clock)
    : Router(std::move(settings), rooms, RouterServices{.clock = std::move(clock)}) {}

Router::Router(RouterSettings settings, const std::vector<RoomConfig>& rooms, RouterServices services)
    : settings_(std::move(settings)),
      clock_(services.clock),
      services_(std::move(services)),
      keys_(services_.tasks, services_.verify_key),
      guesses_(settings_.key_guesses),
      address_history_(settings_.address_history) {
  for (const auto& rc : rooms) create_room(rc.name, &rc);
}

bool Router::persisted(const Room& room) const {
  // Dynamic rooms live in memory only.
  return services_.persistence && room.configured && room.persist;
}

// Held while some copy of it lives, released exactly once: by release(), or by the last copy
// going (a callback dropped unrun: a pool shut down, a helper lost). Copies share that one
// release because the callbacks it rides in are std::function, which must be copyable. It
// watches its session without keeping it: one that ended meanwhile is simply not released.
class Router::Hold {
 public:
  explicit Hold(const std::shared_ptr<Session>& session) : state_(std::make_shared<State>(session)) {}
  // The session, if it is still there.
  Session* session() const { return state_->session.lock().get(); }
  void release() { state_->release(); }

 private:
  struct State {
    explicit State(const std::shared_ptr<Session>& s) : session(s) { s->out->hold(); }
    ~State() { release(); }
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    void release() {
      if (std::exchange(released, true)) return;
      if (auto s = session.lock()) s->out->release();
    }
    std::weak_ptr<Session> session;
    bool released = false;
  };
  std::shared_ptr<State> state_;
};

Router::Hold Router::hold_request(Session& s) { return Hold(sessions_.at(s.id)); }

void Router::restore(const std::string& name, const RoomState& state) {
  Room* room = find_room(name);
  if (!room) return;
  room->next_seq = state.last_seq + 1;
  room->history.clear();
  for (const auto& body : state.recent) {
    auto parsed = ordered_json::parse(body, nullptr, false);
    if (!parsed.is_discarded()) room->history.push_back(make_event(std::move(parsed)));
  }
}

Router::~Router() = default;

// ---- sessions -------------------------------------------------------------------------

std::string Router::next_guest_nick() {
  for (;;) {
    std::string nick = "guest-" + std::to_string(++guest_counter_);
    if (!by_nick_.contains(nick)) return nick;
  }
}

SessionId Router::connect(Outbox& outbox, bool admin, std::string source) {
  auto session = std::make_shared<Session>(Session{
      next_id_++, next_guest_nick(), &outbox,
      TokenBucket(settings_.rate, settings_.burst, clock_.mono_ms()),
      TokenBucket(settings_.query_rate, settings_.query_burst, clock_.mono_ms()), admin, {}, std::move(source)});
  Session& s = *session;
  by_nick_[fold_case(s.nick)] = &s;
  sessions_.emplace(s.id, std::move(session));
  const wire::Limits limits{settings_.rate, settings_.burst, settings_.query_rate, settings_.query_burst,
                            settings_.max_frame_bytes};
  s.out->send(make_event(wire::welcome(settings_.version, s.nick, settings_.motd, limits)));
  return s.id;
}

void Router::disconnect(SessionId id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  while (!s.rooms.empty()) {
    Room& room = *s.rooms.back().room;
    remove_member(s, room);
    to_others(room, &s, make_event(wire::presence_leave(room.name, s.nick)));
    drop_room_if_empty(room);
  }
  by_nick_.erase(fold_case(s.nick));
  sessions_.erase(it);
}

Router::Session* Router::find_session(SessionId id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

std::optional<std::string> Router::nick_of(SessionId id) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  return it->second->nick;
}

// ---- rooms ----------------------------------------------------------------------------

Router::Room* Router::find_room(std::string_view name) const {
  auto it = rooms_.find(std::string(name));
  return it == rooms_.end() ? nullptr : it->second.get();
}

Router::Room* Router::create_room(const std::string& name, const RoomConfig* config) {
  auto room = std::make_unique<Room>();
  room->name = name;
  if (config) apply_room_config(*room, *config);
  Room* raw = room.get();
  rooms_[name] = std::move(room);
  return raw;
}

void Router::apply_room_config(Room& room, const RoomConfig& c) {
  room.configured = true;
  room.topic = c.topic;
  room.max_members = c.max_members;
  room.read_only = c.read_only;
  room.key = c.key;
  room.persist = c.persist;
  room.speakers.clear();
  for (const auto& n : c.speakers) room.speakers.insert(fold_case(n));
}

bool Router::is_member(const Session& s, const Room& room) const {
  for (const auto& m : s.rooms)
    if (m.room == &room) return true;
  return false;
}

bool Router::may_speak(const Session& s, const Room& room) const {
  return !room.read_only || room.speakers.contains(fold_case(s.nick));
}

void Router::remove_member(Session& s, Room& room) {
  auto mine = std::find_if(s.rooms.begin(), s.rooms.end(),
                           [&](const Session::Membership& m) { return m.room == &room; });
  if (mine == s.rooms.end()) return;
  std::size_t slot = mine->slot;
  s.rooms.erase(mine);
  // Swap-remove from the room, then fix the moved member's recorded slot.
  Session* moved = room.members.back();
  room.members[slot] = moved;
  room.members.pop_back();
  if (moved != &s)
    for (auto& m : moved->rooms)
      if (m.room == &room) m.slot = slot;
}

void Router::drop_room_if_empty(Room& room) {
  // Dynamic rooms live only while someone is in them; configured rooms stay.
  if (!room.configured && room.members.empty()) rooms_.erase(room.name);
}

Router::Room* Router::resolve_room(Session& s, const Request& r, bool need_existing) {
  if (r.current_room) {
    if (!s.rooms.empty()) return s.rooms.back().room;
    fail(s, r, ErrorCode::not_member, "join a room first (/join ROOM)");
    return nullptr;
  }
  if (!valid_room_name(r.room)) {
    fail(s, r, ErrorCode::bad_room_name, "'" + r.room + "' is not a valid room name");
    return nullptr;
  }
  Room* room = find_room(r.room);
  if (!room && need_existing) fail(s, r, ErrorCode::no_such_room, "no room '" + r.room + "'");
  return room;
}

// ---- replies --------------------------------------------------------------------------

void Router::reply(Session& s, ordered_json body) { s.out->send(make_event(std::move(body))); }

void Router::fail(Session& s, const Request& r, ErrorCode code, std::string message) {
  reply(s, wire::error_body(code, message, r.id));
}

void Router::reject(SessionId id, const RequestError& e) {
  if (Session* s = find_session(id)) reply(*s, wire::error_body(e.code, e.message, e.id));
}

void Router::to_others(Room& room, const Session* except, const EventPtr& event) {
  for (Session* m : room.members)
    if (m != except) m->out->send_broadcast(event, room.name);
}

// ---- requests -------------------------------------------------------------------------

void Router::handle(SessionId id, const Request& r) {
  Session* s = find_session(id);
  if (!s) return;
  ++stats_.requests;
  if (!paced(*s, r)) serve(*s, r);
}

// Requests that make the server look things up (and joins, which may start a key check or
// a replay) are paced, as IRC servers' "fake lag" does: over the budget, the request is not
// refused but answered when its turn is due. Meanwhile the session is held, so its later
// requests wait behind it and its socket is not read: a client in a closed loop of searches
// costs the server query_rate of them a second. History pages and searches, the lookups that
// read the disk and answer with up to a page of messages, then also take a slot from their
// address's budget (AddressPacer), which bounds what many connections from one place add up to.
bool Router::paced(Session& s, const Request& r) {
  if (r.op != Op::join && r.op != Op::history && r.op != Op::who && r.op != Op::rooms) return false;
  if (!services_.after) return false;
  const std::uint64_t now = clock_.mono_ms();
  if (settings_.query_rate > 0 && !s.queries.try_take(now)) {
    ++stats_.queries_paced;
    hold_then(s, s.queries.ms_until_token(now), [this, r](Session& session) {
      if (!paced(session, r)) serve(session, r);
    });
    return true;
  }
  if (r.op != Op::history) return false;
  // The address's slot is reserved now, in arrival order: when it is due, the request is served.
  const std::uint64_t wait = address_history_.reserve(s.source, now);
  if (wait == 0) return false;
  ++stats_.history_paced_by_address;
  hold_then(s, wait, [this, r](Session& session) { serve(session, r); });
  return true;
}

// Holds the session for `delay_ms`, then releases it and runs `then`; a session gone by then
// is forgotten. What it read meanwhile is served later, in the turn's resume phase.
void Router::hold_then(Session& s, std::uint64_t delay_ms, std::function<void(Session&)> then) {
  services_.after(delay_ms, [hold = hold_request(s), then = std::move(then)]() mutable {
    Session* session = hold.session();
    hold.release();
    if (session) then(*session);
  });
}

void Router::serve(Session& s, const Request& r) {
  switch (r.op) {
    case Op::nick: return on_nick(s, r);
    case Op::rooms: return on_rooms(s, r);
    case Op::join: return on_join(s, r);
    case Op::leave: return on_leave(s, r);
    case Op::say: return on_say(s, r);
    case Op::whisper: return on_whisper(s, r);
    case Op::who: return on_who(s, r);
    case Op::topic: return on_topic(s, r);
    case Op::history: return on_history(s, r);
    case Op::bye: return on_bye(s, r);
    case Op::ping: return reply(s, wire::pong(r.id));
    case Op::echo: return reply(s, wire::echo(r.id, r.text.value_or("")));
    case Op::help: return reply(s, wire::help(r.id));
    case Op::stats: {
      if (!s.admin || !services_.stats)
        return fail(s, r, ErrorCode::unknown_op, "stats is only available on an admin listener");
      return reply(s, wire::stats(r.id, services_.stats()));
    }
  }
}

void Router::on_nick(Session& s, const Request& r) {
  if (!valid_nick(r.nick))
    return fail(s, r, ErrorCode::bad_nick,
                "nicks start with a letter, then up to 31 letters, digits, '_' or '-'");
  std::string folded = fold_case(r.nick);
  if (folded == "server") return fail(s, r, ErrorCode::nick_taken, "'server' is reserved");
  auto it = by_nick_.find(folded);
  if (it != by_nick_.end() && it->second != &s)
    return fail(s, r, ErrorCode::nick_taken, "'" + r.nick + "' is taken");
  std::string old = s.nick;
  by_nick_.erase(fold_case(old));
  by_nick_[folded] = &s;
  s.nick = r.nick;
  reply(s, wire::ok_nick(r.id, s.nick));
  if (old == s.nick) return;
  for (const auto& m : s.rooms) to_others(*m.room, &s, make_event(wire::presence_nick(m.room->name, s.nick, old)));
}

void Router::on_rooms(Session& s, const Request& r) {
  auto entries = ordered_json::array();
  for (const auto& info : rooms())
    entries.push_back(wire::room_entry(info.name, info.topic, info.members, info.keyed));
  reply(s, wire::rooms(r.id, std::move(entries)));
}

void Router::on_join(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, false);
  if (!room) {
    if (r.current_room || !valid_room_name(r.room)) return;  // resolve_room answered
    if (!settings_.dynamic_rooms)
      return fail(s, r, ErrorCode::no_such_room, "no room '" + r.room + "' (dynamic rooms are off)");
    room = create_room(r.room, nullptr);
  }
  if (!is_member(s, *room) && !room->key.empty()) {
    if (!r.key) return fail(s, r, ErrorCode::bad_key, "room '" + room->name + "' needs a key");
    if (!keys_.available())
      return fail(s, r, ErrorCode::internal, "keyed rooms are not available in this build");
    // A guess costs a token like a message, and one argon2id check at a time per client.
    if (!s.bucket.try_take(clock_.mono_ms())) {
      ++stats_.rate_limited;
      return fail(s, r, ErrorCode::rate_limited, "slow down: too many attempts");
    }
    if (auto known = keys_.cached(room->key, *r.key)) {
      if (!*known) return fail(s, r, ErrorCode::bad_key, "wrong key");
      return finish_join(s, r, *room);
    }
    // Only a key never seen before costs a check, and those are what a guesser sends; a
    // key already being checked joins that check for free.
    bool shared = keys_.in_flight(room->key, *r.key);
    auto verdict = shared ? GuessThrottle::Verdict{true, 0, false} : guesses_.try_start(s.source, clock_.mono_ms());
    if (!verdict.allowed) {
      std::uint64_t retry_s = (verdict.retry_ms + 999) / 1000;
      if (verdict.first_refusal && services_.guesses_throttled) services_.guesses_throttled(s.source, retry_s);
      return fail(s, r, ErrorCode::rate_limited,
                  "too many wrong keys from your address: try again in " + std::to_string(retry_s) + " s");
    }
    std::string hash = room->key;
    keys_.check(hash, *r.key, [this, hold = hold_request(s), r, hash, shared, source = s.source](bool ok) mutable {
      if (ok && !shared) guesses_.succeeded(source);  // a right key is not a guess
      Session* session = hold.session();
      if (!session) return;  // gone while its key was checked
      Room* now = find_room(r.room);
      if (!now) fail(*session, r, ErrorCode::no_such_room, "no room '" + r.room + "'");
      else if (!ok || now->key != hash) fail(*session, r, ErrorCode::bad_key, "wrong key");
      else finish_join(*session, r, *now);
      hold.release();
    });
    return;
  }
  finish_join(s, r, *room);
}

void Router::finish_join(Session& s, const Request& r, Room& room_ref) {
  Room* room = &room_ref;
  bool again = is_member(s, *room);
  if (!again) {
    if (room->members.size() >= room->max_members)
      return fail(s, r, ErrorCode::room_full, "room '" + room->name + "' is full");
    s.rooms.push_back({room, room->members.size()});
    room->members.push_back(&s);
  } else {
    // Joining again makes the room current (text mode) without telling anyone.
    auto mine = std::find_if(s.rooms.begin(), s.rooms.end(),
                             [&](const Session::Membership& m) { return m.room == room; });
    std::rotate(mine, mine + 1, s.rooms.end());
  }
  std::vector<std::string> nicks;
  nicks.reserve(room->members.size());
  for (const Session* m : room->members) nicks.push_back(m->nick);
  auto history = ordered_json::array();
  std::size_t n = std::min<std::size_t>(settings_.replay, room->history.size());
  for (auto it = room->history.end() - static_cast<std::ptrdiff_t>(n); it != room->history.end(); ++it)
    history.push_back((*it)->body());
  reply(s, wire::joined(r.id, room->name, room->topic, std::move(nicks), std::move(history)));
  if (!again) to_others(*room, &s, make_event(wire::presence_join(room->name, s.nick)));
}

void Router::on_leave(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!is_member(s, *room)) return fail(s, r, ErrorCode::not_member, "you are not in '" + room->name + "'");
  remove_member(s, *room);
  reply(s, wire::left(r.id, room->name));
  to_others(*room, &s, make_event(wire::presence_leave(room->name, s.nick)));
  drop_room_if_empty(*room);
}

std::uint64_t Router::publish(Room& room, const Session* sender, const std::string& from, const Request& r,
                              std::function<void(bool)> committed) {
  std::uint64_t seq = room.next_seq++;
  // The hot path: the message's JSON line is written directly, once (no DOM).
  EventPtr event = Event::from_json_line(wire::message_line(room.name, seq, clock_.wall_ms(), from, r.text, r.data));
  room.history.push_back(event);
  // A persisted room keeps only its replay in memory; history queries go to the store.
  const bool durable = persisted(room);
  const std::size_t keep = durable ? std::max<std::uint32_t>(settings_.replay, 1) : settings_.max_history;
  while (room.history.size() > keep) room.history.pop_front();
  ++stats_.messages_in;
  stats_.deliveries += room.members.size();
  // The sender's own copy goes last: the others should not wait behind its write.
  to_others(room, sender, event);
  if (sender) sender->out->send_broadcast(event, room.name);
  // After the fan-out: a store that commits at once must still not ack before the message.
  if (durable) {
    std::string text = r.text.value_or("");
    services_.persistence->append(StoredMessage{room.name, seq, *event->bytes(Mode::json), std::move(text)},
                                  std::move(committed));
  }
  return seq;
}

void Router::on_say(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!is_member(s, *room)) return fail(s, r, ErrorCode::not_member, "join '" + room->name + "' first");
  if (!may_speak(s, *room)) return fail(s, r, ErrorCode::read_only, "'" + room->name + "' is read-only");
  if (!s.bucket.try_take(clock_.mono_ms())) {
    ++stats_.rate_limited;
    return fail(s, r, ErrorCode::rate_limited, "slow down: too many messages");
  }
  if (r.id && persisted(*room)) {
    // The ok promises durability: it waits for the batch's commit, and so do this client's
    // later requests.
    auto ok = wire::ok_seq(r.id, room->next_seq);  // the seq publish() is about to give
    std::optional<nlohmann::json> request_id = r.id;
    publish(*room, &s, s.nick, r, [this, hold = hold_request(s), ok = std::move(ok), request_id](bool committed) mutable {
      Session* session = hold.session();
      if (!session) return;
      if (committed) {
        reply(*session, std::move(ok));
      } else {
        reply(*session,
              wire::error_body(ErrorCode::internal, "the message was sent but could not be stored", request_id));
      }
      hold.release();
    });
    return;
  }
  std::uint64_t seq = publish(*room, &s, s.nick, r);
  if (r.id) reply(s, wire::ok_seq(r.id, seq));
}

void Router::on_whisper(Session& s, const Request& r) {
  auto it = by_nick_.find(fold_case(r.to));
  if (!valid_nick(r.to) || it == by_nick_.end())
    return fail(s, r, ErrorCode::no_such_nick, "nobody is called '" + r.to + "'");
  if (!s.bucket.try_take(clock_.mono_ms())) {
    ++stats_.rate_limited;
    return fail(s, r, ErrorCode::rate_limited, "slow down: too many messages");
  }
  Session& target = *it->second;
  target.out->send_broadcast(
      make_event(wire::whisper(s.nick, target.nick, r.text.value_or(""), clock_.wall_ms())), "");
  reply(s, wire::ok(r.id));
}

void Router::on_who(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!room->key.empty() && !is_member(s, *room))
    return fail(s, r, ErrorCode::not_member, "'" + room->name + "' is keyed: join it first");
  reply(s, wire::who(r.id, room->name, *who(room->name)));
}

void Router::on_topic(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!is_member(s, *room)) return fail(s, r, ErrorCode::not_member, "join '" + room->name + "' first");
  if (!may_speak(s, *room)) return fail(s, r, ErrorCode::read_only, "'" + room->name + "' is read-only");
  room->topic = r.topic;
  reply(s, wire::ok(r.id));
  to_others(*room, &s, make_event(wire::presence_topic(room->name, s.nick, room->topic)));
}

namespace {
// In-memory search: every word must occur in the text, ignoring ASCII case.
bool matches_all_words(const ordered_json& message, const std::vector<std::string>& words) {
  auto it = message.find("text");
  if (it == message.end() || !it->is_string()) return false;
  std::string text = fold_case(it->get_ref<const std::string&>());
  for (const auto& w : words)
    if (text.find(w) == std::string::npos) return false;
  return true;
}
}  // namespace

void Router::on_history(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!room->key.empty() && !is_member(s, *room))
    return fail(s, r, ErrorCode::not_member, "'" + room->name + "' is keyed: join it first");
  std::size_t limit = r.limit.value_or(50);
  if (persisted(*room)) {
    HistoryQuery q{room->name, r.before, static_cast<std::uint32_t>(limit), r.search};
    services_.persistence->query(std::move(q), [this, hold = hold_request(s), r, name = room->name](HistoryPage page) mutable {
      Session* session = hold.session();
      if (!session) return;
      if (!page.error.empty()) {
        fail(*session, r, page.bad_query ? ErrorCode::bad_request : ErrorCode::internal,
             page.bad_query ? "bad search: " + page.error : "history is unavailable");
      } else {
        session->out->send(Event::from_json_line(wire::history_line(r.id, name, page.bodies, page.more)));
      }
      hold.release();
    });
    return;
  }
  std::vector<std::string> words;
  if (r.search) {
    std::string_view rest = *r.search;
    for (auto w = next_word(rest); !w.empty(); w = next_word(rest)) words.push_back(fold_case(w));
  }
  // Walk back from the newest message below `before`, keeping up to `limit` matches.
  const auto& h = room->history;
  std::size_t end = h.size();
  if (r.before && !h.empty()) {
    std::uint64_t first_seq = h.front()->body()["seq"].get<std::uint64_t>();
    end = *r.before <= first_seq ? 0 : std::min<std::uint64_t>(h.size(), *r.before - first_seq);
  }
  std::vector<const Event*> picked;
  std::size_t i = end;
  bool more = false;
  while (i > 0) {
    const Event* e = h[i - 1].get();
    if (words.empty() || matches_all_words(e->body(), words)) {
      if (picked.size() == limit) { more = true; break; }
      picked.push_back(e);
    }
    --i;
  }
  auto messages = ordered_json::array();
  for (auto it = picked.rbegin(); it != picked.rend(); ++it) messages.push_back((*it)->body());
  reply(s, wire::history(r.id, room->name, std::move(messages), more));
}

void Router::on_bye(Session& s, const Request& r) {
  reply(s, wire::bye(r.id));
  Outbox* out = s.out;
  disconnect(s.id);  // s is gone after this
  out->end();
}

// ---- operations -----------------------------------------------------------------------

void Router::reconfigure(RouterSettings settings, const std::vector<RoomConfig>& configured) {
  settings_ = std::move(settings);
  for (auto& [id, s] : sessions_) {
    s->bucket.reconfigure(settings_.rate, settings_.burst);
    s->queries.reconfigure(settings_.query_rate, settings_.query_burst);
  }
  guesses_.reconfigure(settings_.key_guesses);
  address_history_.reconfigure(settings_.address_history);
  // Configured rooms that the new file no longer lists are gone, even with dynamic rooms on.
  std::unordered_set<std::string> wanted;
  for (const auto& rc : configured) wanted.insert(rc.name);
  std::vector<Room*> removed;
  for (auto& [name, room] : rooms_)
    if (room->configured && !wanted.contains(name)) removed.push_back(room.get());
  for (Room* room : removed) {
    auto notice = make_event(wire::system_reload(room->name, "room removed by the server's configuration"));
    while (!room->members.empty()) {
      Session& member = *room->members.back();
      remove_member(member, *room);
      member.out->send(notice);
    }
    rooms_.erase(room->name);
  }
  for (const auto& rc : configured) {
    Room* room = find_room(rc.name);
    if (!room) {
      create_room(rc.name, &rc);
      continue;
    }
    std::string old_topic = room->topic;
    apply_room_config(*room, rc);
    if (room->topic != old_topic) {
      to_others(*room, nullptr, make_event(wire::presence_topic(room->name, "server", room->topic)));
    }
  }
  for (auto& [name, room] : rooms_)
    while (room->history.size() > settings_.max_history) room->history.pop_front();
}

std::vector<RoomInfo> Router::rooms() const {
  std::vector<RoomInfo> out;
  out.reserve(rooms_.size());
  for (const auto& [name, room] : rooms_)
    out.push_back({room->name, room->topic, room->members.size(), !room->key.empty(),
                   room->configured, room->next_seq - 1});
  std::sort(out.begin(), out.end(), [](const RoomInfo& a, const RoomInfo& b) { return a.name < b.name; });
  return out;
}

std::optional<std::vector<std::string>> Router::who(std::string_view name) const {
  Room* room = find_room(name);
  if (!room) return std::nullopt;
  std::vector<std::string> nicks;
  nicks.reserve(room->members.size());
  for (const Session* m : room->members) nicks.push_back(m->nick);
  std::sort(nicks.begin(), nicks.end());
  return nicks;
}

bool Router::kick(std::string_view nick, std::string_view reason) {
  auto it = by_nick_.find(fold_case(nick));
  if (it == by_nick_.end()) return false;
  Session& s = *it->second;
  s.out->send(make_event(wire::system_kicked(reason.empty() ? "kicked by the operator" : reason)));
  Outbox* out = s.out;
  disconnect(s.id);
  out->end();
  return true;
}

std::optional<std::string> Router::server_say(std::string_view name, std::string_view text) {
  Room* room = find_room(name);
  if (!room) return "no room '" + std::string(name) + "'";
  Request r;
  r.op = Op::say;
  r.room = room->name;
  r.text = std::string(text);
  publish(*room, nullptr, "server", r);
  return std::nullopt;
}

void Router::send_all(const EventPtr& event) {
  for (auto& [id, s] : sessions_) s->out->send(event);
}

}  // namespace roomd
