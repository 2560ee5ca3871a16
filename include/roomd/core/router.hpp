// Router: nicks, rooms, membership, sequence numbers and who hears what. Plain C++ over plain
// data: it never touches a socket. What it says goes to each session's Outbox (session.hpp),
// an interface the connection implements (and tests implement with a vector).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "roomd/base/rate_limiter.hpp"
#include "roomd/core/address_pacer.hpp"
#include "roomd/core/cluster_bus.hpp"
#include "roomd/core/guess_throttle.hpp"
#include "roomd/core/room_config.hpp"
#include "roomd/core/session.hpp"
#include "roomd/history/persistence.hpp"
#include "roomd/offload/key_checker.hpp"
#include "roomd/offload/task_runner.hpp"
#include "roomd/protocol/event.hpp"
#include "roomd/protocol/request.hpp"
#include "roomd/protocol/wire.hpp"

namespace roomd {

struct Clock {
  std::function<std::uint64_t()> wall_ms{};  // ts of messages
  std::function<std::uint64_t()> mono_ms{};  // rate limiting
};

// What the router uses beyond plain data. Everything is optional except the clock.
struct RouterServices {
  Clock clock{};
  TaskRunner* tasks = nullptr;          // needed for keyed rooms
  Persistence* persistence = nullptr;   // absent: history is memory only
  // Checks a key against an argon2id hash; runs on a pool thread.
  std::function<bool(const std::string& hash, const std::string& key)> verify_key{};
  // The figures of the `stats` op (admin listeners only).
  std::function<ordered_json()> stats{};
  // A source went over its key-guess budget (once until it is back within it): for the log.
  std::function<void(const std::string& source, std::uint64_t retry_s)> guesses_throttled{};
  // Runs a callback on the loop `delay_ms` from now (the server's DelayQueue). Absent: requests
  // are not paced.
  std::function<void(std::uint64_t delay_ms, std::function<void()>)> after{};
  // Rooms that span nodes ([cluster], docs/cluster.md). Absent: every room is this node's.
  ClusterBus* cluster = nullptr;
};

// Says of one client into clustered rooms that may be in flight at once by default (docs/cluster.md,
// "Pipelined says"; [limits] says_in_flight): sent to the cluster back to back, answered in
// the order of its requests. At this many unanswered, the client's next request waits (its
// socket is not read). Above the default says burst (100), so a client within the default
// rate limit never meets it; enough for a busy publisher's says to reach the member nodes in
// batches (32 measured about half the deliveries/s of 128, 256 no more than 128); bounded, as
// each holds its message. The config allows 1 to kMaxSaysInFlight.
inline constexpr std::size_t kSaysInFlight = 128;
inline constexpr std::size_t kMaxSaysInFlight = 4096;

struct RouterSettings {
  std::string version;
  std::string motd;
  bool dynamic_rooms = true;
  double rate = 50;
  std::uint32_t burst = 100;
  std::uint32_t replay = 50;         // messages a plain join replays
  std::uint32_t replay_max = 1000;   // messages a resuming join (`since`) may replay at most
  std::uint32_t max_history = 100000;
  std::uint32_t max_rooms = 10000;   // dynamic rooms at once
  std::uint32_t member_page = 100;   // members listed in `joined`, and `who`'s default page
  // Rooms with more members than this get presence summaries, at most one per interval.
  std::uint32_t presence_threshold = 1000;
  std::uint32_t presence_interval_ms = 1000;
  std::uint32_t max_frame_bytes = 65536;
  GuessThrottle::Settings key_guesses;
  double query_rate = 20;  // join, history, who, rooms per second per session; 0: unpaced
  std::uint32_t query_burst = 50;
  // Nick changes and leaves per second per session, the churn every other member hears
  // (joins are paced with the queries, and a join needs a leave before it can be repeated);
  // over it they are refused with rate_limited. 0: no budget.
  double churn_rate = 2;
  std::uint32_t churn_burst = 30;
  AddressPacer::Settings address_history;  // history pages and searches per client address
  // Says of one client into clustered rooms that may be in flight at once (docs/cluster.md,
  // "Pipelined says"), [limits] says_in_flight.
  std::size_t says_in_flight = kSaysInFlight;
};

struct RouterStats {
  std::uint64_t messages_in = 0;    // says accepted
  std::uint64_t deliveries = 0;     // message copies handed to outboxes
  std::uint64_t rate_limited = 0;
  std::uint64_t requests = 0;
  std::uint64_t queries_paced = 0;  // requests that waited for their session's query budget
  std::uint64_t churn_refused = 0;  // nick changes and leaves refused over the churn budget
  std::uint64_t history_paced_by_address = 0;  // history requests that waited for their address's budget
  std::uint64_t presence_summaries = 0;  // summaries sent (one per big room and interval)
  std::uint64_t resumes = 0;             // joins with since that replayed what was missed ...
  std::uint64_t resumes_refused = 0;     // ... and those answered resumed: false
  std::uint64_t says_duplicate = 0;      // says whose msg_id was seen before: not published again
  std::uint64_t whispers_duplicate = 0;  // whispers whose msg_id was seen before: not delivered again
  std::uint64_t nicks_unavailable = 0;   // nick changes refused while the cluster was unreachable
};

// A room that is not clustered remembers the msg_ids of its says for kSaidWindowMs
// (cluster_bus.hpp), at most this many of them (the newest); a resend within both is a
// duplicate. Clustered rooms' are remembered by Redis, for the same window.
inline constexpr std::size_t kRecentSaysPerRoom = 10000;
// Whispers with a msg_id delivered to this node's clients are remembered the same way, at
// most this many (the newest) for the whole node: about 20 MB with 64-byte ids.
inline constexpr std::size_t kRecentWhispers = 100000;


struct RoomInfo {
  std::string name;
  std::string topic;
  std::size_t members;  // on this node
  bool keyed;
  bool configured;
  std::uint64_t last_seq;
  std::size_t remote_members = 0;  // a clustered room's members on other nodes, as this node knows them
};

class Router final : public SessionSink {
 public:
  Router(RouterSettings settings, const std::vector<RoomConfig>& rooms, Clock clock);
  Router(RouterSettings settings, const std::vector<RoomConfig>& rooms, RouterServices services);
  ~Router() override;
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // A new client: gets a guest nick and the welcome. The outbox must outlive the session.
  // `source` is what its key guesses count against (GuessThrottle::source_of its address).
  SessionId connect(Outbox& outbox, bool admin = false, std::string source = "unix");
  // The client is gone (EOF, reset, timeout, kick, bye): every room it was in hears
  // `presence leave` now. Unknown or already-gone ids are ignored.
  void disconnect(SessionId id);
  void handle(SessionId id, const Request& request) override;
  // A request that could not be parsed: its error goes back like any reply.
  void reject(SessionId id, const RequestError& error) override;

  // Reload: settings and the configured rooms change in place; nobody is disconnected.
  void reconfigure(RouterSettings settings, const std::vector<RoomConfig>& rooms);

  // Console and server operations.
  std::vector<RoomInfo> rooms() const;
  std::optional<std::vector<std::string>> who(std::string_view room) const;
  bool kick(std::string_view nick, std::string_view reason);
  // Says `text` in `room` from the reserved nick `server`; returns the error text if any.
  std::optional<std::string> server_say(std::string_view room, std::string_view text);
  // Sends one event to every session (shutdown notices).
  void send_all(const EventPtr& event);
  std::optional<std::string> nick_of(SessionId id) const;
  // At start, for a persisted room: seq goes on after `state.last_seq`, the replay ring
  // holds its recent messages and its epoch is the store's.
  void restore(const std::string& room, const RoomState& state);
  bool has_room(std::string_view name) const { return find_room(name) != nullptr; }

  // The cluster's side of clustered rooms (cluster_bus.hpp). Where a watched room stands
  // (its seq, epoch and newest messages): joins that waited for it are answered.
  void cluster_synced(const std::string& room, const RoomState& state);
  // The room's next message, in the cluster's seq order, to every local member (the sender's
  // own copy included: there is one ordering path); acks that waited for it go out.
  void cluster_deliver(const std::string& room, std::uint64_t seq, const std::string& epoch, std::string line);
  // The cluster became unreachable: nothing waits for it any more (joins are answered from
  // what this node knows, acks of messages the cluster took go out).
  void cluster_lost();
  // A watched room's members on the other nodes, read from the cluster (its first sync, or
  // again after a reconnect or a gap): what changed since the node last knew is announced.
  void cluster_members(const std::string& room, std::vector<std::string> others);
  // A join, leave or rename of another node's member, announced here as this node's own are.
  void cluster_presence(const std::string& room, const ClusterPresence& presence);
  // The cluster gave the nick (folded) to another node's client (this node could not renew
  // it): its client here becomes a guest, and is told.
  void cluster_nick_lost(const std::string& nick);
  // A watched room's topic as the cluster holds it, read with its members (nullopt: none
  // stored, so the configured one): a change this node had not heard is announced.
  void cluster_topic(const std::string& room, const std::optional<ClusterTopic>& topic);
  // A whisper another node's client sent to a client of this node.
  void cluster_whisper(const ClusterWhisper& whisper);
  std::size_t session_count() const { return sessions_.size(); }
  const RouterStats& stats() const { return stats_; }
  // Says into clustered rooms sent and not answered yet, all sessions together.
  std::size_t says_in_flight() const { return says_in_flight_; }
  const KeyChecker& key_checker() const { return keys_; }
  const GuessThrottle& guess_throttle() const { return guesses_; }

 private:
  struct Room;
  struct Session;
  struct NickOrder;
  struct Commit;
  struct Said;
  struct RecentIds;

  Session* find_session(SessionId id);
  bool paced(Session& s, const Request& r);
  bool churn_allowed(Session& s, const Request& r);  // answers rate_limited when not
  // A request of a session waits outside the turn (a key check, a commit, a query, pacing):
  // its session's Outbox is held until the Hold is released, exactly once (router.cpp).
  class Hold;
  Hold hold_request(Session& s);
  // A pipelined say's place in its session's replies, answered exactly once (router.cpp).
  class Slot;
  Slot open_slot(Session& s, const std::optional<nlohmann::json>& id);
  // Whether `r` is a say into a clustered room: it may go while says before it are in flight.
  bool pipelined(const Session& s, const Request& r) const;
  // The answer numbered `number` is known (null: nothing to send); those now first go out.
  void fill_answer(Session& s, std::uint64_t number, EventPtr event);
  void flush_answers(Session& s);
  void hold_then(Session& s, std::uint64_t delay_ms, std::function<void(Session&)> then);
  void serve(Session& s, const Request& r);
  Room* find_room(std::string_view name) const;
  Room* resolve_room(Session& s, const Request& r, bool need_existing);
  Room* create_room(const std::string& name, const RoomConfig* config);
  void apply_room_config(Room& room, const RoomConfig& config);
  void add_member(Session& s, Room& room);
  void remove_member(Session& s, Room& room);
  wire::MemberPage member_page(const Room& room, const std::optional<std::string>& after, std::size_t limit) const;
  // Members here and, in a clustered room, those on other nodes this node knows of.
  std::size_t member_count(const Room& room) const;
  std::string new_epoch();
  // Presence of a join, a leave or a nick change: one event to the others, or, in a big room,
  // a line in the room's next summary.
  bool summarizing(const Room& room) const;
  // `actor` is the member told by its own reply (nullptr: another node's member).
  void announce_join(Room& room, const std::string& nick, const Session* actor);
  void announce_leave(Room& room, const std::string& nick, const Session* actor);
  void announce_nick(Room& room, const std::string& nick, const std::string& old, const Session* actor);
  void schedule_summary(Room& room);
  void send_summary(Room& room);
  // Whether a join with `since` (and `epoch`) can replay every message it missed.
  bool can_resume(const Room& room, std::uint64_t since, const std::optional<std::string>& epoch) const;
  void drop_room_if_empty(Room& room);
  void fill_ring(Room& room, const RoomState& state);
  void send_joined(Session& s, const Request& r, Room& room);
  void say_clustered(Session& s, const Request& r, Room& room);
  // Says with a client's msg_id in a room that is not clustered (Redis remembers the others'):
  // the first say of that nick and id within the window, or nothing.
  // Whispers' msg_ids use the same memory (whispered_), per sender, target and id.
  const Said* recent_say(RecentIds& recent, const std::string& key);
  void remember_say(RecentIds& recent, std::string key, std::uint64_t seq, std::shared_ptr<Commit> commit,
                    std::size_t bound);
  void answer_whisper_duplicate(Session& s, const Request& r);
  void answer_duplicate(Session& s, const Request& r, const Said& first);
  // Runs the acks waiting for a seq up to `upto`, and with `joins_too` the joins waiting for
  // the room's sync (answered from what the router knows now).
  void release_cluster_waits(Room& room, std::uint64_t upto, bool joins_too);
  // Followed rooms (clustered and persisted): acks wait for the commit here (router.cpp).
  void await_stored(Room& room, const ClusterSaid& said, std::function<void(std::optional<ErrorCode>)> ack);
  void on_stored(Room& room, std::uint64_t seq, bool stored);
  void switch_epoch(Room& room, const std::string& epoch, std::uint64_t through);
  // Answers with `code` the acks waiting for a store whose (epoch, seq) `which` picks.
  void fail_stored_acks(Room& room, ErrorCode code,
                        const std::function<bool(const std::string& epoch, std::uint64_t seq)>& which);
  void note_unstored(Room& room, std::uint64_t first, std::uint64_t last);
  bool is_unstored(const Room& room, std::uint64_t seq) const;
  bool is_member(const Session& s, const Room& room) const;
  bool may_speak(const Session& s, const Room& room) const;

  void on_nick(Session& s, const Request& r);
  // Clustered: the nick is the cluster's to give (cluster_bus.hpp); the reply waits for it.
  void claim_nick(Session& s, const Request& r, const std::string& folded);
  // The session is called `nick` from now on (indexes, member lists); returns its old nick.
  std::string apply_nick(Session& s, const std::string& nick);
  // Its rooms (here and, for clustered rooms, the other nodes) hear of the rename.
  void announce_rename(Session& s, const std::string& old);
  // `who` of a clustered room this node has no member in (or does not have at all).
  void who_from_cluster(Session& s, const Request& r, std::size_t limit, bool known_here);
  ordered_json rooms_body(const std::optional<nlohmann::json>& id, const std::vector<ClusterRoomCount>* cluster) const;
  void on_rooms(Session& s, const Request& r);
  void on_join(Session& s, const Request& r);
  void on_leave(Session& s, const Request& r);
  void on_say(Session& s, const Request& r);
  void on_whisper(Session& s, const Request& r);
  void on_who(Session& s, const Request& r);
  void on_topic(Session& s, const Request& r);
  // A clustered room's topic as the cluster has it (nullopt: none, the configured one shows);
  // true if that changed it here.
  bool apply_cluster_topic(Room& room, const std::optional<std::string>& topic);
  // The room's topic as set by `by`, to its members here but the setter.
  void announce_topic(Room& room, const std::string& by);
  void on_history(Session& s, const Request& r);
  void on_bye(Session& s, const Request& r);

  std::uint64_t publish(Room& room, const Session* sender, const std::string& from, const Request& r,
                        std::function<void(bool)> committed = {});
  void finish_join(Session& s, const Request& r, Room& room);
  bool persisted(const Room& room) const;
  std::size_t ring_size(bool persisted_room) const;  // messages a room keeps in memory
  void to_others(Room& room, const Session* except, const EventPtr& event);
  void presence_to_others(Room& room, const Session* except, const EventPtr& event);  // lazily written
  void reply(Session& s, ordered_json body);
  void fail(Session& s, const Request& r, ErrorCode code, std::string message);
  std::string next_guest_nick();
  void register_guest(Session& s);

  RouterSettings settings_;
  Clock clock_;
  RouterServices services_;
  KeyChecker keys_;  // after services_, which it uses
  GuessThrottle guesses_;
  AddressPacer address_history_;
  std::unordered_map<SessionId, std::shared_ptr<Session>> sessions_;  // shared: Holds watch them
  std::unordered_map<std::string, Session*> by_nick_;  // folded nick -> session
  std::unordered_set<std::string> claiming_;           // folded nicks asked of the cluster now
  // The msg_ids of whispers delivered to this node's clients (from here or handed on by
  // another node), "FROM TO MSG_ID" (nicks folded): a resend is not delivered again.
  std::unique_ptr<RecentIds> whispered_;
  std::unordered_map<std::string, std::unique_ptr<Room>> rooms_;
  std::size_t dynamic_rooms_ = 0;  // rooms_ that are not configured (server.max_rooms)
  std::uint64_t room_serial_ = 0;
  std::uint64_t epoch_seed_;       // random per router: epochs differ across restarts
  SessionId next_id_ = 1;
  std::uint64_t guest_counter_ = 0;
  std::uint64_t server_says_ = 0;  // the console's says into clustered rooms
  RouterStats stats_;
  std::size_t says_in_flight_ = 0;
};

}  // namespace roomd
