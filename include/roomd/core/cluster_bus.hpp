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
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace roomd {

struct ClusterSay {
  std::string room;
  // Unique per say of this process (the session and its count of says): a retry with the
  // same id after a lost reply is answered with the first seq, never published twice.
  std::string said_id;
  // The message's JSON line around its seq, which only the cluster knows: head + seq + tail.
  std::string head;
  std::string tail;
};

struct ClusterSaid {
  bool ok = false;  // false: the cluster is unreachable and the message was not taken
  std::uint64_t seq = 0;
  std::string epoch;
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
  // A persisted room, from now until unwatch: every message after `last_seq` (the store's
  // last, in `epoch`, empty if it holds none yet) is delivered, those missed caught up from
  // the room's stream. Its sync is reported once it has caught up.
  virtual void follow(const std::string& room, std::uint64_t last_seq, const std::string& epoch) = 0;
};

}  // namespace roomd
