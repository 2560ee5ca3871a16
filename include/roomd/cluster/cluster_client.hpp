// ClusterClient: this node's side of rooms that span nodes, over one Redis (docs/cluster.md).
// It implements the router's ClusterBus with two RedisLinks on the loop: one for commands
// (the `roomd` Redis Function that orders a say, state reads, gap fills, heartbeat pings) and
// one subscribed to the channels of the rooms this node has members in.
//
// Per watched room it keeps a feed: the next seq this node is to deliver and the room's epoch.
// A followed room's (a persisted one's) feed starts where the node's store ends and is kept
// for the node's life, so every message of the room reaches the store.
// Messages reach the router strictly in seq order; one that arrives ahead of a gap waits while
// the gap is read from the room's stream (XRANGE). Either link failing ends both; the client
// reconnects with backoff and jitter, loads the function again, resubscribes and catches each
// room up from its stream (or, if Redis lost the room, starts it again under its new epoch).
//
// Members and nicks: the client registers this node's members of clustered rooms and the nicks
// its clients hold, beats (a lease in Redis, renewed four times a heartbeat), sweeps nodes whose
// lease ran out, and per watched room hears the other nodes' member changes, applied in the
// order of the room's membership version (a gap reads the members again). After a reconnect,
// or when it finds it was swept, it registers everything again as it is now.
#pragma once

#include <uv.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "roomd/base/names.hpp"
#include "roomd/base/uv.hpp"
#include "roomd/cluster/redis_replies.hpp"
#include "roomd/core/cluster_bus.hpp"
#include "roomd/history/persistence.hpp"
#include "roomd/net/redis_link.hpp"

namespace roomd {

struct ClusterSettings {
  ListenAddress redis;
  std::string password;             // empty: no AUTH
  std::string node_id;              // for logs and say ids
  // The node's lease in Redis: renewed every heartbeat_ms / 4, it lasts 1.5 heartbeats, so the
  // others sweep a node within 2 heartbeats of its last beat. A command unanswered for 3
  // heartbeats (at least 2 s) ends the links.
  std::uint32_t heartbeat_ms = 1000;
  std::uint32_t max_messages_per_room = 100000;  // the stream's MAXLEN ~
  std::uint32_t recent = 1000;      // messages a sync reads into the room's ring
  std::uint32_t backoff_min_ms = 100;
  std::uint32_t backoff_max_ms = 2000;
};

// Where the client reports to (the router, wired by the server).
struct ClusterSink {
  std::function<void(const std::string& room, const RoomState& state)> synced;
  std::function<void(const std::string& room, std::uint64_t seq, const std::string& epoch, std::string line)> deliver;
  std::function<void()> lost;  // was available, no longer is
  // A watched room's members on the other nodes, as read from Redis (at a sync, after a gap).
  std::function<void(const std::string& room, std::vector<std::string> others)> members;
  // A change of a watched room's members on another node, in the room's order.
  std::function<void(const std::string& room, const ClusterPresence& presence)> presence;
  // A nick (folded) this node held and another node's client has now (after a lapse).
  std::function<void(const std::string& nick)> nick_lost;
  // A watched room's topic as read from Redis with its members (nullopt: none stored).
  std::function<void(const std::string& room, const std::optional<ClusterTopic>& topic)> topic;
  // A whisper another node handed to a client of this one.
  std::function<void(const ClusterWhisper& whisper)> whisper;
};

struct ClusterStats {
  std::uint64_t connects = 0;      // times both links came up ready
  std::uint64_t link_failures = 0;
  std::uint64_t says = 0;          // ordered by Redis
  std::uint64_t says_refused = 0;  // unavailable
  std::uint64_t says_retried = 0;  // sent again after a lost reply
  std::uint64_t say_batches = 0;   // roomd_say_batch calls (says / say_batches: the mean batch)
  std::uint64_t says_queued = 0;   // now: says waiting for their room's batch in flight
  std::uint64_t delivered = 0;     // messages handed to the router
  std::uint64_t gap_fills = 0;     // XRANGE reads for messages the subscription missed
  std::uint64_t skipped = 0;       // seqs the stream no longer had
  std::uint64_t nick_claims = 0;   // nicks claimed for a client ...
  std::uint64_t nicks_taken = 0;   // ... and those another node had
  std::uint64_t nicks_lost = 0;    // nicks held here that another node's client took after a lapse
  std::uint64_t presence_in = 0;   // member changes of other nodes handed to the router
  std::uint64_t member_reads = 0;  // a watched room's members read whole (a sync, a gap)
  std::uint64_t sweeps = 0;        // nodes whose lease ran out, swept by this node ...
  std::uint64_t swept_members = 0; // ... and their members removed
  std::uint64_t reregistered = 0;  // times this node found itself swept and registered again
  // Seqs a followed room's new epoch gave again that this node's store holds from the old
  // one (Redis lost the room and a node with less began it again): not stored here.
  std::uint64_t conflicts = 0;
  std::uint64_t topics = 0;        // topics set by clients of this node, stored in Redis
  std::uint64_t whispers_out = 0;  // whispers handed to another node (through Redis)
  std::uint64_t whispers_in = 0;   // whispers another node handed to this one
  bool redis_durable = false;      // Redis' AOF is on with appendfsync always (checked at connect)
};

class ClusterClient final : public ClusterBus {
 public:
  ClusterClient(uv_loop_t* loop, ClusterSettings settings, ClusterSink sink);
  ~ClusterClient() override;
  ClusterClient(const ClusterClient&) = delete;
  ClusterClient& operator=(const ClusterClient&) = delete;

  // Starts connecting (and keeps trying), as `default_node_id` if the settings name none.
  void start(const std::string& default_node_id);

  bool available() const override { return ready_; }
  void say(ClusterSay say, std::function<void(ClusterSaid)> done) override;
  void watch(const std::string& room) override;
  void unwatch(const std::string& room) override;
  std::string guest_prefix() const override { return guest_prefix_; }
  void claim_nick(const std::string& nick, const std::string& replaced, std::function<void(NickClaim)> done) override;
  void release_nick(const std::string& nick) override;
  void register_guest(const std::string& nick) override;
  void member_joined(const std::string& room, const std::string& nick) override;
  void member_left(const std::string& room, const std::string& nick) override;
  void member_renamed(const std::string& room, const std::string& old, const std::string& nick) override;
  void who(const std::string& room, const std::optional<std::string>& after, std::size_t limit,
           std::function<void(std::optional<ClusterMemberPage>)> done) override;
  void room_counts(std::function<void(std::optional<std::vector<ClusterRoomCount>>)> done) override;
  // Nothing sent awaits its reply (a clean shutdown waits for the leaves and releases to be
  // done before it exits).
  bool idle() const { return !ready_ || !commands_ || commands_->awaiting_replies() == 0; }
  void follow(const std::string& room, std::uint64_t last_seq, const std::string& epoch) override;
  void set_topic(const std::string& room, const std::string& nick, const std::string& topic, bool kept,
                 std::function<void(bool)> done) override;
  void whisper(ClusterWhisper whisper, std::function<void(WhisperSent)> done) override;

  const ClusterStats& stats() const { return stats_; }
  const ClusterSettings& settings() const { return settings_; }

  // The Redis Function library, loaded with FUNCTION LOAD REPLACE at every connect.
  static const char* function_library();

 private:
  struct Feed {
    std::uint64_t serial = 0;  // this feed among all the client made (replies find it again)
    bool known = false;        // epoch and next_seq are the cluster's (a sync answered)
    std::string epoch;
    std::uint64_t next_seq = 1;
    bool subscribed = false;   // the subscription is confirmed on the current link
    bool syncing = false;
    bool filling = false;
    bool durable = false;       // followed (a persisted room): known from the store, never skips ahead
    bool report = false;        // a durable feed's first catch-up is to be reported (synced) ...
    std::uint64_t report_at = 0;  // ... once next_seq is past this (where Redis stood at its sync)
    bool reported = false;
    std::uint64_t fill_to = 0;  // the fill in flight goes on up to this seq
    struct Early {
      std::string epoch;
      std::string line;
    };
    std::map<std::uint64_t, Early> early;  // arrived ahead of next_seq
    // The room's members on the other nodes: known once read, then kept by the presence
    // published after, applied in version order.
    bool members_known = false;
    bool members_reading = false;
    std::uint64_t member_version = 0;
    std::map<std::uint64_t, redis_replies::Presence> early_presence;  // ahead of member_version + 1
    std::uint64_t topic_version = 0;  // the membership version of the topic last handed on
    // Topics set by this node's clients, by their version: answered once it is applied here.
    std::vector<std::pair<std::uint64_t, std::function<void()>>> topic_acks;
  };
  struct PendingSay {
    ClusterSay say;
    std::string candidate_epoch;
    std::function<void(ClusterSaid)> done;
    std::uint64_t deadline_ms;  // after a lost reply: retried until then, then refused
    std::uint64_t said_bucket;  // the time bucket of the node's hash its own say id goes in
  };
  // How long Redis may take to answer a command, and a say with a lost reply may be retried:
  // three heartbeats, never less than 2 s (a loop busy for a moment is no frozen Redis).
  std::uint32_t say_wait_ms() const { return std::max<std::uint32_t>(2000, 3 * settings_.heartbeat_ms); }

  void connect();
  void on_link_up(bool command_link);
  void maybe_ready();
  void link_failed(const char* which, RedisCloseReason reason, const std::string& detail);
  void schedule_reconnect();
  void heartbeat();
  void beat(bool connecting);
  void sweep(const std::string& node);
  void register_all();  // this node's members and nicks, as they are now
  void member_change(const char* kind, const std::string& room, const std::string& nick, const std::string& old);
  void on_presence(const std::string& room, redis_replies::Presence presence);
  void read_members(const std::string& room, Feed& feed);
  void drain_presence(const std::string& room, Feed& feed);
  void lose_nicks(const std::vector<std::string>& nicks);
  void release_topic_acks(const std::string& room, std::uint64_t serial);
  // A nick's PX: 3 heartbeats, renewed once a heartbeat.
  std::string nick_lease() const { return std::to_string(settings_.heartbeat_ms * 3); }
  // Says are queued per room and go as one roomd_say_batch (one call and one publish for them
  // all) at the next loop turn, or when the room's batch in flight is answered.
  struct RoomSays {
    std::vector<std::shared_ptr<PendingSay>> queued;
    unsigned batches_in_flight = 0;
  };
  void queue_say(std::shared_ptr<PendingSay> pending);
  void flush_says();
  void send_queued(const std::string& room);
  bool send_batch(const std::string& room, std::vector<std::shared_ptr<PendingSay>> says);  // false: not sent
  void answer_batch(const std::string& room, const std::vector<std::shared_ptr<PendingSay>>& batch,
                    const redisReply* reply);
  void batch_answered(const std::string& room, bool send_next);
  void say_lost(const std::shared_ptr<PendingSay>& pending);
  void on_push(const redisReply& reply);
  void on_message(const std::string& room, redis_replies::Message message);
  void sync(const std::string& room, Feed& feed);
  void durable_synced(const std::string& room, std::uint64_t serial, const RoomState& state);
  void check_durability(const redisReply* reply);
  void fill(const std::string& room, Feed& feed, std::uint64_t upto);
  void drain(const std::string& room, Feed& feed);
  Feed* find_feed(const std::string& room, std::uint64_t serial);
  std::string key(const std::string& room, const char* what) const;
  std::string channel(const std::string& room) const;
  std::string node_channel() const;  // this node's whispers
  std::string random_epoch();

  uv_loop_t* loop_;
  ClusterSettings settings_;
  ClusterSink sink_;
  std::string incarnation_;  // random per process: say ids never repeat across restarts
  std::string self_;         // node_id:incarnation, this node in Redis' registry of nodes
  std::string guest_prefix_;  // "guest-" and a random tag: guest nicks unique across nodes
  std::mt19937_64 random_;
  std::unique_ptr<RedisLink> commands_;
  std::unique_ptr<RedisLink> subscriber_;
  bool command_ready_ = false;
  bool subscriber_ready_ = false;
  bool ready_ = false;
  bool started_ = false;
  bool reconnect_pending_ = false;
  std::uint32_t backoff_ms_ = 0;
  std::string last_failure_;  // logged once until the next success
  std::string durability_;    // what the last check found, logged when it changes
  uv::Timer reconnect_;
  uv::Timer heartbeat_;
  std::unordered_map<std::string, Feed> feeds_;  // watched rooms
  std::uint64_t feed_serial_ = 0;
  std::vector<std::shared_ptr<PendingSay>> retry_;  // says whose reply a lost link took
  std::unordered_map<std::string, RoomSays> says_;  // by room: queued and in flight
  uv::Timer flush_says_;  // fires at the next loop turn while says are queued
  bool flush_scheduled_ = false;
  // What this node has registered, or will at the next connect: its members per clustered room
  // (nicks as shown) and the nicks (folded) its clients hold or are claiming.
  std::unordered_map<std::string, std::set<std::string>> members_;
  std::set<std::string> nicks_;
  std::uint64_t beats_ = 0;
  ClusterStats stats_;
};

}  // namespace roomd
