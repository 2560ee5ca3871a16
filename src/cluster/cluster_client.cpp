// ClusterClient: clustered rooms over Redis (cluster_client.hpp, docs/cluster.md).
#include "roomd/cluster/cluster_client.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdio>

#include "roomd/base/log.hpp"
#include "roomd/cluster/redis_replies.hpp"

namespace roomd {

namespace {
constexpr std::size_t kFillBatch = 1000;       // stream entries per XRANGE of a gap fill

using redis_replies::is_error;
using redis_replies::text_of;
}  // namespace

// One library, two functions. Redis runs a function to the end before anything else, so the
// seq, the stream entry and the publish of a message are one step, and publish order is seq
// order on every subscriber. KEYS are the room's (one hash tag, so a Redis Cluster could hold
// them in one slot).
const char* ClusterClient::function_library() {
  return R"LUA(#!lua name=roomd

-- The room's incarnation: its epoch. A room with no seq key (never used, or Redis lost it)
-- starts again: the caller's candidate epoch, seq 0 and an empty stream, so a seq of the old
-- room is never taken for one of the new.
local function incarnation(keys, candidate)
  local epoch = redis.call('GET', keys[2])
  if redis.call('EXISTS', keys[1]) == 0 then
    epoch = candidate
    redis.call('SET', keys[1], 0)
    redis.call('SET', keys[2], epoch)
    redis.call('DEL', keys[3])
  elseif not epoch then
    epoch = candidate
    redis.call('SET', keys[2], epoch)
  end
  return epoch
end

-- KEYS: seq, epoch, stream, said. ARGV: channel, maxlen, head, tail, candidate epoch, said ttl ms.
-- A say id seen before in this incarnation answers its first seq again, flagged, and publishes
-- nothing (one remembered from a room Redis lost is no answer: its seq is another room's).
local function say(keys, args)
  local epoch = incarnation(keys, args[5])
  local said = redis.call('GET', keys[4])
  if said then
    local first, first_epoch = string.match(said, '^(%d+) (%S+)$')
    if first and first_epoch == epoch then return {tonumber(first), epoch, 1} end
  end
  local seq = redis.call('INCR', keys[1])
  local line = args[3] .. seq .. args[4]
  redis.call('XADD', keys[3], 'MAXLEN', '~', args[2], seq .. '-0', 'm', line)
  redis.call('PUBLISH', args[1], seq .. ' ' .. epoch .. ' ' .. line)
  redis.call('SET', keys[4], seq .. ' ' .. epoch, 'PX', args[6])
  return {seq, epoch}
end

-- KEYS: seq, epoch, stream. ARGV: candidate epoch, how many recent messages.
local function state(keys, args)
  local epoch = incarnation(keys, args[1])
  local seq = tonumber(redis.call('GET', keys[1]))
  local recent = redis.call('XREVRANGE', keys[3], '+', '-', 'COUNT', args[2])
  local lines = {}
  for i = #recent, 1, -1 do lines[#lines + 1] = recent[i][2][2] end
  return {seq, epoch, lines}
end

redis.register_function('roomd_say', say)
redis.register_function('roomd_state', state)
)LUA";
}

ClusterClient::ClusterClient(uv_loop_t* loop, ClusterSettings settings, ClusterSink sink)
    : loop_(loop),
      settings_(std::move(settings)),
      sink_(std::move(sink)),
      random_(std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32) ^ uv_hrtime()),
      reconnect_(loop, [this] { connect(); }),
      heartbeat_(loop, [this] { heartbeat(); }) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(random_()));
  incarnation_ = text;
}

ClusterClient::~ClusterClient() = default;

std::string ClusterClient::random_epoch() {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(random_()));
  return text;
}

std::string ClusterClient::key(const std::string& room, const char* what) const {
  return "roomd:{" + room + "}:" + what;
}

std::string ClusterClient::channel(const std::string& room) const { return "roomd:{" + room + "}"; }

void ClusterClient::start(const std::string& default_node_id) {
  if (std::exchange(started_, true)) return;
  if (settings_.node_id.empty()) settings_.node_id = default_node_id;
  // Redis must answer a command within three heartbeats (never less than 2 s, so a loop busy
  // for a moment is not taken for a frozen Redis).
  const std::uint32_t deadline = std::max<std::uint32_t>(2000, 3 * settings_.heartbeat_ms);
  RedisLinkSettings link{.address = settings_.redis, .connect_timeout_ms = deadline, .command_timeout_ms = deadline};
  commands_ = std::make_unique<RedisLink>(
      loop_, link, [] {}, [this](RedisCloseReason r, const std::string& d) { link_failed("command", r, d); });
  subscriber_ = std::make_unique<RedisLink>(
      loop_, link, [] {}, [this](RedisCloseReason r, const std::string& d) { link_failed("subscriber", r, d); });
  subscriber_->set_push([this](const redisReply& reply) { on_push(reply); });
  heartbeat_.start(settings_.heartbeat_ms, settings_.heartbeat_ms);
  connect();
}

// Both links at once; each is ready once its first commands answered (AUTH, and the function
// library on the command link). Commands queue while the socket connects.
void ClusterClient::connect() {
  reconnect_pending_ = false;
  commands_->connect();
  subscriber_->connect();
  auto init_failed = [this](const char* which, const char* what, const redisReply* r) {
    if (!r) return;  // the link closed: its own notice says why
    link_failed(which, RedisCloseReason::owner, std::string(what) + ": " + text_of(r));
  };
  if (!settings_.password.empty()) {
    commands_->command({"AUTH", settings_.password}, [init_failed](const redisReply* r) {
      if (!r || is_error(r)) init_failed("command", "AUTH", r);
    });
    subscriber_->command({"AUTH", settings_.password}, [init_failed](const redisReply* r) {
      if (!r || is_error(r)) init_failed("subscriber", "AUTH", r);
    });
  }
  // Named, so an operator's CLIENT LIST shows whose connection is whose.
  commands_->command({"CLIENT", "SETNAME", "roomd:" + settings_.node_id + ":commands"}, {});
  subscriber_->command({"CLIENT", "SETNAME", "roomd:" + settings_.node_id + ":subscriber"}, {});
  // At every connect: a Redis restarted without persistence has forgotten it.
  commands_->command({"FUNCTION", "LOAD", "REPLACE", function_library()}, [this, init_failed](const redisReply* r) {
    if (!r || is_error(r)) return init_failed("command", "FUNCTION LOAD", r);
    command_ready_ = true;
    maybe_ready();
  });
  subscriber_->command({"PING"}, [this, init_failed](const redisReply* r) {
    if (!r || is_error(r)) return init_failed("subscriber", "PING", r);
    subscriber_ready_ = true;
    maybe_ready();
  });
}

void ClusterClient::maybe_ready() {
  if (ready_ || !command_ready_ || !subscriber_ready_) return;
  ready_ = true;
  backoff_ms_ = 0;
  ++stats_.connects;
  last_failure_.clear();
  log::notice("cluster: connected to Redis at " + settings_.redis.to_string() + " as node " + settings_.node_id +
              "; " + std::to_string(feeds_.size()) + " rooms to follow");
  // Says whose reply a lost link took go again first, with their ids: Redis answers those it
  // already ordered with their seq.
  auto again = std::exchange(retry_, {});
  for (auto& pending : again) {
    ++stats_.says_retried;
    send_say(std::move(pending));
  }
  for (auto& [room, feed] : feeds_) {
    feed.subscribed = false;
    subscriber_->subscribe(channel(room));
  }
}

void ClusterClient::link_failed(const char* which, RedisCloseReason reason, const std::string& detail) {
  ++stats_.link_failures;
  std::string failure = std::string(which) + " link " + std::string(to_string(reason)) + ": " + detail;
  if (failure != last_failure_) {
    // Once per kind of failure until the next success: a Redis that stays down is one line.
    log::warning("cluster: Redis at " + settings_.redis.to_string() + ": " + failure +
                 (ready_ ? "; says into clustered rooms are refused until it is back" : "") + "; reconnecting");
    last_failure_ = failure;
  }
  const bool was_ready = ready_;
  ready_ = command_ready_ = subscriber_ready_ = false;
  for (auto& [room, feed] : feeds_) {
    feed.subscribed = feed.syncing = feed.filling = false;
    feed.fill_to = 0;
    feed.early.clear();  // read again from the stream after the reconnect
  }
  // Either link failing ends both: the pair is one session with Redis. Closing runs the
  // pending replies (nullptr), which may add says to retry_.
  commands_->close();
  subscriber_->close();
  if (was_ready && sink_.lost) sink_.lost();
  if (!reconnect_pending_) schedule_reconnect();
}

void ClusterClient::schedule_reconnect() {
  reconnect_pending_ = true;
  backoff_ms_ = backoff_ms_ == 0 ? settings_.backoff_min_ms : std::min(backoff_ms_ * 2, settings_.backoff_max_ms);
  // Jitter: nodes that lost Redis together do not all come back in the same millisecond.
  std::uniform_int_distribution<std::uint32_t> jitter(0, backoff_ms_ / 2);
  reconnect_.start(backoff_ms_ / 2 + jitter(random_), 0);
}

void ClusterClient::heartbeat() {
  // The link's command deadline turns a PING with no answer into a timeout (a frozen Redis).
  if (ready_) commands_->command({"PING"}, {});
  const std::uint64_t now = uv_now(loop_);
  std::vector<std::shared_ptr<PendingSay>> expired;
  std::erase_if(retry_, [&](const std::shared_ptr<PendingSay>& p) {
    if (p->deadline_ms > now) return false;
    expired.push_back(p);
    return true;
  });
  for (auto& p : expired) {
    ++stats_.says_refused;
    p->done({});
  }
}

// ---- says ----------------------------------------------------------------------------------

void ClusterClient::say(ClusterSay say, std::function<void(ClusterSaid)> done) {
  if (!ready_) {
    ++stats_.says_refused;
    return done({});
  }
  auto pending = std::make_shared<PendingSay>(PendingSay{std::move(say), random_epoch(), std::move(done), 0});
  send_say(std::move(pending));
}

void ClusterClient::send_say(std::shared_ptr<PendingSay> p) {
  const ClusterSay& s = p->say;
  auto lost = [this](const std::shared_ptr<PendingSay>& pending) {
    // The reply went with the link: the message may or may not be ordered. It goes again with
    // its id after the reconnect, for as long as a say may wait.
    const std::uint64_t now = uv_now(loop_);
    if (pending->deadline_ms == 0) pending->deadline_ms = now + std::max<std::uint32_t>(2000, 3 * settings_.heartbeat_ms);
    if (now < pending->deadline_ms) return retry_.push_back(pending);
    ++stats_.says_refused;
    pending->done({});
  };
  // The client's msg_id when it gave one (a resend through any node is then a repeat), else
  // the node's own id for the say; prefixed so neither can be taken for the other.
  std::string said_key = s.client_id.empty() ? "said:n:" + settings_.node_id + ":" + incarnation_ + ":" + s.said_id
                                             : "said:c:" + s.client_id;
  bool sent = commands_->command(
      {"FCALL", "roomd_say", "4", key(s.room, "seq"), key(s.room, "epoch"), key(s.room, "log"), key(s.room, said_key.c_str()),
       channel(s.room), std::to_string(settings_.max_messages_per_room), s.head, s.tail, p->candidate_epoch,
       std::to_string(kSaidWindowMs)},
      [this, p, lost](const redisReply* r) {
        if (!r) return lost(p);
        auto said = redis_replies::read_say(r);
        if (!said) {
          log::warning("cluster: roomd_say in '" + p->say.room + "' failed: " + said.error);
          ++stats_.says_refused;
          return p->done({});
        }
        ++stats_.says;
        p->done({true, said.value->seq, std::move(said.value->epoch), said.value->duplicate});
      });
  if (!sent) lost(p);
}

// ---- rooms ---------------------------------------------------------------------------------

void ClusterClient::watch(const std::string& room) {
  if (feeds_.contains(room)) return;
  Feed& feed = feeds_[room];
  feed.serial = ++feed_serial_;
  if (ready_) subscriber_->subscribe(channel(room));
}

void ClusterClient::unwatch(const std::string& room) {
  if (feeds_.erase(room) && ready_) subscriber_->unsubscribe(channel(room));
}

ClusterClient::Feed* ClusterClient::find_feed(const std::string& room, std::uint64_t serial) {
  auto it = feeds_.find(room);
  return it != feeds_.end() && it->second.serial == serial ? &it->second : nullptr;
}

void ClusterClient::on_push(const redisReply& reply) {
  auto push = redis_replies::read_push(&reply);
  if (!push) return;
  if (push->kind == redis_replies::Push::Kind::message) return on_message(push->room, std::move(push->message));
  auto it = feeds_.find(push->room);
  if (it == feeds_.end() || it->second.subscribed) return;
  it->second.subscribed = true;
  // Subscribed first, then read where the room stands: nothing published in between is lost
  // (it is in the state, or it arrives, or both; duplicates are dropped by seq).
  sync(push->room, it->second);
}

void ClusterClient::on_message(const std::string& room, redis_replies::Message message) {
  auto it = feeds_.find(room);
  if (it == feeds_.end()) return;
  Feed& feed = it->second;
  if (feed.known && message.seq < feed.next_seq && message.epoch == feed.epoch) return;  // had it already
  const bool other_epoch = feed.known && message.epoch != feed.epoch;
  feed.early[message.seq] = {std::move(message.epoch), std::move(message.line)};
  // A message of another incarnation: Redis lost the room while we were connected (a flush,
  // a failover). Read where it stands now.
  if (other_epoch && !feed.syncing) return sync(room, feed);
  drain(room, feed);
}

void ClusterClient::sync(const std::string& room, Feed& feed) {
  feed.syncing = true;
  const std::uint64_t serial = feed.serial;
  commands_->command(
      {"FCALL", "roomd_state", "3", key(room, "seq"), key(room, "epoch"), key(room, "log"), random_epoch(),
       std::to_string(settings_.recent)},
      [this, room, serial](const redisReply* r) {
        Feed* f = find_feed(room, serial);
        if (!f) return;
        f->syncing = false;
        if (!r) return;  // the link went; the reconnect syncs again
        auto read = redis_replies::read_state(r);
        if (!read) return link_failed("command", RedisCloseReason::owner, "roomd_state: " + read.error);
        RoomState& state = *read.value;
        const std::uint64_t seq = state.last_seq;
        const std::string epoch = state.epoch;
        if (!f->known) {
          // New to this node: the room starts here, from Redis; the joins waiting for it get
          // its newest messages as their history.
          f->known = true;
          f->epoch = epoch;
          f->next_seq = seq + 1;
          if (sink_.synced) sink_.synced(room, state);
        } else if (epoch != f->epoch) {
          // Redis lost the room (a restart without persistence, a flush): the members here know
          // the old incarnation, so the new one's messages are delivered to them, the newest
          // `recent` of them, read from the stream in order.
          const std::uint64_t start = seq > settings_.recent ? seq - settings_.recent : 0;
          log::warning("cluster: '" + room + "' started again in Redis (epoch " + f->epoch + " -> " + epoch + ")");
          f->epoch = epoch;
          f->next_seq = start + 1;
          if (sink_.synced) sink_.synced(room, RoomState{start, epoch, {}});
          if (!(f = find_feed(room, serial))) return;
          return fill(room, *f, seq);
        } else if (seq >= f->next_seq) {
          // Missed while the links were down: read them from the stream, delivered in order.
          return fill(room, *f, seq);
        }
        if ((f = find_feed(room, serial))) drain(room, *f);
      });
}

void ClusterClient::drain(const std::string& room, Feed& feed) {
  if (!feed.known || feed.syncing) return;
  while (!feed.early.empty()) {
    auto it = feed.early.begin();
    if (it->second.epoch != feed.epoch || it->first < feed.next_seq) {
      feed.early.erase(it);
      continue;
    }
    if (it->first > feed.next_seq) return fill(room, feed, it->first - 1);  // a gap: read it first
    std::string line = std::move(it->second.line);
    const std::uint64_t seq = it->first;
    feed.early.erase(it);
    feed.next_seq = seq + 1;
    ++stats_.delivered;
    sink_.deliver(room, seq, feed.epoch, std::move(line));
  }
}

// Reads seqs next_seq..upto from the room's stream and delivers them, then whatever waited.
void ClusterClient::fill(const std::string& room, Feed& feed, std::uint64_t upto) {
  feed.fill_to = std::max(feed.fill_to, upto);
  if (feed.filling) return;
  if (feed.next_seq > feed.fill_to) return drain(room, feed);  // nothing missing after all
  feed.filling = true;
  ++stats_.gap_fills;
  log::info("cluster: '" + room + "' reading seqs " + std::to_string(feed.next_seq) + ".." + std::to_string(feed.fill_to) +
            " from its stream");
  const std::uint64_t serial = feed.serial;
  commands_->command(
      {"XRANGE", key(room, "log"), std::to_string(feed.next_seq) + "-0", std::to_string(feed.fill_to) + "-0", "COUNT",
       std::to_string(kFillBatch)},
      [this, room, serial](const redisReply* r) {
        Feed* f = find_feed(room, serial);
        if (!f) return;
        f->filling = false;
        if (!r) return;
        auto read = redis_replies::read_range(r);
        if (!read) return link_failed("command", RedisCloseReason::owner, "XRANGE: " + read.error);
        for (auto& entry : read.value->entries) {
          if (entry.seq < f->next_seq) continue;
          if (entry.seq > f->next_seq) stats_.skipped += entry.seq - f->next_seq;  // trimmed away: a jump
          f->next_seq = entry.seq + 1;
          ++stats_.delivered;
          sink_.deliver(room, entry.seq, f->epoch, std::move(entry.line));
          if (!(f = find_feed(room, serial))) return;
        }
        if (f->next_seq <= f->fill_to) {
          if (read.value->held == kFillBatch) return fill(room, *f, f->fill_to);  // more to read
          // The stream no longer has them (MAXLEN): the room goes on after the hole.
          log::warning("cluster: '" + room + "' messages " + std::to_string(f->next_seq) + ".." +
                       std::to_string(f->fill_to) + " are no longer in Redis; skipped");
          stats_.skipped += f->fill_to + 1 - f->next_seq;
          f->next_seq = f->fill_to + 1;
        }
        drain(room, *f);
      });
}

}  // namespace roomd
