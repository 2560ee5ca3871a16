// ClusterClient: clustered rooms over Redis (cluster_client.hpp, docs/cluster.md).
#include "roomd/cluster/cluster_client.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdio>

#include "roomd/base/log.hpp"
#include "roomd/base/names.hpp"
#include "roomd/cluster/redis_replies.hpp"

namespace roomd {

namespace {
constexpr std::size_t kFillBatch = 1000;       // stream entries per XRANGE of a gap fill
// Says of one room per roomd_say_batch: one call holds Redis, which runs nothing else
// meanwhile, for a bounded time.
constexpr std::size_t kSayBatch = 256;
// Batches of one room in flight from this node; the says that come meanwhile wait for one.
constexpr unsigned kBatchesInFlight = 1;

using redis_replies::is_error;
using redis_replies::text_of;
}  // namespace

// One library. Redis runs a function to the end before anything else, so the seq, the stream
// entry and the publish of a message are one step, and publish order is seq order on every
// subscriber; so are a member change, its version and its publish, and a sweep of a node.
// A say's and a state's KEYS are the room's (one hash tag); the member and nick functions name
// keys of several rooms and nodes, so roomd needs one Redis (with replicas if wanted), not a
// Redis Cluster (docs/cluster.md).
const char* ClusterClient::function_library() {
  return R"LUA(#!lua name=roomd

-- A seq as digits: Lua's own number-to-text (%.14g) writes 1e+14 and above in exponent form.
-- Seqs are exact up to 2^53 (Lua numbers are doubles).
local function seq_text(seq)
  return string.format('%d', seq)
end

-- The room's incarnation: its epoch. A room with no seq key (never used, or Redis lost it)
-- starts again: the caller's candidate epoch, an empty stream, and seq from the caller's floor
-- (the highest seq a node's store holds of a persisted room; 0 otherwise), so a seq a node
-- has stored is never given to another message. A seq below a caller's floor means Redis came
-- back with less than it had: the room starts again there too, under a new epoch, since its
-- seqs above the old value may have gone to other messages already. base: where the
-- incarnation began.
local function incarnation(keys, candidate, floor)
  local epoch = redis.call('GET', keys[2])
  local seq = tonumber(redis.call('GET', keys[1]))
  if not seq or floor > seq then
    if not seq then redis.call('DEL', keys[3]) end
    epoch = candidate
    redis.call('SET', keys[1], seq_text(floor))
    redis.call('SET', keys[2], epoch)
    redis.call('SET', keys[4], seq_text(floor))
  elseif not epoch then
    epoch = candidate
    redis.call('SET', keys[2], epoch)
  end
  return epoch
end

-- KEYS: seq, epoch, stream, base, said. ARGV: channel, maxlen, head, tail, candidate epoch,
-- said ttl ms, floor. A say id seen before in this incarnation answers its first seq again,
-- flagged, and publishes nothing (one remembered from a room Redis lost is no answer: its seq
-- is another room's).
local function say(keys, args)
  local epoch = incarnation(keys, args[5], tonumber(args[7]) or 0)
  local said = redis.call('GET', keys[5])
  if said then
    local first, first_epoch = string.match(said, '^(%d+) (%S+)$')
    if first and first_epoch == epoch then return {tonumber(first), epoch, 1} end
  end
  local seq = redis.call('INCR', keys[1])
  local id = seq_text(seq)
  local line = args[3] .. id .. args[4]
  redis.call('XADD', keys[3], 'MAXLEN', '~', args[2], id .. '-0', 'm', line)
  redis.call('PUBLISH', args[1], id .. ' ' .. epoch .. ' ' .. line)
  redis.call('SET', keys[5], id .. ' ' .. epoch, 'PX', args[6])
  return {seq, epoch}
end

-- A node's queued says of one room in one call (docs/cluster.md, "Batched says"): the
-- incarnation once, the say ids read in one MGET and one HMGET, the seqs in one INCRBY, then
-- per new message its stream entry, and ONE publish for them all: "b EPOCH\n" and per message
-- "SEQ LEN LINE" (LEN: the line's bytes), or a lone message as roomd_say publishes it.
-- A say's id is kept where its KEY says: a client's msg_id as a string key of its own (a
-- resend may come through any node, for ARGV[4] ms); a node's own id as a FIELD of that node's
-- hash for the time its says may be retried (ARGV[6] ms after its last write), one HSET a batch.
-- KEYS: seq, epoch, stream, base, then per say its id's key. ARGV: channel, maxlen, candidate
-- epoch, client id ttl ms, floor, node hash ttl ms, then per say head, tail and its field in
-- the node's hash ('' for a client's id). Returns {epoch, {seq, flag, ...}}: a pair per say,
-- flag 1 for an id seen before (seq: its first seq), in this batch too.
local function say_batch(keys, args)
  local epoch = incarnation(keys, args[3], tonumber(args[5]) or 0)
  local n = #keys - 4
  local said, strings, string_say, hashes = {}, {}, {}, {}
  for i = 1, n do
    if args[6 + 3 * i] == '' then
      strings[#strings + 1] = keys[4 + i]
      string_say[#strings] = i
    else
      local says = hashes[keys[4 + i]]
      if not says then
        says = {}
        hashes[keys[4 + i]] = says
      end
      says[#says + 1] = i
    end
  end
  if #strings > 0 then
    local got = redis.call('MGET', unpack(strings))
    for j = 1, #strings do said[string_say[j]] = got[j] end
  end
  for hash, says in pairs(hashes) do
    local fields = {}
    for j = 1, #says do fields[j] = args[6 + 3 * says[j]] end
    local got = redis.call('HMGET', hash, unpack(fields))
    for j = 1, #says do said[says[j]] = got[j] end
  end
  local first, new, fresh = {}, 0, {}
  for i = 1, n do
    if said[i] then
      local seq, seq_epoch = string.match(said[i], '^(%d+) (%S+)$')
      if seq and seq_epoch == epoch then first[i] = seq end
    end
    local id = keys[4 + i] .. '\0' .. args[6 + 3 * i]
    if not first[i] and not fresh[id] then
      fresh[id] = true
      new = new + 1
    end
  end
  local seq = 0
  if new > 0 then seq = redis.call('INCRBY', keys[1], new) - new end
  local answers, entries, given, hash_writes = {}, {}, {}, {}
  local last_id, last_line
  for i = 1, n do
    local id = keys[4 + i] .. '\0' .. args[6 + 3 * i]
    local repeated = first[i] or given[id]
    if repeated then
      answers[#answers + 1] = tonumber(repeated)
      answers[#answers + 1] = 1
    else
      seq = seq + 1
      local text = seq_text(seq)
      local line = args[4 + 3 * i] .. text .. args[5 + 3 * i]
      redis.call('XADD', keys[3], 'MAXLEN', '~', args[2], text .. '-0', 'm', line)
      if args[6 + 3 * i] == '' then
        redis.call('SET', keys[4 + i], text .. ' ' .. epoch, 'PX', args[4])
      else
        local writes = hash_writes[keys[4 + i]]
        if not writes then
          writes = {}
          hash_writes[keys[4 + i]] = writes
        end
        writes[#writes + 1] = args[6 + 3 * i]
        writes[#writes + 1] = text .. ' ' .. epoch
      end
      given[id] = text
      entries[#entries + 1] = text .. ' ' .. #line .. ' ' .. line
      last_id, last_line = text, line
      answers[#answers + 1] = seq
      answers[#answers + 1] = 0
    end
  end
  for hash, writes in pairs(hash_writes) do
    redis.call('HSET', hash, unpack(writes))
    redis.call('PEXPIRE', hash, args[6])
  end
  if #entries == 1 then
    redis.call('PUBLISH', args[1], last_id .. ' ' .. epoch .. ' ' .. last_line)
  elseif #entries > 1 then
    redis.call('PUBLISH', args[1], 'b ' .. epoch .. '\n' .. table.concat(entries))
  end
  return {epoch, answers}
end

-- KEYS: seq, epoch, stream, base. ARGV: candidate epoch, how many recent messages, floor.
local function state(keys, args)
  local epoch = incarnation(keys, args[1], tonumber(args[3]) or 0)
  local seq = tonumber(redis.call('GET', keys[1]))
  local recent = redis.call('XREVRANGE', keys[3], '+', '-', 'COUNT', args[2])
  local lines = {}
  for i = #recent, 1, -1 do lines[#lines + 1] = recent[i][2][2] end
  return {seq, epoch, lines, tonumber(redis.call('GET', keys[4])) or 0}
end

-- ---- members, presence and nicks ---------------------------------------------------------
-- A NODE is a node id and its process' incarnation: a node restarted under the same id is
-- another node, and the old one's members are swept. The keys (named here, not passed as KEYS:
-- roomd runs on one Redis, not a Redis Cluster):
--   roomd:nodes             zset    NODE -> the end of its lease (Redis' clock, ms)
--   roomd:node:NODE:rooms   set     rooms the node has members in
--   roomd:node:NODE:nicks   set     nicks (folded) the node's clients hold
--   roomd:nick:NICK         string  the NODE holding the nick (folded), PX a lease
--   roomd:rooms             set     rooms with members on some node
--   roomd:{ROOM}:who        zset    the room's members, score 0: byte order, for pages
--   roomd:{ROOM}:on:NODE    set     the room's members on that node
--   roomd:{ROOM}:nodes      set     nodes with members in the room
--   roomd:{ROOM}:mv         the room's membership version (topic changes count too)
--   roomd:{ROOM}:topic      hash    text, by (the nick that set it), kept ('1': a configured
--                                   room's, kept while nobody is in it; else gone with the
--                                   room's last member, as a dynamic room is)
--   roomd:topics            set     rooms with a kept topic
--   roomd:node:NODE         channel the node's whispers
--   roomd:whispered:ID      string  a whisper's id handed on (FROM:TO:MSG_ID), PX its window

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function rkey(room, what) return 'roomd:{' .. room .. '}:' .. what end
local function nkey(node, what) return 'roomd:node:' .. node .. ':' .. what end

-- Every change of a room's members is published on its channel, next to its messages:
-- "p VERSION NODE join|leave NICK..." or "p VERSION NODE nick OLD NEW", the version one more
-- each time, so nodes apply them in order and read the members again after a gap.
local function announce(room, node, what)
  local version = redis.call('INCR', rkey(room, 'mv'))
  redis.call('PUBLISH', 'roomd:{' .. room .. '}', 'p ' .. version .. ' ' .. node .. ' ' .. what)
  return version
end

local function add_member(room, node, nick)
  if redis.call('SADD', rkey(room, 'on:' .. node), nick) == 0 then return false end
  redis.call('ZADD', rkey(room, 'who'), 0, nick)
  redis.call('SADD', rkey(room, 'nodes'), node)
  redis.call('SADD', nkey(node, 'rooms'), room)
  redis.call('SADD', 'roomd:rooms', room)
  return true
end

local function remove_member(room, node, nick)
  if redis.call('SREM', rkey(room, 'on:' .. node), nick) == 0 then return false end
  redis.call('ZREM', rkey(room, 'who'), nick)
  return true
end

-- After removals: a node with no member left in the room, a room with none left anywhere.
local function tidy(room, node)
  if redis.call('EXISTS', rkey(room, 'on:' .. node)) == 0 then
    redis.call('SREM', rkey(room, 'nodes'), node)
    redis.call('SREM', nkey(node, 'rooms'), room)
  end
  if redis.call('EXISTS', rkey(room, 'who')) == 0 then
    redis.call('SREM', 'roomd:rooms', room)
    if redis.call('HGET', rkey(room, 'topic'), 'kept') ~= '1' then redis.call('DEL', rkey(room, 'topic')) end
  end
end

-- Every member the node has in the room leaves it, as one published change.
local function empty_out(room, node)
  local nicks = redis.call('SMEMBERS', rkey(room, 'on:' .. node))
  for _, nick in ipairs(nicks) do redis.call('ZREM', rkey(room, 'who'), nick) end
  redis.call('DEL', rkey(room, 'on:' .. node))
  tidy(room, node)
  if #nicks > 0 then announce(room, node, 'leave ' .. table.concat(nicks, ' ')) end
  return #nicks
end

-- ARGV: join|leave|nick, room, node, nick, the old nick (nick). A change already made (a
-- registration again) publishes nothing.
local function member(keys, args)
  local kind, room, node, nick = args[1], args[2], args[3], args[4]
  if kind == 'join' then
    if add_member(room, node, nick) then announce(room, node, 'join ' .. nick) end
  elseif kind == 'leave' then
    if remove_member(room, node, nick) then
      tidy(room, node)
      announce(room, node, 'leave ' .. nick)
    end
  elseif kind == 'nick' then
    if remove_member(room, node, args[5]) then
      add_member(room, node, nick)
      announce(room, node, 'nick ' .. args[5] .. ' ' .. nick)
    elseif add_member(room, node, nick) then
      announce(room, node, 'join ' .. nick)
    end
  end
  return 1
end

-- ARGV: node, then per room ROOM, COUNT and COUNT nicks. The node's members are exactly these
-- (after a reconnect, or when it found itself swept): the differences are published as
-- leaves and joins, and rooms not listed are left.
local function enter(keys, args)
  local node = args[1]
  local listed = {}
  local i = 2
  while i + 1 <= #args do
    local room, count = args[i], tonumber(args[i + 1])
    local want = {}
    for k = i + 2, i + 1 + count do want[args[k]] = true end
    listed[room] = true
    local gone, came = {}, {}
    for _, nick in ipairs(redis.call('SMEMBERS', rkey(room, 'on:' .. node))) do
      if not want[nick] then
        remove_member(room, node, nick)
        gone[#gone + 1] = nick
      end
    end
    for k = i + 2, i + 1 + count do
      if add_member(room, node, args[k]) then came[#came + 1] = args[k] end
    end
    tidy(room, node)
    if #gone > 0 then announce(room, node, 'leave ' .. table.concat(gone, ' ')) end
    if #came > 0 then announce(room, node, 'join ' .. table.concat(came, ' ')) end
    i = i + 2 + count
  end
  for _, room in ipairs(redis.call('SMEMBERS', nkey(node, 'rooms'))) do
    if not listed[room] then empty_out(room, node) end
  end
  return 1
end

-- ARGV: room, node, nick, text, kept ('1' or '0'). The room's topic, published as a change of
-- the room ("p VERSION NODE topic NICK TEXT") so every node applies it in the room's order.
-- Returns that version.
local function topic(keys, args)
  local room = args[1]
  redis.call('HSET', rkey(room, 'topic'), 'text', args[4], 'by', args[3], 'kept', args[5])
  if args[5] == '1' then redis.call('SADD', 'roomd:topics', room) else redis.call('SREM', 'roomd:topics', room) end
  return announce(room, args[2], 'topic ' .. args[3] .. ' ' .. args[4])
end

-- ARGV: nick (folded), payload, the whisper's id ('' for none: "FROM:TO:MSG_ID", nicks
-- folded), how long ids are remembered (ms). The node holding the nick gets the payload on its
-- channel. 1: handed to it; 0: nobody holds the nick; -1: its node does not listen now
-- (reconnecting, or dead and not swept yet); 2: that id was handed on before, nothing done.
local function whisper(keys, args)
  local id = args[3] or ''
  if id ~= '' and redis.call('EXISTS', 'roomd:whispered:' .. id) == 1 then return 2 end
  local node = redis.call('GET', 'roomd:nick:' .. args[1])
  if not node then return 0 end
  if redis.call('PUBLISH', 'roomd:node:' .. node, args[2]) == 0 then return -1 end
  if id ~= '' then redis.call('SET', 'roomd:whispered:' .. id, '1', 'PX', args[4]) end
  return 1
end

-- SET NX PX: the nick is the node's if nobody holds it; a nick the node holds already gets its
-- lease again.
local function hold_nick(node, nick, lease)
  local key = 'roomd:nick:' .. nick
  if not redis.call('SET', key, node, 'NX', 'PX', lease) then
    if redis.call('GET', key) ~= node then return false end
    redis.call('PEXPIRE', key, lease)
  end
  redis.call('SADD', nkey(node, 'nicks'), nick)
  return true
end

-- Compare and delete: only the holder frees a nick.
local function free_nick(node, nick)
  local key = 'roomd:nick:' .. nick
  if redis.call('GET', key) == node then redis.call('DEL', key) end
  redis.call('SREM', nkey(node, 'nicks'), nick)
end

-- ARGV: node, lease ms, nick, the nick it replaces ('' for none); nicks folded. 1: the node
-- holds the nick (and no longer the one replaced), 0: another node has it.
local function claim(keys, args)
  if not hold_nick(args[1], args[3], args[2]) then return 0 end
  if args[4] ~= '' and args[4] ~= args[3] then free_nick(args[1], args[4]) end
  return 1
end

-- ARGV: node, nick (folded).
local function release(keys, args)
  free_nick(args[1], args[2])
  return 1
end

-- ARGV: node, lease ms, nick...: the node holds exactly these nicks (after a reconnect).
-- Returns those another node holds now.
local function reclaim(keys, args)
  local node, lease = args[1], args[2]
  local want = {}
  for i = 3, #args do want[args[i]] = true end
  for _, nick in ipairs(redis.call('SMEMBERS', nkey(node, 'nicks'))) do
    if not want[nick] then free_nick(node, nick) end
  end
  local lost = {}
  for i = 3, #args do
    if not hold_nick(node, args[i], lease) then lost[#lost + 1] = args[i] end
  end
  return lost
end

-- ARGV: node, lease ms, the nicks' lease ms ('0': not this time). The node's lease goes on,
-- and its nicks' (a nick whose key expired is held again if nobody took it). Returns {1 if the
-- node was not registered (new, or swept), the nicks another node holds now, up to 16 nodes
-- whose lease has run out}.
local function beat(keys, args)
  local node, lease, nick_lease = args[1], args[2], args[3]
  local now = now_ms()
  local fresh = redis.call('ZADD', 'roomd:nodes', string.format('%d', now + tonumber(lease)), node)
  local lost = {}
  if nick_lease ~= '0' then
    for _, nick in ipairs(redis.call('SMEMBERS', nkey(node, 'nicks'))) do
      if not hold_nick(node, nick, nick_lease) then
        redis.call('SREM', nkey(node, 'nicks'), nick)
        lost[#lost + 1] = nick
      end
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', 'roomd:nodes', '-inf', string.format('(%d', now), 'LIMIT', 0, 16)
  return {fresh, lost, expired}
end

-- ARGV: node. A node whose lease ran out (killed, frozen, cut off): its members leave their
-- rooms and its nicks are free. Done once: a node swept already, or beating again, is left
-- alone (-1).
local function sweep(keys, args)
  local node = args[1]
  local lease_end = redis.call('ZSCORE', 'roomd:nodes', node)
  if not lease_end or tonumber(lease_end) >= now_ms() then return -1 end
  local removed = 0
  for _, room in ipairs(redis.call('SMEMBERS', nkey(node, 'rooms'))) do removed = removed + empty_out(room, node) end
  for _, nick in ipairs(redis.call('SMEMBERS', nkey(node, 'nicks'))) do free_nick(node, nick) end
  redis.call('DEL', nkey(node, 'rooms'), nkey(node, 'nicks'))
  redis.call('ZREM', 'roomd:nodes', node)
  return removed
end

-- ARGV: room. {version, {{node, nick...}...}}: the members by node, at that version.
local function members(keys, args)
  local room = args[1]
  local by_node = {}
  for _, node in ipairs(redis.call('SMEMBERS', rkey(room, 'nodes'))) do
    local entry = redis.call('SMEMBERS', rkey(room, 'on:' .. node))
    table.insert(entry, 1, node)
    by_node[#by_node + 1] = entry
  end
  return {tonumber(redis.call('GET', rkey(room, 'mv')) or '0'), by_node}
end

-- ARGV: room. {version, text, by}: the room's topic (false, false: none stored) at that
-- membership version. A function of its own, read after the members: roomd_members' reply
-- keeps the shape a node of the previous version reads.
local function topic_of(keys, args)
  local room = args[1]
  local t = redis.call('HMGET', rkey(room, 'topic'), 'text', 'by')
  return {tonumber(redis.call('GET', rkey(room, 'mv')) or '0'), t[1], t[2]}
end

-- ARGV: room, 1 if a page starts after a nick (else 0), that nick, limit. {count, {nick...}, more}
local function who(keys, args)
  local key = rkey(args[1], 'who')
  local from = '-'
  if args[2] == '1' then from = '(' .. args[3] end
  local limit = tonumber(args[4])
  local nicks = redis.call('ZRANGEBYLEX', key, from, '+', 'LIMIT', 0, limit + 1)
  local more = 0
  if #nicks > limit then
    more = 1
    nicks[#nicks] = nil
  end
  return {redis.call('ZCARD', key), nicks, more}
end

-- {ROOM, COUNT, ...}: every room with members on some node or a kept topic; a room with a
-- topic has a second pair {ROOM, TEXT} after its count (a string where a count would be: a node
-- of the previous version skips it).
local function rooms(keys, args)
  local out = {}
  local listed = {}
  local function add(room)
    if listed[room] then return end
    listed[room] = true
    out[#out + 1] = room
    out[#out + 1] = redis.call('ZCARD', rkey(room, 'who'))
    local text = redis.call('HGET', rkey(room, 'topic'), 'text')
    if text then
      out[#out + 1] = room
      out[#out + 1] = text
    end
  end
  for _, room in ipairs(redis.call('SMEMBERS', 'roomd:rooms')) do add(room) end
  for _, room in ipairs(redis.call('SMEMBERS', 'roomd:topics')) do add(room) end
  return out
end

redis.register_function('roomd_say', say)
redis.register_function('roomd_say_batch', say_batch)
redis.register_function('roomd_state', state)
redis.register_function('roomd_member', member)
redis.register_function('roomd_enter', enter)
redis.register_function('roomd_claim', claim)
redis.register_function('roomd_release', release)
redis.register_function('roomd_reclaim', reclaim)
redis.register_function('roomd_beat', beat)
redis.register_function('roomd_sweep', sweep)
redis.register_function('roomd_topic', topic)
redis.register_function('roomd_whisper', whisper)
redis.register_function{function_name = 'roomd_members', callback = members, flags = {'no-writes'}}
redis.register_function{function_name = 'roomd_who', callback = who, flags = {'no-writes'}}
redis.register_function{function_name = 'roomd_rooms', callback = rooms, flags = {'no-writes'}}
redis.register_function{function_name = 'roomd_topic_of', callback = topic_of, flags = {'no-writes'}}
)LUA";
}

ClusterClient::ClusterClient(uv_loop_t* loop, ClusterSettings settings, ClusterSink sink)
    : loop_(loop),
      settings_(std::move(settings)),
      sink_(std::move(sink)),
      random_(std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32) ^ uv_hrtime()),
      reconnect_(loop, [this] { connect(); }),
      heartbeat_(loop, [this] { heartbeat(); }),
      flush_says_(loop, [this] { flush_says(); }) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(random_()));
  incarnation_ = text;
  // A tag per process for its guests: another node's guests have another (1 in 1.7 million
  // that two nodes draw the same; two guests of one name would then only look alike).
  static constexpr char kTagChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  guest_prefix_ = "guest-";
  for (int i = 0; i < 4; ++i) guest_prefix_ += kTagChars[random_() % 36];
  guest_prefix_ += '-';
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

std::string ClusterClient::node_channel() const { return "roomd:node:" + self_; }

void ClusterClient::start(const std::string& default_node_id) {
  if (std::exchange(started_, true)) return;
  if (settings_.node_id.empty()) settings_.node_id = default_node_id;
  self_ = settings_.node_id + ":" + incarnation_;
  const std::uint32_t deadline = say_wait_ms();
  RedisLinkSettings link{.address = settings_.redis, .connect_timeout_ms = deadline, .command_timeout_ms = deadline};
  commands_ = std::make_unique<RedisLink>(
      loop_, link, [] {}, [this](RedisCloseReason r, const std::string& d) { link_failed("command", r, d); });
  subscriber_ = std::make_unique<RedisLink>(
      loop_, link, [] {}, [this](RedisCloseReason r, const std::string& d) { link_failed("subscriber", r, d); });
  subscriber_->set_push([this](const redisReply& reply) { on_push(reply); });
  // Four beats a heartbeat: the lease (1.5 heartbeats) survives a loop busy for a heartbeat,
  // and a dead node is seen at most a quarter heartbeat after its lease ran out.
  const std::uint32_t every = std::max<std::uint32_t>(1, settings_.heartbeat_ms / 4);
  heartbeat_.start(every, every);
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
  // Whether Redis keeps what it answered through a crash of its own (persisted rooms count on
  // it; docs/cluster.md). Not a condition of service: a Redis that hides CONFIG is used too.
  commands_->command({"CONFIG", "GET", "appendonly", "appendfsync"}, [this](const redisReply* r) {
    if (r) check_durability(r);
  });
  subscriber_->command({"PING"}, [this, init_failed](const redisReply* r) {
    if (!r || is_error(r)) return init_failed("subscriber", "PING", r);
    subscriber_ready_ = true;
    maybe_ready();
  });
}

void ClusterClient::check_durability(const redisReply* reply) {
  auto read = redis_replies::read_durability(reply);
  stats_.redis_durable = read && read.value->durable();
  std::string found = read ? "appendonly " + read.value->appendonly + ", appendfsync " + read.value->appendfsync
                           : "CONFIG GET: " + read.error;
  if (found == durability_) return;  // once, until it changes
  durability_ = found;
  const bool followed = std::any_of(feeds_.begin(), feeds_.end(), [](const auto& f) { return f.second.durable; });
  if (stats_.redis_durable || !followed) return log::info("cluster: Redis persistence: " + found);
  log::warning("cluster: Redis at " + settings_.redis.to_string() + " may answer before its data is on disk (" + found +
               "): persisted rooms' acks then rest on the nodes' stores alone, and a Redis crash or restart "
               "loses the newest order and begins rooms again under new epochs (docs/cluster.md); run Redis "
               "with appendonly yes and appendfsync always");
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
    queue_say(std::move(pending));
  }
  flush_says();
  // This node in the registry first, then its members and nicks as they are now: Redis may
  // have lost them (a restart), or the others swept them while this node could not beat.
  beat(true);
  register_all();
  subscriber_->subscribe(node_channel());  // whispers to this node's clients
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
  std::vector<std::function<void()>> topic_acks;  // stored; shown here after the reconnect
  for (auto& [room, feed] : feeds_) {
    for (auto& ack : feed.topic_acks) topic_acks.push_back(std::move(ack.second));
    feed.topic_acks.clear();
    feed.subscribed = feed.syncing = feed.filling = false;
    feed.fill_to = 0;
    feed.early.clear();  // read again from the stream after the reconnect
    feed.members_known = feed.members_reading = false;
    feed.topic_version = 0;       // Redis may come back with other versions
    feed.early_presence.clear();  // the members are read again after the reconnect
  }
  // Either link failing ends both: the pair is one session with Redis. Closing runs the
  // pending replies (nullptr), which may add says to retry_.
  commands_->close();
  subscriber_->close();
  if (was_ready && sink_.lost) sink_.lost();
  for (auto& ack : topic_acks) ack();
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
  // The link's command deadline turns a beat with no answer into a timeout (a frozen Redis).
  if (ready_) beat(false);
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
  // A node's own say id is kept in Redis for a few say_wait_ms, in a hash per time bucket of
  // that width (one write a batch): long enough for every retry of a lost reply.
  const std::uint64_t bucket = uv_now(loop_) / say_wait_ms();
  auto pending = std::make_shared<PendingSay>(PendingSay{std::move(say), random_epoch(), std::move(done), 0, bucket});
  queue_say(std::move(pending));
}

void ClusterClient::queue_say(std::shared_ptr<PendingSay> pending) {
  RoomSays& room = says_[pending->say.room];
  room.queued.push_back(std::move(pending));
  ++stats_.says_queued;
  // A room with a batch in flight waits for its answer: what comes meanwhile goes as the next
  // batch, so batches grow with the load (NATS' flush of a client's pending bytes).
  if (room.batches_in_flight < kBatchesInFlight && !std::exchange(flush_scheduled_, true)) flush_says_.start(0, 0);
}

void ClusterClient::flush_says() {
  flush_scheduled_ = false;
  std::vector<std::string> rooms;
  for (const auto& [room, says] : says_)
    if (!says.queued.empty()) rooms.push_back(room);
  for (const auto& room : rooms) send_queued(room);
}

void ClusterClient::send_queued(const std::string& room) {
  // Found again after every send: a refused say's answer may queue another (and rehash says_).
  for (auto it = says_.find(room); it != says_.end(); it = says_.find(room)) {
    RoomSays& says = it->second;
    if (says.queued.empty() || says.batches_in_flight >= kBatchesInFlight) {
      if (says.queued.empty() && says.batches_in_flight == 0) says_.erase(it);
      return;
    }
    const auto n = static_cast<std::ptrdiff_t>(std::min(says.queued.size(), kSayBatch));
    std::vector<std::shared_ptr<PendingSay>> batch(std::make_move_iterator(says.queued.begin()),
                                                   std::make_move_iterator(says.queued.begin() + n));
    says.queued.erase(says.queued.begin(), says.queued.begin() + n);
    stats_.says_queued -= static_cast<std::uint64_t>(n);
    ++says.batches_in_flight;
    if (!send_batch(room, std::move(batch))) batch_answered(room, false);
  }
}

void ClusterClient::batch_answered(const std::string& room, bool send_next) {
  auto it = says_.find(room);
  if (it == says_.end()) return;
  --it->second.batches_in_flight;
  if (send_next) send_queued(room);
}

void ClusterClient::say_lost(const std::shared_ptr<PendingSay>& pending) {
  // The reply went with the link: the message may or may not be ordered. It goes again with
  // its id after the reconnect, for as long as a say may wait.
  const std::uint64_t now = uv_now(loop_);
  if (pending->deadline_ms == 0) pending->deadline_ms = now + say_wait_ms();
  if (now < pending->deadline_ms) return retry_.push_back(pending);
  ++stats_.says_refused;
  pending->done({});
}

bool ClusterClient::send_batch(const std::string& room, std::vector<std::shared_ptr<PendingSay>> says) {
  // A followed room's floor: what this node holds of it, which Redis never gives again.
  auto feed = feeds_.find(room);
  const std::uint64_t floor = feed != feeds_.end() && feed->second.durable ? feed->second.next_seq - 1 : 0;
  std::vector<std::string> call{"FCALL",         "roomd_say_batch",   std::to_string(4 + says.size()),
                                key(room, "seq"), key(room, "epoch"), key(room, "log"),
                                key(room, "base")};
  call.reserve(call.size() + 6 + 4 * says.size());
  for (const auto& p : says) {
    // The client's msg_id when it gave one (a resend through any node is then a repeat), else
    // the node's own id for the say, a field of the node's hash for its time bucket.
    const ClusterSay& s = p->say;
    call.push_back(s.client_id.empty() ? key(room, ("said:n:" + self_ + ":" + std::to_string(p->said_bucket)).c_str())
                                       : key(room, ("said:c:" + s.client_id).c_str()));
  }
  call.insert(call.end(), {channel(room), std::to_string(settings_.max_messages_per_room), says.front()->candidate_epoch,
                           std::to_string(kSaidWindowMs), std::to_string(floor), std::to_string(4 * say_wait_ms())});
  for (const auto& p : says) {
    call.push_back(p->say.head);
    call.push_back(p->say.tail);
    call.push_back(p->say.client_id.empty() ? p->say.said_id : std::string());
  }
  ++stats_.say_batches;
  auto batch = std::make_shared<std::vector<std::shared_ptr<PendingSay>>>(std::move(says));
  bool sent = commands_->command(call, [this, room, batch](const redisReply* r) {
    answer_batch(room, *batch, r);
    batch_answered(room, true);
  });
  if (!sent)
    for (const auto& p : *batch) say_lost(p);
  return sent;
}

void ClusterClient::answer_batch(const std::string& room, const std::vector<std::shared_ptr<PendingSay>>& batch,
                                 const redisReply* r) {
  if (!r) {
    for (const auto& p : batch) say_lost(p);
    return;
  }
  auto said = redis_replies::read_say_batch(r, batch.size());
  if (!said) {
    log::warning("cluster: roomd_say_batch in '" + room + "' failed: " + said.error);
    stats_.says_refused += batch.size();
    for (const auto& p : batch) p->done({});
    return;
  }
  stats_.says += batch.size();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& result = (*said.value)[i];
    batch[i]->done({true, result.seq, std::move(result.epoch), result.duplicate});
  }
}

// ---- rooms ---------------------------------------------------------------------------------

void ClusterClient::watch(const std::string& room) {
  if (feeds_.contains(room)) return;
  Feed& feed = feeds_[room];
  feed.serial = ++feed_serial_;
  if (ready_) subscriber_->subscribe(channel(room));
}

void ClusterClient::unwatch(const std::string& room) {
  auto it = feeds_.find(room);
  if (it == feeds_.end()) return;
  auto acks = std::exchange(it->second.topic_acks, {});
  feeds_.erase(it);
  if (ready_) subscriber_->unsubscribe(channel(room));
  for (auto& ack : acks) ack.second();  // stored: nothing here will show it now
}

void ClusterClient::follow(const std::string& room, std::uint64_t last_seq, const std::string& epoch) {
  if (auto it = feeds_.find(room); it != feeds_.end()) {
    if (it->second.durable) return;
    unwatch(room);  // watched for members until now: followed from the store's end instead
  }
  Feed& feed = feeds_[room];
  feed.serial = ++feed_serial_;
  feed.durable = feed.known = true;
  feed.epoch = epoch;
  feed.next_seq = last_seq + 1;
  if (ready_) subscriber_->subscribe(channel(room));
}

ClusterClient::Feed* ClusterClient::find_feed(const std::string& room, std::uint64_t serial) {
  auto it = feeds_.find(room);
  return it != feeds_.end() && it->second.serial == serial ? &it->second : nullptr;
}

void ClusterClient::on_push(const redisReply& reply) {
  auto push = redis_replies::read_push(&reply);
  if (!push) return;
  if (push->kind == redis_replies::Push::Kind::message) return on_message(push->room, std::move(push->message));
  if (push->kind == redis_replies::Push::Kind::batch) {
    // In seq order, each as if it came alone (a gap, another epoch, one had already).
    for (auto& message : push->batch) on_message(push->room, std::move(message));
    return;
  }
  if (push->kind == redis_replies::Push::Kind::presence) return on_presence(push->room, std::move(push->presence));
  if (push->kind == redis_replies::Push::Kind::whisper) {
    ++stats_.whispers_in;
    if (sink_.whisper) sink_.whisper(push->whisper);
    return;
  }
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
  // The members first: their reply comes before the state's (one link answers in order), so
  // the joins waiting for the state are answered with every node's members.
  read_members(room, feed);
  feed.syncing = true;
  const std::uint64_t serial = feed.serial;
  const std::uint64_t floor = feed.durable ? feed.next_seq - 1 : 0;
  commands_->command(
      {"FCALL", "roomd_state", "4", key(room, "seq"), key(room, "epoch"), key(room, "log"), key(room, "base"),
       random_epoch(), std::to_string(settings_.recent), std::to_string(floor)},
      [this, room, serial](const redisReply* r) {
        Feed* f = find_feed(room, serial);
        if (!f) return;
        f->syncing = false;
        if (!r) return;  // the link went; the reconnect syncs again
        auto read = redis_replies::read_state(r);
        if (!read) return link_failed("command", RedisCloseReason::owner, "roomd_state: " + read.error);
        RoomState& state = *read.value;
        if (f->durable) return durable_synced(room, serial, state);
        const std::uint64_t seq = state.last_seq;
        const std::string epoch = state.epoch;
        if (!f->known) {
          // New to this node: the room starts here, from Redis; the joins waiting for it get
          // its newest messages as their history. Presence waited for them: a member hears
          // nothing of a room before its `joined`.
          f->known = true;
          f->epoch = epoch;
          f->next_seq = seq + 1;
          if (sink_.synced) sink_.synced(room, state);
          if ((f = find_feed(room, serial))) drain_presence(room, *f);
          if ((f = find_feed(room, serial))) drain(room, *f);
          return;
        }
        drain_presence(room, *f);
        if (!(f = find_feed(room, serial))) return;
        if (epoch != f->epoch) {
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
        }
        // Missed while the links were down: read them from the stream, delivered in order.
        if (seq >= f->next_seq) return fill(room, *f, seq);
        drain(room, *f);
      });
}

// A followed room goes on from where this node's store ends, through every seq the stream
// still has, whatever Redis' own position: the store must hold every message.
void ClusterClient::durable_synced(const std::string& room, std::uint64_t serial, const RoomState& state) {
  Feed* f = find_feed(room, serial);
  if (!f) return;
  const std::uint64_t held = f->next_seq - 1;
  if (f->epoch.empty()) {
    f->epoch = state.epoch;  // new to this node's store: it follows Redis' incarnation
  } else if (state.epoch != f->epoch) {
    // Redis began the room again (it lost it, or came back with less than a node holds), after
    // `base`. If a node holding less began it and said some, the new epoch has seqs up to
    // `held` that are the old epoch's here: those stay, the new ones are not stored here.
    const std::uint64_t conflicts = state.base < held ? std::min(held, state.last_seq) - state.base : 0;
    stats_.conflicts += conflicts;
    log::warning("cluster: '" + room + "' began again in Redis (epoch " + f->epoch + " -> " + state.epoch +
                 ", after seq " + std::to_string(state.base) + "); this node holds it up to seq " + std::to_string(held) +
                 (conflicts ? "; the new epoch's seqs " + std::to_string(state.base + 1) + ".." +
                                  std::to_string(state.base + conflicts) + " are not stored here (the old ones are kept)"
                            : std::string()));
    f->epoch = state.epoch;
    if (sink_.synced) sink_.synced(room, RoomState{held, state.epoch, {}, state.base});
    if (!(f = find_feed(room, serial))) return;
  }
  if (!f->reported) {
    f->report = true;
    f->report_at = state.last_seq;
  }
  fill(room, *f, state.last_seq);
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
  // A followed room has caught up with where Redis stood at its first sync: the joins waiting
  // for it are answered (and the store has what they may page through).
  if (feed.report && !feed.filling && feed.next_seq > feed.report_at) {
    feed.report = false;
    feed.reported = true;
    if (sink_.synced) sink_.synced(room, RoomState{feed.next_seq - 1, feed.epoch, {}, 0});
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

namespace roomd {

// ---- members and presence ------------------------------------------------------------------

void ClusterClient::read_members(const std::string& room, Feed& feed) {
  if (feed.members_reading) return;
  feed.members_reading = true;
  const std::uint64_t serial = feed.serial;
  commands_->command({"FCALL", "roomd_members", "0", room}, [this, room, serial](const redisReply* r) {
    Feed* f = find_feed(room, serial);
    if (!f) return;
    f->members_reading = false;
    if (!r) return;  // the link went; the reconnect reads them again
    auto read = redis_replies::read_members(r, self_);
    if (!read) return link_failed("command", RedisCloseReason::owner, "roomd_members: " + read.error);
    ++stats_.member_reads;
    f->members_known = true;
    f->member_version = read.value->version;
    if (sink_.members) sink_.members(room, std::move(read.value->others));
    if ((f = find_feed(room, serial))) drain_presence(room, *f);
  });
  // The topic next, on the same link: before the state, so a waiting `joined` has it.
  commands_->command({"FCALL", "roomd_topic_of", "0", room}, [this, room, serial](const redisReply* r) {
    Feed* f = find_feed(room, serial);
    if (!f || !r) return;
    auto read = redis_replies::read_topic(r);
    if (!read) {
      // A library of the previous version (another node loaded it last) has no roomd_topic_of:
      // the topic stays as this node knows it.
      if (!is_error(r)) link_failed("command", RedisCloseReason::owner, "roomd_topic_of: " + read.error);
      return;
    }
    // A topic change applied from the channel since is newer than this read.
    if (read.value->version < f->topic_version) return;
    f->topic_version = read.value->version;
    if (sink_.topic) sink_.topic(room, read.value->topic);
    release_topic_acks(room, serial);
  });
}

void ClusterClient::on_presence(const std::string& room, redis_replies::Presence presence) {
  auto it = feeds_.find(room);
  if (it == feeds_.end()) return;
  Feed& feed = it->second;
  if (feed.members_known && presence.version <= feed.member_version) return;  // in what was read
  const std::uint64_t version = presence.version;
  feed.early_presence.emplace(version, std::move(presence));
  drain_presence(room, feed);
}

// Applies the changes that follow the members as known, in version order; a change missing
// (a lost publish) means the members are read again, and what waited is applied after them.
void ClusterClient::drain_presence(const std::string& room, Feed& feed) {
  // After the room's state too: the joins waiting for it are answered first.
  if (!feed.members_known || feed.members_reading || !feed.known || feed.syncing) return;
  const std::uint64_t serial = feed.serial;
  Feed* f = &feed;
  while (!f->early_presence.empty()) {
    auto it = f->early_presence.begin();
    if (it->first <= f->member_version) {
      f->early_presence.erase(it);
      continue;
    }
    if (it->first != f->member_version + 1) return read_members(room, *f);
    redis_replies::Presence p = std::move(it->second);
    f->early_presence.erase(it);
    f->member_version = p.version;
    // This node's own change: its members heard it already. Not a topic: every node, this one
    // too, takes the topic in the room's order, so two set at once end the same everywhere.
    if (p.node == self_ && p.kind != ClusterPresence::Kind::topic) continue;
    if (p.kind == ClusterPresence::Kind::topic) {
      if (p.version <= f->topic_version) continue;  // in the topic read already
      f->topic_version = p.version;
    }
    ++stats_.presence_in;
    if (sink_.presence) sink_.presence(room, ClusterPresence{p.kind, std::move(p.nicks), std::move(p.topic)});
    release_topic_acks(room, serial);
    if (!(f = find_feed(room, serial))) return;
  }
  release_topic_acks(room, serial);
}

void ClusterClient::member_change(const char* kind, const std::string& room, const std::string& nick,
                                  const std::string& old) {
  // While Redis is away the change is only remembered: register_all sends the state at the
  // reconnect.
  if (!ready_) return;
  commands_->command({"FCALL", "roomd_member", "0", kind, room, self_, nick, old}, [this](const redisReply* r) {
    if (r && is_error(r)) log::warning(std::string("cluster: roomd_member failed: ") + text_of(r));
  });
}

void ClusterClient::member_joined(const std::string& room, const std::string& nick) {
  members_[room].insert(nick);
  member_change("join", room, nick, "");
}

void ClusterClient::member_left(const std::string& room, const std::string& nick) {
  auto it = members_.find(room);
  if (it != members_.end()) {
    it->second.erase(nick);
    if (it->second.empty()) members_.erase(it);
  }
  member_change("leave", room, nick, "");
}

void ClusterClient::member_renamed(const std::string& room, const std::string& old, const std::string& nick) {
  auto& here = members_[room];
  here.erase(old);
  here.insert(nick);
  member_change("nick", room, nick, old);
}

// This node's members and nicks as they are now, in two commands: what Redis has of them
// otherwise (lost, swept, or left over from before the reconnect) is made right, and the
// differences are published. Everything sent after them is applied after them.
void ClusterClient::register_all() {
  // The nicks first: whoever sees this node's members registered may count on their nicks
  // being held too.
  std::vector<std::string> reclaim{"FCALL", "roomd_reclaim", "0", self_, nick_lease()};
  reclaim.insert(reclaim.end(), nicks_.begin(), nicks_.end());
  commands_->command(reclaim, [this](const redisReply* r) {
    if (!r) return;
    auto lost = redis_replies::read_nicks(r);
    if (!lost) return link_failed("command", RedisCloseReason::owner, "roomd_reclaim: " + lost.error);
    lose_nicks(*lost.value);
  });
  std::vector<std::string> enter{"FCALL", "roomd_enter", "0", self_};
  for (const auto& [room, nicks] : members_) {
    enter.push_back(room);
    enter.push_back(std::to_string(nicks.size()));
    enter.insert(enter.end(), nicks.begin(), nicks.end());
  }
  commands_->command(enter, [this](const redisReply* r) {
    if (r && is_error(r)) link_failed("command", RedisCloseReason::owner, "roomd_enter: " + text_of(r));
  });
}

void ClusterClient::lose_nicks(const std::vector<std::string>& nicks) {
  for (const auto& nick : nicks) {
    if (!nicks_.erase(nick)) continue;
    ++stats_.nicks_lost;
    log::warning("cluster: nick '" + nick + "' is held by another node's client now (this node could not renew it); " +
                 "its client here gets a guest nick");
    if (sink_.nick_lost) sink_.nick_lost(nick);
  }
}

// ---- the node's lease ----------------------------------------------------------------------

void ClusterClient::beat(bool connecting) {
  const std::string lease = std::to_string(settings_.heartbeat_ms * 3 / 2);
  // Nicks once a heartbeat: a dead node's are freed by its sweep, their own lease is for a
  // registry Redis lost, and renewing costs one PEXPIRE per nick.
  const bool renew_nicks = connecting || ++beats_ % 4 == 0;
  commands_->command({"FCALL", "roomd_beat", "0", self_, lease, renew_nicks ? nick_lease() : "0"},
                     [this, connecting](const redisReply* r) {
    if (!r) return;
    auto read = redis_replies::read_beat(r);
    if (!read) return link_failed("command", RedisCloseReason::owner, "roomd_beat: " + read.error);
    if (read.value->fresh && !connecting) {
      // The others swept this node (it could not beat for a while: a busy loop, a slow Redis):
      // its members left their rooms and its nicks were freed. Register them again.
      ++stats_.reregistered;
      log::warning("cluster: this node's lease had run out and the others removed its members; registering them again");
      register_all();
    }
    lose_nicks(read.value->lost);
    for (const auto& node : read.value->expired)
      if (node != self_) sweep(node);
  });
}

void ClusterClient::sweep(const std::string& node) {
  commands_->command({"FCALL", "roomd_sweep", "0", node}, [this, node](const redisReply* r) {
    if (!r) return;
    auto removed = redis_replies::read_integer(r);
    if (!removed) return log::warning("cluster: roomd_sweep of " + node + " failed: " + removed.error);
    if (*removed.value < 0) return;  // another node swept it first, or it beats again
    ++stats_.sweeps;
    stats_.swept_members += static_cast<std::uint64_t>(*removed.value);
    log::notice("cluster: node " + node + " stopped beating; its " + std::to_string(*removed.value) +
                " members left their rooms");
  });
}

// ---- nicks ---------------------------------------------------------------------------------

void ClusterClient::claim_nick(const std::string& nick, const std::string& replaced, std::function<void(NickClaim)> done) {
  if (!ready_) return done(NickClaim::unavailable);
  // Counted as held from now: a registration sent before the answer comes keeps it.
  const bool held_before = !nicks_.insert(nick).second;
  ++stats_.nick_claims;
  auto answer = std::make_shared<std::function<void(NickClaim)>>(std::move(done));
  bool sent = commands_->command(
      {"FCALL", "roomd_claim", "0", self_, nick_lease(), nick, replaced},
      [this, nick, replaced, held_before, answer](const redisReply* r) {
        auto claimed = redis_replies::read_integer(r);
        if (claimed && *claimed.value == 1) {
          if (!replaced.empty() && replaced != nick) nicks_.erase(replaced);
          return (*answer)(NickClaim::ok);
        }
        // Not ours. Had Redis set it after all (a reply lost with the link), the registration
        // at the reconnect frees it.
        if (!held_before) nicks_.erase(nick);
        if (claimed && *claimed.value == 0) {
          ++stats_.nicks_taken;
          return (*answer)(NickClaim::taken);
        }
        if (r) log::warning("cluster: roomd_claim failed: " + claimed.error);
        (*answer)(NickClaim::unavailable);
      });
  if (!sent) {
    if (!held_before) nicks_.erase(nick);
    (*answer)(NickClaim::unavailable);
  }
}

void ClusterClient::register_guest(const std::string& nick) {
  // Held from now whatever Redis answers: while it is away, the registration at the reconnect
  // takes it. No other node makes nicks with this node's guest prefix, so 0 means a node of
  // the same tag (one in 1.7 million): the guest stays unfindable from other nodes, as before.
  nicks_.insert(nick);
  if (!ready_) return;
  commands_->command({"FCALL", "roomd_claim", "0", self_, nick_lease(), nick, ""}, [this, nick](const redisReply* r) {
    auto claimed = redis_replies::read_integer(r);
    if (!claimed || *claimed.value != 0) return;
    nicks_.erase(nick);
    log::warning("cluster: guest nick '" + nick + "' is held by another node (the same guest tag); " +
                 "whispers from other nodes will not find it");
  });
}

void ClusterClient::release_nick(const std::string& nick) {
  nicks_.erase(nick);
  if (ready_) commands_->command({"FCALL", "roomd_release", "0", self_, nick}, {});
}

// ---- topics and whispers --------------------------------------------------------------------

void ClusterClient::set_topic(const std::string& room, const std::string& nick, const std::string& topic, bool kept,
                              std::function<void(bool)> done) {
  if (!ready_) return done(false);
  bool sent = commands_->command({"FCALL", "roomd_topic", "0", room, self_, nick, topic, kept ? "1" : "0"},
                                 [this, room, done](const redisReply* r) {
    auto set = redis_replies::read_integer(r);
    if (r && !set) log::warning("cluster: roomd_topic failed: " + set.error);
    if (!set || *set.value < 1) return done(false);
    ++stats_.topics;
    // Answered once this node has applied it from the room's channel too, so the setter's
    // `joined` and `rooms` right after show it (as a say's ok follows its delivery).
    const auto version = static_cast<std::uint64_t>(*set.value);
    auto it = feeds_.find(room);
    if (it == feeds_.end() || (it->second.members_known && it->second.member_version >= version)) return done(true);
    it->second.topic_acks.emplace_back(version, [done] { done(true); });
  });
  if (!sent) done(false);
}

// Topic acks whose change this node has applied.
void ClusterClient::release_topic_acks(const std::string& room, std::uint64_t serial) {
  Feed* f = find_feed(room, serial);
  if (!f || f->topic_acks.empty()) return;
  std::vector<std::function<void()>> due;
  std::erase_if(f->topic_acks, [&](auto& ack) {
    if (!f->members_known || ack.first > f->member_version) return false;
    due.push_back(std::move(ack.second));
    return true;
  });
  for (auto& answer : due) answer();
}

void ClusterClient::whisper(ClusterWhisper w, std::function<void(WhisperSent)> done) {
  if (!ready_) return done(WhisperSent::unavailable);
  // "FROM TS TO TEXT", or "FROM TS TO:HEX TEXT" with a msg_id (hex: it may hold spaces): the
  // text last, as it is.
  std::string id;
  if (!w.msg_id.empty()) id = fold_case(w.from) + ":" + w.to + ":" + w.msg_id;
  std::string payload = w.from + " " + std::to_string(w.ts) + " " + w.to;
  if (!w.msg_id.empty()) payload += ":" + redis_replies::hex(w.msg_id);
  payload += " " + w.text;
  bool sent = commands_->command({"FCALL", "roomd_whisper", "0", w.to, std::move(payload), std::move(id),
                                  std::to_string(kSaidWindowMs)},
                                 [this, done](const redisReply* r) {
    auto handed = redis_replies::read_integer(r);
    if (r && !handed) log::warning("cluster: roomd_whisper failed: " + handed.error);
    if (!handed || *handed.value < 0) return done(WhisperSent::unavailable);
    if (*handed.value == 0) return done(WhisperSent::no_such_nick);
    if (*handed.value == 2) return done(WhisperSent::duplicate);
    ++stats_.whispers_out;
    done(WhisperSent::ok);
  });
  if (!sent) done(WhisperSent::unavailable);
}

// ---- reads for rooms this node does not watch -------------------------------------------------

void ClusterClient::who(const std::string& room, const std::optional<std::string>& after, std::size_t limit,
                        std::function<void(std::optional<ClusterMemberPage>)> done) {
  if (!ready_) return done(std::nullopt);
  bool sent = commands_->command(
      {"FCALL", "roomd_who", "0", room, after ? "1" : "0", after.value_or(""), std::to_string(limit)},
      [done](const redisReply* r) {
        auto page = redis_replies::read_who(r);
        if (!page) return done(std::nullopt);
        done(std::move(page.value));
      });
  if (!sent) done(std::nullopt);
}

void ClusterClient::room_counts(std::function<void(std::optional<std::vector<ClusterRoomCount>>)> done) {
  if (!ready_) return done(std::nullopt);
  bool sent = commands_->command({"FCALL", "roomd_rooms", "0"}, [done](const redisReply* r) {
    auto counts = redis_replies::read_room_counts(r);
    if (!counts) return done(std::nullopt);
    done(std::move(counts.value));
  });
  if (!sent) done(std::nullopt);
}

}  // namespace roomd
