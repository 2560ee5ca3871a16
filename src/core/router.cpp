// Router: rooms, nicks and fan-out. See router.hpp for the rules it keeps.
#include "roomd/core/router.hpp"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "roomd/base/names.hpp"
#include "roomd/protocol/wire.hpp"

namespace roomd {

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
  TokenBucket churn;    // nick changes and leaves: refused when empty
  bool admin;
  std::vector<Membership> rooms;  // join order: the last one is the "current" room
  std::string source;             // whose budget its key guesses use
  std::uint64_t says = 0;         // into clustered rooms: each say's id for the cluster
  bool nick_claimed = false;      // its nick is held in the cluster (its guest nick too)
  // Pipelined says (docs/cluster.md): while says into clustered rooms are in flight, its
  // replies queue here in the order of its requests and go out from the front as they are
  // known. A reply known at once (an error, a refused say) takes its place behind them.
  struct Answer {
    bool ready = false;
    EventPtr event;  // ready and null: nothing to send (a say without an id)
  };
  std::deque<Answer> answers{};
  std::uint64_t answers_base = 0;  // the number of answers.front(); Slots name theirs by it
  std::size_t in_flight = 0;       // of its answers, says not answered yet (Router::says_in_flight_)
  bool window_held = false;        // settings.says_in_flight unanswered: its requests wait
  // A request that is not such a say, come while says were in flight: served once they are
  // all answered, the session held meanwhile (as any request that waits).
  std::optional<Request> waiting{};
};

// A room's members by nick, in byte order: the order of `joined`, `who` and their pages.
// Transparent, so a page can start after a nick that is no member (`who` with `after`).
struct Router::NickOrder {
  using is_transparent = void;
  bool operator()(const Session* a, const Session* b) const { return a->nick < b->nick; }
  bool operator()(const Session* a, std::string_view b) const { return a->nick < b; }
  bool operator()(std::string_view a, const Session* b) const { return a < b->nick; }
};

// A persisted room's commit of one message, which a duplicate of it waits for, as the
// first say's ok did (an ok promises the message is stored).
struct Router::Commit {
  std::optional<bool> stored;  // known once its batch is on disk, or failed
  std::vector<std::function<void(bool)>> waiting;
  void settle(bool ok) {
    stored = ok;
    for (auto& answer : std::exchange(waiting, {})) answer(ok);
  }
};

// The first say with a client's msg_id: what a duplicate of it is answered.
struct Router::Said {
  std::uint64_t seq;
  std::shared_ptr<Commit> commit;  // a persisted room's; null: memory only
};

// Client msg_ids of the last kSaidWindowMs, at most a bound of them, by key, and the same keys
// oldest first with when they came, to forget them in order.
struct Router::RecentIds {
  std::unordered_map<std::string, Said> ids;
  std::deque<std::pair<std::uint64_t, const std::string*>> order;
};

struct Router::Room {
  std::string name;
  std::uint64_t serial = 0;  // this Room object among all the router made (a timer finds it again)
  std::string topic;
  // A clustered room's topic is the cluster's once someone set it there; until then (and if
  // the cluster loses it) the configured one shows.
  std::string default_topic;
  bool topic_from_cluster = false;
  bool configured = false;
  std::uint32_t max_members = 1000;
  bool read_only = false;
  std::unordered_set<std::string> speakers;  // folded nicks
  std::string key;
  bool persist = false;
  std::optional<std::uint32_t> presence_threshold;  // the room's own; else the server's
  std::uint64_t next_seq = 1;
  // Changes whenever seq starts again at 1 (a new room, a memory-only room after a restart,
  // a new history database), so a client resuming "after seq 40" of an older room is told.
  std::string epoch;
  // Members in join order, for the fan-out; a member's index here is kept in its Session so
  // leaving is O(1). The same members by nick, for the member lists.
  std::vector<Session*> members;
  std::set<const Session*, NickOrder> by_nick;
  // The newest messages, oldest first, seq consecutive and ending at next_seq - 1.
  std::deque<EventPtr> history;
  // Presence of a big room, gathered until its interval's summary goes out.
  wire::PresenceSummary presence;
  bool summary_due = false;  // a summary is scheduled
  // Clustered ([cluster]): the seq, epoch and order are the cluster's (docs/cluster.md).
  bool clustered = false;
  bool synced = false;  // its position came from the cluster since it was last watched
  std::vector<std::function<void()>> waiting_joins;  // joined replies waiting for the sync
  // Acks of this node's says, by seq: each goes out once its message was delivered here.
  std::deque<std::pair<std::uint64_t, std::function<void()>>> waiting_acks;
  // Its members on the other nodes while it is watched (a followed room: always), by nick, as the cluster told
  // (cluster_members, cluster_presence): member lists and counts are every node's.
  std::set<std::string, std::less<>> remote;
  bool remote_known = false;  // read from the cluster since the room was last watched
  // Followed (clustered and persisted): heard from the node's start, members or not, every
  // message stored here; the ok of a say with an id waits for its commit here (docs/cluster.md).
  bool followed = false;
  std::uint64_t delivered_through = 0;  // the last seq delivered (and so sent to the store)
  std::uint64_t stored_through = 0;     // the last seq whose commit has run, stored or not
  std::optional<std::uint64_t> synced_when_stored;  // the sync waits for the store to reach this
  // Seq ranges (first -> last) of this epoch that are not in the store here: failed commits,
  // seqs never delivered here. The newest few, for acks that come after their commit.
  std::map<std::uint64_t, std::uint64_t> unstored;
  struct StoredAck {
    std::string epoch;
    std::uint64_t seq;
    std::function<void(std::optional<ErrorCode>)> answer;  // nullopt: stored
  };
  std::deque<StoredAck> stored_acks;  // by seq
  // Not clustered: the says with a client's msg_id, at most kRecentSaysPerRoom, by
  // "NICK MSG_ID" (the nick folded).
  RecentIds said;
};

namespace {
// How many nicks a presence summary lists per kind of change (the counts are all of them).
constexpr std::size_t kSummaryNames = 20;
// How many unstored seq ranges a followed room remembers (acks that come after their commit).
constexpr std::size_t kUnstoredRanges = 64;

// A 64-bit mix (splitmix64's finalizer): consecutive inputs give unrelated outputs.
std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

Router::Router(RouterSettings settings, const std::vector<RoomConfig>& rooms, Clock clock)
    : Router(std::move(settings), rooms, RouterServices{.clock = std::move(clock)}) {}

Router::Router(RouterSettings settings, const std::vector<RoomConfig>& rooms, RouterServices services)
    : settings_(std::move(settings)),
      clock_(services.clock),
      services_(std::move(services)),
      keys_(services_.tasks, services_.verify_key),
      guesses_(settings_.key_guesses),
      address_history_(settings_.address_history),
      epoch_seed_((std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}() ^ services_.clock.wall_ms()) {
  whispered_ = std::make_unique<RecentIds>();
  for (const auto& rc : rooms) create_room(rc.name, &rc);
}

std::size_t Router::ring_size(bool persisted_room) const {
  // A persisted room's history is in the store; in memory it keeps what a join may replay.
  if (persisted_room) return std::max<std::uint32_t>({settings_.replay, settings_.replay_max, 1});
  return settings_.max_history;
}

bool Router::persisted(const Room& room) const {
  // Dynamic rooms live in memory only. A clustered room is stored when it is followed, which
  // it is from its creation (restore), so that its store is complete.
  if (room.clustered) return room.followed;
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

// A pipelined say's place among its session's replies. Answered exactly once: by answer(),
// or, if the last copy of the callback it rides in goes unrun (a room removed, the cluster
// client gone), with `unavailable`, so the replies behind it are never stuck. It watches its
// session without keeping it: a client gone meanwhile (a disconnect with says in flight) is
// simply not answered, and the router is not touched then.
class Router::Slot {
 public:
  Slot(Router& router, const std::shared_ptr<Session>& session, std::uint64_t number, std::optional<nlohmann::json> id)
      : state_(std::make_shared<State>(router, session, number, std::move(id))) {}
  // nullopt: nothing to send, only the place is done.
  void answer(std::optional<ordered_json> body) { state_->answer(std::move(body)); }

 private:
  struct State {
    State(Router& r, const std::shared_ptr<Session>& s, std::uint64_t n, std::optional<nlohmann::json> i)
        : router(&r), session(s), number(n), id(std::move(i)) {}
    ~State() {
      if (!answered)
        answer(wire::error_body(ErrorCode::unavailable, "the cluster did not answer: the message may not have been sent",
                                id));
    }
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    void answer(std::optional<ordered_json> body) {
      if (std::exchange(answered, true)) return;
      // A live session means a live router: the router owns its sessions (and drops them first).
      if (auto s = session.lock()) router->fill_answer(*s, number, body ? make_event(std::move(*body)) : nullptr);
    }
    Router* router;
    std::weak_ptr<Session> session;
    std::uint64_t number;
    std::optional<nlohmann::json> id;
    bool answered = false;
  };
  std::shared_ptr<State> state_;
};

Router::Slot Router::open_slot(Session& s, const std::optional<nlohmann::json>& id) {
  s.answers.push_back({});
  Slot slot(*this, sessions_.at(s.id), s.answers_base + s.answers.size() - 1, id);
  ++s.in_flight;
  ++says_in_flight_;
  if (s.answers.size() >= settings_.says_in_flight && !std::exchange(s.window_held, true)) s.out->hold();
  return slot;
}

bool Router::pipelined(const Session& s, const Request& r) const {
  if (r.op != Op::say) return false;
  const Room* room = r.current_room ? (s.rooms.empty() ? nullptr : s.rooms.back().room) : find_room(r.room);
  return room && room->clustered;
}

void Router::fill_answer(Session& s, std::uint64_t number, EventPtr event) {
  auto& answer = s.answers.at(number - s.answers_base);
  answer.ready = true;
  --s.in_flight;
  --says_in_flight_;
  answer.event = std::move(event);
  flush_answers(s);
}

void Router::flush_answers(Session& s) {
  while (!s.answers.empty() && s.answers.front().ready) {
    if (auto event = std::move(s.answers.front().event)) s.out->send(event);
    s.answers.pop_front();
    ++s.answers_base;
  }
  if (s.window_held && s.answers.size() < settings_.says_in_flight) {
    s.window_held = false;
    s.out->release();
  }
  if (!s.answers.empty() || !s.waiting) return;
  // Served outside whatever answered the last say (a room's acks may be running, and the
  // request may be a leave that ends the room), still held until then.
  auto resume = [this, id = s.id, r = std::move(*s.waiting)] {
    Session* session = find_session(id);
    if (!session) return;
    session->out->release();
    if (!paced(*session, r)) serve(*session, r);
  };
  s.waiting.reset();
  if (services_.after) services_.after(0, std::move(resume));
  else resume();  // no delay queue (some tests): at once
}

void Router::restore(const std::string& name, const RoomState& state) {
  Room* room = find_room(name);
  if (!room) return;
  room->next_seq = state.last_seq + 1;
  if (!state.epoch.empty()) room->epoch = state.epoch;
  fill_ring(*room, state);
  if (room->clustered && room->persist && services_.persistence && !room->followed) {
    // Heard from now on, members or not, from where the store ends: every node stores every
    // message, so history and search are the same on all of them.
    room->followed = true;
    room->delivered_through = room->stored_through = state.last_seq;
    services_.cluster->follow(room->name, state.last_seq, state.epoch);
  }
}

void Router::fill_ring(Room& room_ref, const RoomState& state) {
  Room* room = &room_ref;
  // The ring must be consecutive up to last_seq (a resume counts on it): keep the recent
  // messages from the newest back to the first gap (a batch that failed to commit).
  room->history.clear();
  std::uint64_t want = state.last_seq;
  for (auto it = state.recent.rbegin(); it != state.recent.rend() && want > 0; ++it, --want) {
    auto parsed = ordered_json::parse(*it, nullptr, false);
    auto seq = parsed.is_object() ? parsed.find("seq") : parsed.end();
    if (parsed.is_discarded() || seq == parsed.end() || !seq->is_number_unsigned() || seq->get<std::uint64_t>() != want)
      break;
    room->history.push_front(make_event(std::move(parsed)));
  }
}

std::string Router::new_epoch() {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(mix64(epoch_seed_ + room_serial_)));
  return text;
}

Router::~Router() {
  // Sessions first: a Hold or Slot dropped with the rooms' callbacks then finds none to answer.
  sessions_.clear();
}

// ---- sessions -------------------------------------------------------------------------

std::string Router::next_guest_nick() {
  // In a cluster the prefix is the node's own ("guest-" and a tag), so guests are unique there.
  const std::string prefix = services_.cluster ? services_.cluster->guest_prefix() : "guest-";
  for (;;) {
    std::string nick = prefix + std::to_string(++guest_counter_);
    if (!by_nick_.contains(nick)) return nick;
  }
}

SessionId Router::connect(Outbox& outbox, bool admin, std::string source) {
  auto session = std::make_shared<Session>(Session{
      next_id_++, next_guest_nick(), &outbox,
      TokenBucket(settings_.rate, settings_.burst, clock_.mono_ms()),
      TokenBucket(settings_.query_rate, settings_.query_burst, clock_.mono_ms()),
      TokenBucket(settings_.churn_rate, settings_.churn_burst, clock_.mono_ms()), admin, {}, std::move(source)});
  Session& s = *session;
  by_nick_[fold_case(s.nick)] = &s;
  sessions_.emplace(s.id, std::move(session));
  const wire::Limits limits{settings_.rate,       settings_.burst,           settings_.query_rate,
                            settings_.query_burst, settings_.max_frame_bytes, settings_.churn_rate,
                            settings_.churn_burst};
  s.out->send(make_event(wire::welcome(settings_.version, s.nick, settings_.motd, limits)));
  register_guest(s);  // after the welcome, which never waits for the cluster
  return s.id;
}

void Router::disconnect(SessionId id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  while (!s.rooms.empty()) {
    Room& room = *s.rooms.back().room;
    remove_member(s, room);
    announce_leave(room, s.nick, &s);
    drop_room_if_empty(room);
  }
  by_nick_.erase(fold_case(s.nick));
  if (s.nick_claimed) services_.cluster->release_nick(fold_case(s.nick));
  says_in_flight_ -= s.in_flight;  // their answers find the session gone
  sessions_.erase(it);
}

// In a cluster a guest nick is registered like a claimed nick, so that other nodes' whispers
// find it (docs/cluster.md): nobody else can hold it, so nothing waits for the answer.
void Router::register_guest(Session& s) {
  if (!services_.cluster) return;
  services_.cluster->register_guest(fold_case(s.nick));
  s.nick_claimed = true;
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
  room->serial = ++room_serial_;
  room->epoch = new_epoch();
  room->clustered = services_.cluster && (!config || config->cluster);
  if (config) apply_room_config(*room, *config);
  else ++dynamic_rooms_;
  Room* raw = room.get();
  rooms_[name] = std::move(room);
  return raw;
}

void Router::apply_room_config(Room& room, const RoomConfig& c) {
  room.configured = true;
  room.default_topic = c.topic;
  if (!room.topic_from_cluster) room.topic = c.topic;
  room.max_members = c.max_members;
  room.read_only = c.read_only;
  room.key = c.key;
  room.persist = c.persist;
  room.presence_threshold = c.presence_threshold;
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

void Router::add_member(Session& s, Room& room) {
  s.rooms.push_back({&room, room.members.size()});
  room.members.push_back(&s);
  room.by_nick.insert(&s);
  if (!room.clustered) return;
  // A node hears a clustered room while it has members there (a followed one always).
  if (!room.followed && room.members.size() == 1) services_.cluster->watch(room.name);
  services_.cluster->member_joined(room.name, s.nick);
}

void Router::remove_member(Session& s, Room& room) {
  auto mine = std::find_if(s.rooms.begin(), s.rooms.end(),
                           [&](const Session::Membership& m) { return m.room == &room; });
  if (mine == s.rooms.end()) return;
  std::size_t slot = mine->slot;
  s.rooms.erase(mine);
  room.by_nick.erase(&s);
  // Swap-remove from the room, then fix the moved member's recorded slot.
  Session* moved = room.members.back();
  room.members[slot] = moved;
  room.members.pop_back();
  if (moved != &s)
    for (auto& m : moved->rooms)
      if (m.room == &room) m.slot = slot;
  if (room.clustered) services_.cluster->member_left(room.name, s.nick);
  if (room.clustered && !room.followed && room.members.empty()) {
    services_.cluster->unwatch(room.name);
    room.synced = false;
    room.remote.clear();  // not heard of while unwatched: read again at the next watch
    room.remote_known = false;
    release_cluster_waits(room, UINT64_MAX, true);  // nothing more will be delivered here
  }
}

void Router::drop_room_if_empty(Room& room) {
  // Dynamic rooms live only while someone is in them; configured rooms stay.
  if (!room.configured && room.members.empty()) {
    --dynamic_rooms_;
    rooms_.erase(room.name);
  }
}

std::size_t Router::member_count(const Room& room) const { return room.members.size() + room.remote.size(); }

wire::MemberPage Router::member_page(const Room& room, const std::optional<std::string>& after,
                                     std::size_t limit) const {
  wire::MemberPage page;
  page.count = member_count(room);
  // This node's members and the other nodes', merged in nick order.
  auto here = after ? room.by_nick.upper_bound(std::string_view(*after)) : room.by_nick.begin();
  auto there = after ? room.remote.upper_bound(std::string_view(*after)) : room.remote.begin();
  page.nicks.reserve(std::min(limit, page.count));
  while (page.nicks.size() < limit && (here != room.by_nick.end() || there != room.remote.end())) {
    if (there == room.remote.end() || (here != room.by_nick.end() && (*here)->nick <= *there)) {
      if (there != room.remote.end() && (*here)->nick == *there) ++there;  // one nick, listed once
      page.nicks.push_back((*here++)->nick);
    } else {
      page.nicks.push_back(*there++);
    }
  }
  page.more = here != room.by_nick.end() || there != room.remote.end();
  return page;
}

// ---- presence -------------------------------------------------------------------------

bool Router::summarizing(const Room& room) const {
  // A summary already gathering keeps the room summarized until it is out, so a change is
  // never told before one that happened earlier.
  if (!services_.after) return false;
  return room.summary_due || member_count(room) > room.presence_threshold.value_or(settings_.presence_threshold);
}

void Router::announce_join(Room& room, const std::string& nick, const Session* actor) {
  if (!summarizing(room)) return presence_to_others(room, actor, make_event(wire::presence_join(room.name, nick)));
  ++room.presence.joins;
  if (room.presence.joined.size() < kSummaryNames) room.presence.joined.push_back(nick);
  schedule_summary(room);
}

void Router::announce_leave(Room& room, const std::string& nick, const Session* actor) {
  if (!summarizing(room)) return presence_to_others(room, actor, make_event(wire::presence_leave(room.name, nick)));
  ++room.presence.leaves;
  if (room.presence.left.size() < kSummaryNames) room.presence.left.push_back(nick);
  schedule_summary(room);
}

void Router::announce_nick(Room& room, const std::string& nick, const std::string& old, const Session* actor) {
  if (!summarizing(room)) return presence_to_others(room, actor, make_event(wire::presence_nick(room.name, nick, old)));
  ++room.presence.renames;
  if (room.presence.renamed.size() < kSummaryNames) room.presence.renamed.emplace_back(old, nick);
  schedule_summary(room);
}

void Router::schedule_summary(Room& room) {
  if (std::exchange(room.summary_due, true)) return;
  services_.after(settings_.presence_interval_ms, [this, name = room.name, serial = room.serial] {
    Room* now = find_room(name);
    if (now && now->serial == serial) send_summary(*now);  // else it is gone, and who heard it too
  });
}

void Router::send_summary(Room& room) {
  room.summary_due = false;
  auto summary = std::exchange(room.presence, {});
  if (summary.joins + summary.leaves + summary.renames == 0) return;
  ++stats_.presence_summaries;
  presence_to_others(room, nullptr, make_event(wire::presence_summary(room.name, summary, member_count(room))));
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

void Router::reply(Session& s, ordered_json body) {
  // Behind the says in flight, if any: replies keep the order of requests.
  if (s.answers.empty()) return s.out->send(make_event(std::move(body)));
  s.answers.push_back({true, make_event(std::move(body))});
}

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

void Router::presence_to_others(Room& room, const Session* except, const EventPtr& event) {
  for (Session* m : room.members)
    if (m != except) m->out->send_lazy(event, room.name);
}

// ---- requests -------------------------------------------------------------------------

void Router::handle(SessionId id, const Request& r) {
  Session* s = find_session(id);
  if (!s) return;
  ++stats_.requests;
  if (!s->answers.empty() && !pipelined(*s, r)) {
    // Not a say into a clustered room: it waits for the says before it (flush_answers).
    s->waiting = r;
    s->out->hold();
    return;
  }
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

// Nick changes and leaves each make every member of the rooms concerned hear presence, so a
// client cycling them as fast as it can would cost the server a fan-out per request. They have
// a budget per session, and over it they are refused (rate_limited), as says are: the client
// keeps its nick or its room, and nobody hears anything.
bool Router::churn_allowed(Session& s, const Request& r) {
  if (settings_.churn_rate <= 0 || s.churn.try_take(clock_.mono_ms())) return true;
  ++stats_.churn_refused;
  fail(s, r, ErrorCode::rate_limited, "slow down: too many nick changes and leaves");
  return false;
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
  // In a cluster a nick another case of this one is the session's already; any other is the
  // cluster's to give.
  const bool other_nick = services_.cluster && folded != fold_case(s.nick);
  if (other_nick) {
    if (folded.starts_with("guest-"))
      return fail(s, r, ErrorCode::nick_taken, "nicks starting 'guest-' are given by the servers");
    if (claiming_.contains(folded)) return fail(s, r, ErrorCode::nick_taken, "'" + r.nick + "' is taken");
    // Never taken locally while the cluster cannot say whom it belongs to: two nodes would give
    // it to two clients.
    if (!services_.cluster->available()) {
      ++stats_.nicks_unavailable;
      return fail(s, r, ErrorCode::unavailable, "the cluster is unreachable: nicks cannot change now; try again shortly");
    }
  }
  if (r.nick != s.nick && !churn_allowed(s, r)) return;
  if (other_nick) return claim_nick(s, r, folded);
  std::string old = apply_nick(s, r.nick);
  reply(s, wire::ok_nick(r.id, s.nick));
  if (old != s.nick) announce_rename(s, old);
}

void Router::claim_nick(Session& s, const Request& r, const std::string& folded) {
  claiming_.insert(folded);
  const std::string replaced = s.nick_claimed ? fold_case(s.nick) : std::string();
  services_.cluster->claim_nick(folded, replaced, [this, hold = hold_request(s), r, folded](NickClaim claim) mutable {
    claiming_.erase(folded);
    Session* session = hold.session();
    if (!session) {
      // Gone while asking (its old nick was released as it went): the new one is nobody's.
      if (claim == NickClaim::ok) services_.cluster->release_nick(folded);
      return;
    }
    if (claim == NickClaim::taken) {
      fail(*session, r, ErrorCode::nick_taken, "'" + r.nick + "' is taken");
    } else if (claim == NickClaim::unavailable) {
      ++stats_.nicks_unavailable;
      fail(*session, r, ErrorCode::unavailable, "the cluster is unreachable: your nick was not changed; try again shortly");
    } else {
      std::string old = apply_nick(*session, r.nick);
      session->nick_claimed = true;
      reply(*session, wire::ok_nick(r.id, session->nick));
      announce_rename(*session, old);
    }
    hold.release();
  });
}

std::string Router::apply_nick(Session& s, const std::string& nick) {
  std::string old = s.nick;
  by_nick_.erase(fold_case(old));
  by_nick_[fold_case(nick)] = &s;
  // The member lists are ordered by nick: take the session out under the old one.
  for (const auto& m : s.rooms) m.room->by_nick.erase(&s);
  s.nick = nick;
  for (const auto& m : s.rooms) m.room->by_nick.insert(&s);
  return old;
}

void Router::announce_rename(Session& s, const std::string& old) {
  for (const auto& m : s.rooms) {
    if (m.room->clustered) services_.cluster->member_renamed(m.room->name, old, s.nick);
    announce_nick(*m.room, s.nick, old, &s);
  }
}

void Router::cluster_nick_lost(const std::string& folded) {
  auto it = by_nick_.find(folded);
  if (it == by_nick_.end() || !it->second->nick_claimed) return;
  Session& s = *it->second;
  s.nick_claimed = false;
  std::string old = apply_nick(s, next_guest_nick());
  register_guest(s);
  s.out->send(make_event(wire::system_renamed(s.nick, old, "another node's client has your nick now")));
  announce_rename(s, old);
}

void Router::on_rooms(Session& s, const Request& r) {
  if (!services_.cluster || !services_.cluster->available()) return reply(s, rooms_body(r.id, nullptr));
  // The counts of clustered rooms this node has no member in, and the rooms other nodes
  // made, are the cluster's: the reply waits for them.
  services_.cluster->room_counts(
      [this, hold = hold_request(s), id = r.id](std::optional<std::vector<ClusterRoomCount>> counts) mutable {
        if (Session* session = hold.session()) reply(*session, rooms_body(id, counts ? &*counts : nullptr));
        hold.release();
      });
}

ordered_json Router::rooms_body(const std::optional<nlohmann::json>& id, const std::vector<ClusterRoomCount>* cluster) const {
  std::unordered_map<std::string_view, const ClusterRoomCount*> counted;
  if (cluster)
    for (const auto& c : *cluster) counted.emplace(c.room, &c);
  auto entries = ordered_json::array();
  std::vector<const ClusterRoomCount*> elsewhere;  // rooms only other nodes have, in name order
  if (cluster)
    for (const auto& c : *cluster)
      if (!find_room(c.room) && c.members > 0) elsewhere.push_back(&c);  // a kept topic alone is no room here
  std::sort(elsewhere.begin(), elsewhere.end(), [](auto* a, auto* b) { return a->room < b->room; });
  auto next = elsewhere.begin();
  for (const auto& info : rooms()) {
    for (; next != elsewhere.end() && (*next)->room < info.name; ++next)
      entries.push_back(wire::room_entry((*next)->room, (*next)->topic.value_or(""), (*next)->members, false));
    std::size_t members = info.members + info.remote_members;
    std::string_view topic = info.topic;
    // A clustered room watched here counts as this node knows it (what its members have
    // heard); one unwatched, as the cluster counts it, with the cluster's topic (or, if it
    // holds none, the configured one: what this node last heard may be stale).
    const Room* room = find_room(info.name);
    if (room->clustered && room->members.empty() && cluster) {
      auto c = counted.find(info.name);
      members = c == counted.end() ? 0 : c->second->members;
      topic = c != counted.end() && c->second->topic ? std::string_view(*c->second->topic)
                                                     : std::string_view(room->default_topic);
    }
    entries.push_back(wire::room_entry(info.name, topic, members, info.keyed));
  }
  for (; next != elsewhere.end(); ++next)
    entries.push_back(wire::room_entry((*next)->room, (*next)->topic.value_or(""), (*next)->members, false));
  return wire::rooms(id, std::move(entries));
}

void Router::on_join(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, false);
  if (!room) {
    if (r.current_room || !valid_room_name(r.room)) return;  // resolve_room answered
    if (!settings_.dynamic_rooms)
      return fail(s, r, ErrorCode::no_such_room, "no room '" + r.room + "' (dynamic rooms are off)");
    if (dynamic_rooms_ >= settings_.max_rooms)
      return fail(s, r, ErrorCode::no_such_room,
                  "no room '" + r.room + "', and the server has its maximum of " +
                      std::to_string(settings_.max_rooms) + " rooms");
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
  if (!again && room->followed && !room->synced && services_.cluster->available()) {
    // A followed room still catching up (the node just started): the join waits for where the
    // cluster stands, before the client is a member, so the catch-up is not sent to it as new
    // messages; its `joined` then has the cluster's seq, and the store has every message up
    // to it. Its later requests wait meanwhile.
    room->waiting_joins.push_back([this, hold = hold_request(s), r, name = room->name, serial = room->serial]() mutable {
      Session* session = hold.session();
      Room* now = find_room(name);
      if (session && now && now->serial == serial) finish_join(*session, r, *now);
      hold.release();
    });
    return;
  }
  if (!again) {
    if (member_count(*room) >= room->max_members)
      return fail(s, r, ErrorCode::room_full, "room '" + room->name + "' is full");
    add_member(s, *room);
  } else {
    // Joining again makes the room current (text mode) without telling anyone.
    auto mine = std::find_if(s.rooms.begin(), s.rooms.end(),
                             [&](const Session::Membership& m) { return m.room == room; });
    std::rotate(mine, mine + 1, s.rooms.end());
  }
  if (room->clustered && !room->synced && services_.cluster->available()) {
    // Where the room stands comes from the cluster first: the reply waits for it (and so do
    // this client's later requests); the others hear of the join now.
    room->waiting_joins.push_back([this, hold = hold_request(s), r, name = room->name, serial = room->serial]() mutable {
      Session* session = hold.session();
      Room* now = find_room(name);
      if (session && now && now->serial == serial && is_member(*session, *now)) send_joined(*session, r, *now);
      hold.release();
    });
  } else {
    send_joined(s, r, *room);
  }
  if (!again) announce_join(*room, s.nick, &s);
}

void Router::send_joined(Session& s, const Request& r, Room& room_ref) {
  Room* room = &room_ref;
  const std::uint64_t last_seq = room->next_seq - 1;
  wire::RoomPosition position{.seq = last_seq, .epoch = room->epoch, .resumed = std::nullopt};
  // A resume replays exactly what came after `since`; anything else, the newest `replay`.
  std::size_t n = std::min<std::size_t>(settings_.replay, room->history.size());
  if (r.since) {
    position.resumed = can_resume(*room, *r.since, r.epoch);
    if (*position.resumed) n = static_cast<std::size_t>(last_seq - *r.since);
    ++(*position.resumed ? stats_.resumes : stats_.resumes_refused);
  }
  std::vector<std::string_view> replay;
  replay.reserve(n);
  for (auto it = room->history.end() - static_cast<std::ptrdiff_t>(n); it != room->history.end(); ++it)
    replay.push_back(*(*it)->bytes(Mode::json));
  s.out->send(Event::from_json_line(wire::joined_line(
      r.id, room->name, room->topic, member_page(*room, std::nullopt, settings_.member_page), position, replay)));
}

bool Router::can_resume(const Room& room, std::uint64_t since, const std::optional<std::string>& epoch) const {
  if (epoch && *epoch != room.epoch) return false;  // the room started again since
  const std::uint64_t last_seq = room.next_seq - 1;
  if (since > last_seq) return false;  // seen more than this room ever had: another room
  const std::uint64_t missed = last_seq - since;
  // The ring is consecutive and ends at last_seq, so holding `missed` messages is enough.
  return missed <= settings_.replay_max && missed <= room.history.size();
}

void Router::on_leave(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!is_member(s, *room)) return fail(s, r, ErrorCode::not_member, "you are not in '" + room->name + "'");
  if (!churn_allowed(s, r)) return;
  remove_member(s, *room);
  reply(s, wire::left(r.id, room->name));
  announce_leave(*room, s.nick, &s);
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
  const std::size_t keep = ring_size(durable);
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
  if (room->clustered) return say_clustered(s, r, *room);
  // A resend of a say already published (the client lost its connection before the ok): the
  // first one's answer again, nothing published (docs/protocol.md, Resending a say).
  std::string said_key;
  if (r.msg_id) {
    said_key = fold_case(s.nick) + ' ' + *r.msg_id;
    if (const Said* first = recent_say(room->said, said_key)) return answer_duplicate(s, r, *first);
  }
  const bool durable = persisted(*room);
  // A duplicate of a persisted say is answered once its commit is known: it needs the outcome.
  auto commit = durable && r.msg_id ? std::make_shared<Commit>() : nullptr;
  std::uint64_t seq = 0;
  if (durable && (r.id || commit)) {
    // The ok promises durability: it waits for the batch's commit, and so do this client's
    // later requests.
    auto ok = wire::ok_seq(r.id, room->next_seq);  // the seq publish() is about to give
    std::optional<Hold> hold;
    if (r.id) hold = hold_request(s);
    std::optional<nlohmann::json> request_id = r.id;
    seq = publish(*room, &s, s.nick, r, [this, hold, commit, ok = std::move(ok), request_id](bool committed) mutable {
      if (Session* session = hold ? hold->session() : nullptr) {
        if (committed) {
          reply(*session, std::move(ok));
        } else {
          reply(*session,
                wire::error_body(ErrorCode::internal, "the message was sent but could not be stored", request_id));
        }
        hold->release();
      }
      if (commit) commit->settle(committed);  // then its duplicates' answers
    });
  } else {
    seq = publish(*room, &s, s.nick, r);
    if (r.id) reply(s, wire::ok_seq(r.id, seq));
  }
  if (r.msg_id) remember_say(room->said, std::move(said_key), seq, std::move(commit), kRecentSaysPerRoom);
}

// Forgets, oldest first, what the window has passed (remember_say keeps the count): O(1) per
// say, since each key is forgotten once, and nothing per member.
const Router::Said* Router::recent_say(RecentIds& recent, const std::string& key) {
  const std::uint64_t now = clock_.mono_ms();
  while (!recent.order.empty() && recent.order.front().first + kSaidWindowMs <= now) {
    recent.ids.erase(recent.ids.find(*recent.order.front().second));
    recent.order.pop_front();
  }
  auto it = recent.ids.find(key);
  return it == recent.ids.end() ? nullptr : &it->second;
}

void Router::remember_say(RecentIds& recent, std::string key, std::uint64_t seq, std::shared_ptr<Commit> commit,
                          std::size_t bound) {
  auto [it, fresh] = recent.ids.try_emplace(std::move(key), Said{seq, std::move(commit)});
  if (!fresh) return;  // recent_say found none: cannot happen
  // The map's nodes do not move, so the order can point at their keys.
  recent.order.emplace_back(clock_.mono_ms(), &it->first);
  if (recent.order.size() > bound) {
    recent.ids.erase(recent.ids.find(*recent.order.front().second));
    recent.order.pop_front();
  }
}

void Router::answer_duplicate(Session& s, const Request& r, const Said& first) {
  ++stats_.says_duplicate;
  if (!r.id) return;  // no ok was asked for, and nothing is sent again
  auto answer = [this, id = r.id, seq = first.seq](Session& session, bool stored) {
    if (stored) reply(session, wire::ok_seq(id, seq, true));
    else reply(session, wire::error_body(ErrorCode::internal, "the message was sent but could not be stored", id));
  };
  if (!first.commit || first.commit->stored) return answer(s, !first.commit || *first.commit->stored);
  // Its commit is under way: this ok waits for it as the first one's does, and so do the
  // client's later requests.
  first.commit->waiting.push_back([hold = hold_request(s), answer](bool stored) mutable {
    if (Session* session = hold.session()) answer(*session, stored);
    hold.release();
  });
}

// A clustered room's say: the cluster gives it its seq and sends it back to every node, this one
// included, which delivers it then; the ok follows its own message here. Says are pipelined
// (docs/cluster.md): the next request of the session is served at once if it is another such
// say (up to settings.says_in_flight unanswered), and its replies go out in the order of its requests
// (open_slot, flush_answers); any other request waits until the says before it are answered.
void Router::say_clustered(Session& s, const Request& r, Room& room) {
  if (!services_.cluster->available())
    return fail(s, r, ErrorCode::unavailable, "the cluster is unreachable: the message was not sent; try again shortly");
  auto parts = wire::message_line_parts(room.name, clock_.wall_ms(), s.nick, r.text, r.data);
  ClusterSay say{room.name, std::to_string(s.id) + ":" + std::to_string(++s.says), std::move(parts.head),
                 std::move(parts.tail), r.msg_id ? fold_case(s.nick) + ":" + *r.msg_id : std::string()};
  services_.cluster->say(std::move(say), [this, slot = open_slot(s, r.id), id = r.id, name = room.name,
                                          serial = room.serial](ClusterSaid said) mutable {
    if (!said.ok)
      return slot.answer(wire::error_body(ErrorCode::unavailable,
                                          "the cluster is unreachable: the message may not have been sent", id));
    ++(said.duplicate ? stats_.says_duplicate : stats_.messages_in);
    // The ok; or, for a followed room's message this node could not store, why not.
    auto ack = [slot, id, seq = said.seq, duplicate = said.duplicate](std::optional<ErrorCode> failed = std::nullopt) mutable {
      if (!id) return slot.answer(std::nullopt);
      slot.answer(!failed ? wire::ok_seq(id, seq, duplicate)
                          : wire::error_body(*failed,
                                             *failed == ErrorCode::unavailable
                                                 ? "the cluster lost the message before this node stored it: it may "
                                                   "or may not have been kept"
                                                 : "the message was sent but could not be stored",
                                             id));
    };
    Room* room = find_room(name);
    if (room && room->serial == serial && room->followed && id) return await_stored(*room, said, std::move(ack));
    const bool delivered = room && room->epoch == said.epoch && room->next_seq > said.seq;
    if (!room || room->serial != serial || delivered || !services_.cluster->available()) return ack();
    // By seq: a duplicate's seq is an older one's, and it goes out when that is delivered here.
    auto at = std::upper_bound(room->waiting_acks.begin(), room->waiting_acks.end(), said.seq,
                               [](std::uint64_t seq, const auto& waiting) { return seq < waiting.first; });
    room->waiting_acks.emplace(at, said.seq, std::move(ack));
  });
}

void Router::release_cluster_waits(Room& room, std::uint64_t upto, bool joins_too) {
  if (joins_too) {
    auto joins = std::exchange(room.waiting_joins, {});
    for (auto& answer : joins) answer();
  }
  while (!room.waiting_acks.empty() && room.waiting_acks.front().first <= upto) {
    auto ack = std::move(room.waiting_acks.front().second);
    room.waiting_acks.pop_front();
    ack();
  }
}

// A followed room's ok promises what one node's does: its message is in this node's store.
void Router::await_stored(Room& room, const ClusterSaid& said, std::function<void(std::optional<ErrorCode>)> ack) {
  if (said.epoch == room.epoch && said.seq <= room.stored_through)  // its commit ran already
    return ack(is_unstored(room, said.seq) ? std::optional(ErrorCode::internal) : std::nullopt);
  if (!services_.cluster->available() && !(said.epoch == room.epoch && said.seq <= room.delivered_through))
    return ack(ErrorCode::unavailable);  // not delivered here, and nothing will be until Redis is back
  auto at = std::upper_bound(room.stored_acks.begin(), room.stored_acks.end(), said.seq,
                             [](std::uint64_t seq, const Room::StoredAck& a) { return seq < a.seq; });
  room.stored_acks.insert(at, Room::StoredAck{said.epoch, said.seq, std::move(ack)});
}

void Router::note_unstored(Room& room, std::uint64_t first, std::uint64_t last) {
  if (first > last) return;
  room.unstored[first] = last;
  while (room.unstored.size() > kUnstoredRanges) room.unstored.erase(room.unstored.begin());
}

bool Router::is_unstored(const Room& room, std::uint64_t seq) const {
  auto it = room.unstored.upper_bound(seq);
  return it != room.unstored.begin() && seq <= std::prev(it)->second;
}

// The commit of a followed room's message ran (`stored`: it is on disk here).
void Router::on_stored(Room& room, std::uint64_t seq, bool stored) {
  room.stored_through = std::max(room.stored_through, seq);
  if (!stored) note_unstored(room, seq, seq);
  while (!room.stored_acks.empty() && room.stored_acks.front().seq <= seq) {
    auto ack = std::move(room.stored_acks.front());
    room.stored_acks.pop_front();
    // One still waiting below this seq was never delivered here (the stream had lost it).
    ack.answer(ack.seq == seq && stored ? std::nullopt : std::optional(ErrorCode::internal));
  }
  if (room.synced_when_stored && room.stored_through >= *room.synced_when_stored) {
    room.synced_when_stored.reset();
    room.synced = true;
    release_cluster_waits(room, 0, true);
  }
}

// Acks of a followed room that can no longer be stored here go out as errors.
void Router::fail_stored_acks(Room& room, ErrorCode code,
                              const std::function<bool(const std::string& epoch, std::uint64_t seq)>& which) {
  std::deque<Room::StoredAck> failed, kept;
  for (auto& a : room.stored_acks) (which(a.epoch, a.seq) ? failed : kept).push_back(std::move(a));
  room.stored_acks = std::move(kept);
  for (auto& a : failed) a.answer(code);
}

// Redis began a followed room again under `epoch`. This node's store keeps the old epoch's
// messages up to `through`, so the new epoch's seqs up to there are not stored here; acks of
// messages ordered in another epoch were lost with it.
void Router::switch_epoch(Room& room, const std::string& epoch, std::uint64_t through) {
  room.epoch = epoch;
  room.unstored.clear();
  note_unstored(room, 1, through);
  fail_stored_acks(room, ErrorCode::unavailable, [&](const std::string& e, std::uint64_t) { return e != epoch; });
  fail_stored_acks(room, ErrorCode::internal, [&](const std::string&, std::uint64_t seq) { return seq <= through; });
}

void Router::cluster_synced(const std::string& name, const RoomState& state) {
  Room* room = find_room(name);
  if (!room || !room->clustered) return;
  if (room->followed) {
    // Its messages came through cluster_deliver and its store: where it stands is where they
    // left it, and the ring goes on (the old epoch's messages stay its history).
    if (state.epoch != room->epoch) switch_epoch(*room, state.epoch, state.last_seq);
    if (state.last_seq + 1 != room->next_seq) {  // the stream had lost its last seqs
      room->next_seq = state.last_seq + 1;
      room->history.clear();
    }
    // The joins waiting for the catch-up are answered once the store has it too, so a
    // `history` after `joined` pages through everything up to its seq.
    if (room->stored_through >= room->delivered_through) {
      room->synced = true;
      release_cluster_waits(*room, 0, true);
    } else {
      room->synced_when_stored = room->delivered_through;
    }
    return;
  }
  room->next_seq = state.last_seq + 1;
  room->epoch = state.epoch;
  room->history.clear();
  fill_ring(*room, state);
  room->synced = true;
  release_cluster_waits(*room, state.last_seq, true);
}

void Router::cluster_deliver(const std::string& name, std::uint64_t seq, const std::string& epoch, std::string line) {
  Room* room = find_room(name);
  if (!room || !room->clustered) return;
  if (room->followed) {
    if (epoch != room->epoch) switch_epoch(*room, epoch, seq - 1);  // (the bus reports a new epoch first)
    if (seq > room->next_seq) note_unstored(*room, room->next_seq, seq - 1);  // the stream no longer had them
  }
  // The ring holds consecutive seqs: after a jump (messages the cluster no longer had, a new
  // epoch) it starts again from this one.
  if (epoch != room->epoch || seq != room->next_seq) room->history.clear();
  room->epoch = epoch;
  room->next_seq = seq + 1;
  std::string text;
  if (room->followed) {
    // What search indexes: the message's text, read from the line (not kept as a DOM).
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (auto t = parsed.is_object() ? parsed.find("text") : parsed.end(); t != parsed.end() && t->is_string())
      text = t->get<std::string>();
  }
  EventPtr event = Event::from_json_line(std::move(line));
  room->history.push_back(event);
  while (room->history.size() > ring_size(persisted(*room))) room->history.pop_front();
  stats_.deliveries += room->members.size();
  for (Session* m : room->members) m->out->send_broadcast(event, room->name);
  if (room->followed) {
    // After the fan-out, as on one node; its commit releases the acks waiting for it.
    room->delivered_through = seq;
    services_.persistence->append(
        StoredMessage{room->name, seq, *event->bytes(Mode::json), std::move(text), epoch},
        [this, name = room->name, serial = room->serial, seq](bool stored) {
          Room* now = find_room(name);
          if (now && now->serial == serial) on_stored(*now, seq, stored);
        });
  }
  release_cluster_waits(*room, seq, false);
}

void Router::cluster_lost() {
  for (auto& entry : rooms_) {
    Room& room = *entry.second;
    if (!room.clustered) continue;
    release_cluster_waits(room, UINT64_MAX, true);
    // A followed room's acks whose message has not reached this node cannot be kept now;
    // those delivered wait for their commit, which needs no Redis.
    if (room.followed)
      fail_stored_acks(room, ErrorCode::unavailable, [&room](const std::string& epoch, std::uint64_t seq) {
        return epoch != room.epoch || seq > room.delivered_through;
      });
  }
}

void Router::cluster_members(const std::string& name, std::vector<std::string> others) {
  Room* room = find_room(name);
  if (!room || !room->clustered || (room->members.empty() && !room->followed)) return;
  std::set<std::string, std::less<>> now(std::make_move_iterator(others.begin()), std::make_move_iterator(others.end()));
  std::vector<std::string> left, joined;
  // A followed room is kept current with nobody here too (its first member's joined lists
  // the others), and with nobody to tell, nothing is announced.
  if (room->remote_known && !room->members.empty()) {
    // Read again (a reconnect, a gap): the changes this node did not hear are announced now.
    std::set_difference(room->remote.begin(), room->remote.end(), now.begin(), now.end(), std::back_inserter(left));
    std::set_difference(now.begin(), now.end(), room->remote.begin(), room->remote.end(), std::back_inserter(joined));
  }
  room->remote = std::move(now);
  room->remote_known = true;
  for (const auto& nick : left) announce_leave(*room, nick, nullptr);
  for (const auto& nick : joined) announce_join(*room, nick, nullptr);
}

void Router::cluster_presence(const std::string& name, const ClusterPresence& p) {
  Room* room = find_room(name);
  if (!room || !room->clustered) return;
  // A topic counts whether or not the room has members here (a followed room is heard anyway),
  // and the setter's node takes it from here too: one order for the topic on every node.
  // Announced even when it is the same text again, as on one node.
  if (p.kind == ClusterPresence::Kind::topic && !p.nicks.empty()) {
    apply_cluster_topic(*room, p.topic);
    return announce_topic(*room, p.nicks[0]);
  }
  if (room->members.empty() && !room->followed) return;
  // A followed room is kept current with nobody here too: there is then no one to tell.
  const bool told = !room->members.empty();
  switch (p.kind) {
    case ClusterPresence::Kind::join:
      for (const auto& nick : p.nicks)
        if (room->remote.insert(nick).second && told) announce_join(*room, nick, nullptr);
      break;
    case ClusterPresence::Kind::leave:
      for (const auto& nick : p.nicks)
        if (room->remote.erase(nick) && told) announce_leave(*room, nick, nullptr);
      break;
    case ClusterPresence::Kind::topic: break;  // above
    case ClusterPresence::Kind::nick:
      if (p.nicks.size() != 2) break;
      room->remote.erase(p.nicks[0]);
      room->remote.insert(p.nicks[1]);
      if (told) announce_nick(*room, p.nicks[1], p.nicks[0], nullptr);
      break;
  }
}

void Router::on_whisper(Session& s, const Request& r) {
  const std::string folded = fold_case(r.to);
  auto it = by_nick_.find(folded);
  // A nick no client here has may be another node's: the cluster knows who holds it (guests
  // too: registered as they come). This node's own guest prefix is nobody's elsewhere.
  const bool elsewhere = it == by_nick_.end() && services_.cluster && valid_nick(r.to) &&
                         !folded.starts_with(fold_case(services_.cluster->guest_prefix()));
  // A resend of a whisper delivered here (this node's client its target), from here or
  // handed on by another node: answered as the first was, not delivered again. One handed on
  // to another node, Redis knows (the cluster's answer below).
  std::string whisper_key;
  if (r.msg_id && valid_nick(r.to)) {
    whisper_key = fold_case(s.nick) + ' ' + folded + ' ' + *r.msg_id;
    if (recent_say(*whispered_, whisper_key)) return answer_whisper_duplicate(s, r);
  }
  if (!valid_nick(r.to) || (it == by_nick_.end() && !elsewhere))
    return fail(s, r, ErrorCode::no_such_nick, "nobody is called '" + r.to + "'");
  if (elsewhere && !services_.cluster->available())
    return fail(s, r, ErrorCode::unavailable, "the cluster is unreachable: whispers to other servers cannot go now");
  if (!s.bucket.try_take(clock_.mono_ms())) {
    ++stats_.rate_limited;
    return fail(s, r, ErrorCode::rate_limited, "slow down: too many messages");
  }
  if (elsewhere) {
    // The reply waits for the cluster's answer (and so do this client's later requests).
    ClusterWhisper w{folded, s.nick, r.text.value_or(""), clock_.wall_ms(), r.msg_id.value_or("")};
    services_.cluster->whisper(std::move(w), [this, hold = hold_request(s), r](WhisperSent sent) mutable {
      if (sent == WhisperSent::duplicate) ++stats_.whispers_duplicate;
      if (Session* session = hold.session()) {
        if (sent == WhisperSent::ok) reply(*session, wire::ok(r.id));
        else if (sent == WhisperSent::duplicate) reply(*session, wire::ok_duplicate(r.id));
        else if (sent == WhisperSent::no_such_nick) fail(*session, r, ErrorCode::no_such_nick, "nobody is called '" + r.to + "'");
        else fail(*session, r, ErrorCode::unavailable, "the whisper may not have reached '" + r.to + "': try again shortly");
      }
      hold.release();
    });
    return;
  }
  Session& target = *it->second;
  target.out->send_broadcast(
      make_event(wire::whisper(s.nick, target.nick, r.text.value_or(""), clock_.wall_ms())), "");
  if (r.msg_id) remember_say(*whispered_, std::move(whisper_key), 0, nullptr, kRecentWhispers);
  reply(s, wire::ok(r.id));
}

void Router::answer_whisper_duplicate(Session& s, const Request& r) {
  ++stats_.whispers_duplicate;
  reply(s, wire::ok_duplicate(r.id));
}

void Router::on_who(Session& s, const Request& r) {
  const std::size_t limit = r.limit.value_or(settings_.member_page);
  Room* room = resolve_room(s, r, !services_.cluster);
  if (!room) {
    if (!services_.cluster || r.current_room || !valid_room_name(r.room)) return;  // resolve_room answered
    // A room this node does not have may have members on other nodes.
    return who_from_cluster(s, r, limit, false);
  }
  if (!room->key.empty() && !is_member(s, *room))
    return fail(s, r, ErrorCode::not_member, "'" + room->name + "' is keyed: join it first");
  // Unwatched, this node does not follow its members: the cluster has them.
  if (room->clustered && room->members.empty()) return who_from_cluster(s, r, limit, true);
  reply(s, wire::who(r.id, room->name, member_page(*room, r.after, limit)));
}

void Router::who_from_cluster(Session& s, const Request& r, std::size_t limit, bool known_here) {
  auto answer = [this, r, known_here](Session& session, std::optional<ClusterMemberPage> page) {
    if (page && (known_here || page->count > 0))
      return reply(session, wire::who(r.id, r.room, wire::MemberPage{std::move(page->nicks), page->count, page->more}));
    // Unanswered: what this node knows (a room of its own with nobody here, or none).
    if (known_here) return reply(session, wire::who(r.id, r.room, wire::MemberPage{}));
    fail(session, r, ErrorCode::no_such_room, "no room '" + r.room + "'");
  };
  if (!services_.cluster->available()) return answer(s, std::nullopt);
  services_.cluster->who(r.room, r.after, limit,
                         [hold = hold_request(s), answer](std::optional<ClusterMemberPage> page) mutable {
                           if (Session* session = hold.session()) answer(*session, std::move(page));
                           hold.release();
                         });
}

void Router::on_topic(Session& s, const Request& r) {
  Room* room = resolve_room(s, r, true);
  if (!room) return;
  if (!is_member(s, *room)) return fail(s, r, ErrorCode::not_member, "join '" + room->name + "' first");
  if (!may_speak(s, *room)) return fail(s, r, ErrorCode::read_only, "'" + room->name + "' is read-only");
  if (room->clustered) {
    // The cluster's: stored in Redis, then heard back by every node (this one too) in the
    // room's order, which applies and announces it (cluster_presence). Never set locally while
    // Redis is away: the nodes would disagree on it.
    if (!services_.cluster->available())
      return fail(s, r, ErrorCode::unavailable, "the cluster is unreachable: the topic was not changed; try again shortly");
    services_.cluster->set_topic(room->name, s.nick, r.topic, room->configured,
                                 [this, hold = hold_request(s), r](bool stored) mutable {
                                   if (Session* session = hold.session()) {
                                     if (stored) reply(*session, wire::ok(r.id));
                                     else fail(*session, r, ErrorCode::unavailable,
                                               "the cluster did not answer: the topic may not have been changed");
                                   }
                                   hold.release();
                                 });
    return;
  }
  room->topic = r.topic;
  reply(s, wire::ok(r.id));
  to_others(*room, &s, make_event(wire::presence_topic(room->name, s.nick, room->topic)));
}

bool Router::apply_cluster_topic(Room& room, const std::optional<std::string>& topic) {
  room.topic_from_cluster = topic.has_value();
  const std::string& now = topic ? *topic : room.default_topic;
  if (now == room.topic) return false;
  room.topic = now;
  return true;
}

void Router::announce_topic(Room& room, const std::string& by) {
  // The setter, if it is a client here, has its `ok`; the others hear it.
  auto setter = by_nick_.find(fold_case(by));
  const Session* except = setter == by_nick_.end() ? nullptr : setter->second;
  to_others(room, except, make_event(wire::presence_topic(room.name, by, room.topic)));
}

void Router::cluster_topic(const std::string& name, const std::optional<ClusterTopic>& topic) {
  Room* room = find_room(name);
  if (!room || !room->clustered) return;
  // Read when the room is first watched (its joins are waiting: their `joined` has it, nobody
  // is told) or again after a reconnect or a gap (a change not heard meanwhile is announced).
  const bool heard_before = room->synced && !room->members.empty();
  if (apply_cluster_topic(*room, topic ? std::optional(topic->text) : std::nullopt) && heard_before)
    announce_topic(*room, topic ? topic->by : "server");
}

void Router::cluster_whisper(const ClusterWhisper& w) {
  auto it = by_nick_.find(w.to);
  if (it == by_nick_.end()) return;  // gone since its node claimed the nick: the sender had its ok
  if (!w.msg_id.empty()) {
    // Sent again through this node or another (its first answer lost): delivered once.
    std::string key = fold_case(w.from) + ' ' + w.to + ' ' + w.msg_id;
    if (recent_say(*whispered_, key)) return;
    remember_say(*whispered_, std::move(key), 0, nullptr, kRecentWhispers);
  }
  Session& target = *it->second;
  target.out->send_broadcast(make_event(wire::whisper(w.from, target.nick, w.text, w.ts)), "");
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
    s->churn.reconfigure(settings_.churn_rate, settings_.churn_burst);
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
    if (room->followed) {
      services_.cluster->unwatch(room->name);
      fail_stored_acks(*room, ErrorCode::internal, [](const std::string&, std::uint64_t) { return true; });
    }
    rooms_.erase(room->name);
  }
  for (const auto& rc : configured) {
    Room* room = find_room(rc.name);
    if (!room) {
      create_room(rc.name, &rc);
      continue;
    }
    if (!room->configured) --dynamic_rooms_;  // a dynamic room the file now configures
    std::string old_topic = room->topic;
    apply_room_config(*room, rc);
    if (room->topic != old_topic) {
      to_others(*room, nullptr, make_event(wire::presence_topic(room->name, "server", room->topic)));
    }
  }
  for (auto& [name, room] : rooms_)
    while (room->history.size() > ring_size(persisted(*room))) room->history.pop_front();
}

std::vector<RoomInfo> Router::rooms() const {
  std::vector<RoomInfo> out;
  out.reserve(rooms_.size());
  for (const auto& [name, room] : rooms_)
    out.push_back({room->name, room->topic, room->members.size(), !room->key.empty(),
                   room->configured, room->next_seq - 1, room->remote.size()});
  std::sort(out.begin(), out.end(), [](const RoomInfo& a, const RoomInfo& b) { return a.name < b.name; });
  return out;
}

std::optional<std::vector<std::string>> Router::who(std::string_view name) const {
  Room* room = find_room(name);
  if (!room) return std::nullopt;
  return member_page(*room, std::nullopt, member_count(*room)).nicks;
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
  if (room->clustered) {
    if (!services_.cluster->available()) return "the cluster is unreachable";
    auto parts = wire::message_line_parts(room->name, clock_.wall_ms(), "server", r.text, r.data);
    services_.cluster->say({room->name, "server:" + std::to_string(++server_says_), std::move(parts.head),
                            std::move(parts.tail), {}},
                           [](ClusterSaid) {});
    return std::nullopt;
  }
  publish(*room, nullptr, "server", r);
  return std::nullopt;
}

void Router::send_all(const EventPtr& event) {
  for (auto& [id, s] : sessions_) s->out->send(event);
}

}  // namespace roomd
