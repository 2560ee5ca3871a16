// ClusterBus: what the router asks of the cluster when rooms span nodes (docs/cluster.md). Plain
// C++, no Redis and no loop: the cluster layer implements it over Redis, tests with a vector.
//
// A clustered room's order is the cluster's: a say goes to the bus, which gives it the room's
// next seq there; every node, the sender's included, hears the room's messages back from the
// bus in seq order (Router::cluster_deliver) and delivers only those. The router watches a
// room while it has local members, and the bus tells it where the room stands
// (Router::cluster_synced) before the first message.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

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
};

}  // namespace roomd
