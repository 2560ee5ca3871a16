// ClusterBus: what the router asks of the cluster when rooms span nodes (docs/cluster.md). Plain
// C++, no Redis and no loop: the cluster layer implements it over Redis, tests with a vector.
//
// A clustered room's order is the cluster's: a say goes to the bus, which gives it the room's
// next seq there; every node, the sender's included, hears the room's messages back from the
// bus in seq order (Router::cluster_deliver) and delivers only those. The router watches a
// room while it has local members, and the bus tells it where the room stands
// (Router::cluster_synced) before the first message. A persisted room is followed instead,
// from the node's start and from where its store ends, members or not, so that every node
// stores every message of it.
//
// Members and nicks are the cluster's too: the router tells the bus who joins, leaves and
// renames here, and hears the other nodes' members of its watched rooms back
// (Router::cluster_members, Router::cluster_presence); a nick is claimed from the bus before it
// is taken, and a nick the bus could not keep is handed back (Router::cluster_nick_lost).
//
// A clustered room's topic is the cluster's too: set through the bus, heard back on every node
// (the setter's included) in the room's order (Router::cluster_presence), read with the members
// (Router::cluster_topic). A whisper to a nick no client of this node has goes to the node that
// holds the nick (Router::cluster_whisper there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace roomd {

// How long a say's id (the node's or the client's msg_id) is remembered: a retry or a resend
// within it is answered with the first say's seq.
inline constexpr std::uint64_t kSaidWindowMs = 600000;

struct ClusterSay {
  std::string room;
  // Unique per say of this process (the session and its count of says): a retry with the
  // same id after a lost reply is answered with the first seq, never published twice.
  std::string said_id;
  // The message's JSON line around its seq, which only the cluster knows: head + seq + tail.
  std::string head;
  std::string tail;
  // The client's own id for the message, "NICK:MSG_ID" (the nick folded), when it gave one:
  // it replaces said_id, so a resend through any node is answered like a retry.
  std::string client_id;
};

struct ClusterSaid {
  bool ok = false;  // false: the cluster is unreachable and the message was not taken
  std::uint64_t seq = 0;
  std::string epoch;
  bool duplicate = false;  // the id was seen before: seq is the first say's, nothing was published
};

// A change of a room's members on another node, as every node hears it.
struct ClusterPresence {
  enum class Kind { join, leave, nick, topic };
  Kind kind = Kind::join;
  // join, leave: one or more nicks; nick: the old, then the new; topic: who set it
  std::vector<std::string> nicks;
  std::string topic;  // topic: the room's topic now
};

// A clustered room's topic as the cluster holds it (set by a member on some node).
struct ClusterTopic {
  std::string text;
  std::string by;  // the nick that set it
  bool operator==(const ClusterTopic&) const = default;
};

// A whisper to a client of another node, as the sender's node hands it on.
struct ClusterWhisper {
  std::string to;    // the target's nick, folded
  std::string from;  // the sender's nick, as shown
  std::string text;
  std::uint64_t ts = 0;
  // The sender's msg_id, empty for none: a resend of it (sender, target and id) is answered
  // duplicate and not handed on again, through any node (docs/protocol.md).
  std::string msg_id;
  bool operator==(const ClusterWhisper&) const = default;
};

enum class WhisperSent {
  ok,            // handed to the node holding the nick (its client gets it unless it left meanwhile)
  no_such_nick,  // no node holds the nick
  unavailable,   // the cluster could not be asked, or the holder's node does not listen now
  duplicate      // its msg_id was handed on before (within kSaidWindowMs): not handed on again
};

// A page of a room's members on all nodes, by nick (byte order), as `who` pages it.
struct ClusterMemberPage {
  std::vector<std::string> nicks;
  std::size_t count = 0;  // members on all nodes
  bool more = false;      // members follow the last one listed
};

struct ClusterRoomCount {
  std::string room;
  std::size_t members = 0;
  std::optional<std::string> topic;  // the topic the cluster holds for it, if any
};

enum class NickClaim {
  ok,          // this node holds the nick now (and no longer the one it replaced)
  taken,       // a client on another node has it
  unavailable  // the cluster could not be asked, or did not answer
};

class ClusterBus {
 public:
  virtual ~ClusterBus() = default;
  // Whether says can be taken now (Redis reachable, the function loaded, subscribed).
  virtual bool available() const = 0;
  // `done` runs on the loop once the cluster has ordered the message (or could not).
  virtual void say(ClusterSay say, std::function<void(ClusterSaid)> done) = 0;
  // The room has local members (watch) or no longer has (unwatch).
  virtual void watch(const std::string& room) = 0;
  virtual void unwatch(const std::string& room) = 0;

  // Guest nicks are the node's own: they start with this, which no other node uses ("guest-"
  // and a tag per process), and clients may not take nicks starting "guest-".
  virtual std::string guest_prefix() const { return "guest-"; }
  // A client of this node got the guest nick `nick` (folded): registered like a claimed nick
  // (so another node's whisper finds it), without an answer to wait for: nobody else can hold
  // it. Released like a claimed nick. Held from now, so a registration after a reconnect has it.
  virtual void register_guest(const std::string& nick) = 0;
  // Claims `nick` (folded) for a client of this node, releasing `replaced` (folded; empty for
  // none) once it is held. `done` runs on the loop.
  virtual void claim_nick(const std::string& nick, const std::string& replaced, std::function<void(NickClaim)> done) = 0;
  // The client holding `nick` (folded) has let it go (a rename already released it).
  virtual void release_nick(const std::string& nick) = 0;
  // A client of this node joined, left or renamed itself in a clustered room (nicks as shown).
  virtual void member_joined(const std::string& room, const std::string& nick) = 0;
  virtual void member_left(const std::string& room, const std::string& nick) = 0;
  virtual void member_renamed(const std::string& room, const std::string& old, const std::string& nick) = 0;
  // A page of a room's members on all nodes (for rooms this node does not watch); nullopt when
  // the cluster could not answer.
  virtual void who(const std::string& room, const std::optional<std::string>& after, std::size_t limit,
                   std::function<void(std::optional<ClusterMemberPage>)> done) = 0;
  // The member count (and the cluster's topic) of every clustered room with members on some
  // node or a configured room's topic; nullopt when the cluster could not answer.
  virtual void room_counts(std::function<void(std::optional<std::vector<ClusterRoomCount>>)> done) = 0;
  // A persisted room, from now until unwatch: every message after `last_seq` (the store's
  // last, in `epoch`, empty if it holds none yet) is delivered, those missed caught up from
  // the room's stream. Its sync is reported once it has caught up.
  virtual void follow(const std::string& room, std::uint64_t last_seq, const std::string& epoch) = 0;
  // Stores a clustered room's topic, set by `nick` (a member here); `kept`: a configured room's,
  // kept while nobody is in the room (a dynamic room's goes with its last member). `done(true)`
  // once the cluster has it; every node, this one included, then hears it as presence.
  virtual void set_topic(const std::string& room, const std::string& nick, const std::string& topic, bool kept,
                         std::function<void(bool)> done) = 0;
  // Hands a whisper to the node holding `whisper.to`. `done` runs on the loop.
  virtual void whisper(ClusterWhisper whisper, std::function<void(WhisperSent)> done) = 0;
};

}  // namespace roomd
