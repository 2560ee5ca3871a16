// Reading Redis' replies for the cluster client (redis_replies.hpp).
#include "roomd/cluster/redis_replies.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

#include "roomd/base/names.hpp"
#include "roomd/protocol/request.hpp"

namespace roomd::redis_replies {

namespace {
bool is_array(const redisReply* r, std::size_t elements) {
  return r && r->type == REDIS_REPLY_ARRAY && r->elements == elements;
}

bool is_string(const redisReply* r) { return r && r->type == REDIS_REPLY_STRING; }

template <class T>
Read<T> refused(const redisReply* r) {
  std::string why = is_error(r) ? text_of(r) : std::string();
  return {std::nullopt, why.empty() ? std::string(r ? "odd reply" : "no reply") : why};
}
}  // namespace

std::string text_of(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

bool is_error(const redisReply* r) { return r && r->type == REDIS_REPLY_ERROR; }

std::optional<std::uint64_t> parse_seq(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0 || n > kMaxSeq) return std::nullopt;
  return n;
}

bool plausible_line(std::string_view line) { return line.size() >= 3 && line.front() == '{' && line.ends_with("}\n"); }

bool valid_epoch(std::string_view epoch) { return !epoch.empty() && epoch.find(' ') == std::string_view::npos; }

bool valid_node(std::string_view node) { return !node.empty() && node.find(' ') == std::string_view::npos; }

Read<SayResult> read_say(const redisReply* r) {
  if (!(is_array(r, 2) || is_array(r, 3)) || r->element[0]->type != REDIS_REPLY_INTEGER || !is_string(r->element[1]))
    return refused<SayResult>(r);
  const bool flagged = r->elements == 3;
  if (flagged && (r->element[2]->type != REDIS_REPLY_INTEGER || r->element[2]->integer != 1)) return refused<SayResult>(r);
  const long long seq = r->element[0]->integer;
  SayResult said{static_cast<std::uint64_t>(seq), text_of(r->element[1]), flagged};
  if (seq <= 0 || !valid_epoch(said.epoch)) return refused<SayResult>(r);
  return {std::move(said), {}};
}

Read<std::vector<SayResult>> read_say_batch(const redisReply* r, std::size_t count) {
  if (!is_array(r, 2) || !is_string(r->element[0]) || !is_array(r->element[1], 2 * count) || count == 0)
    return refused<std::vector<SayResult>>(r);
  const std::string epoch = text_of(r->element[0]);
  if (!valid_epoch(epoch)) return refused<std::vector<SayResult>>(r);
  const redisReply* pairs = r->element[1];
  std::vector<SayResult> said;
  said.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const redisReply* seq = pairs->element[2 * i];
    const redisReply* flag = pairs->element[2 * i + 1];
    if (seq->type != REDIS_REPLY_INTEGER || seq->integer <= 0 || flag->type != REDIS_REPLY_INTEGER ||
        (flag->integer != 0 && flag->integer != 1))
      return refused<std::vector<SayResult>>(r);
    said.push_back({static_cast<std::uint64_t>(seq->integer), epoch, flag->integer == 1});
  }
  return {std::move(said), {}};
}

Read<RoomState> read_state(const redisReply* r) {
  if (!(is_array(r, 3) || is_array(r, 4)) || r->element[0]->type != REDIS_REPLY_INTEGER || !is_string(r->element[1]) ||
      r->element[2]->type != REDIS_REPLY_ARRAY || (r->elements == 4 && r->element[3]->type != REDIS_REPLY_INTEGER))
    return refused<RoomState>(r);
  const long long seq = r->element[0]->integer;
  const long long base = r->elements == 4 ? r->element[3]->integer : 0;
  RoomState state{static_cast<std::uint64_t>(seq), text_of(r->element[1]), {}, static_cast<std::uint64_t>(base)};
  if (seq < 0 || base < 0 || base > seq || !valid_epoch(state.epoch)) return refused<RoomState>(r);
  const redisReply* lines = r->element[2];
  state.recent.reserve(lines->elements);
  for (std::size_t i = 0; i < lines->elements; ++i) state.recent.push_back(text_of(lines->element[i]));
  return {std::move(state), {}};
}

std::optional<Push> read_push(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return std::nullopt;
  const std::string kind = text_of(r->element[0]);
  const std::string name = text_of(r->element[1]);
  // A whisper on this node's own channel "roomd:node:NODE" (its subscribe needs no answer).
  if (name.starts_with("roomd:node:")) {
    if (kind != "message" || !is_string(r->element[2])) return std::nullopt;
    auto whisper = read_whisper(std::string_view(r->element[2]->str, r->element[2]->len));
    if (!whisper) return std::nullopt;
    Push push{Push::Kind::whisper, {}, {}, {}, std::move(*whisper), {}};
    return push;
  }
  // "roomd:{ROOM}" -> ROOM
  if (!name.starts_with("roomd:{") || !name.ends_with("}")) return std::nullopt;
  Push push{Push::Kind::subscribed, name.substr(7, name.size() - 8), {}, {}, {}, {}};
  if (kind == "subscribe") return push;
  if (kind != "message" || !is_string(r->element[2])) return std::nullopt;
  const std::string_view payload(r->element[2]->str, r->element[2]->len);
  if (payload.starts_with("p ")) {
    auto presence = read_presence(payload);
    if (!presence) return std::nullopt;
    push.kind = Push::Kind::presence;
    push.presence = std::move(*presence);
    return push;
  }
  if (payload.starts_with("b ")) {
    auto batch = read_batch(payload);
    if (!batch) return std::nullopt;
    push.kind = Push::Kind::batch;
    push.batch = std::move(*batch);
    return push;
  }
  auto message = read_message(payload);
  if (!message) return std::nullopt;
  push.kind = Push::Kind::message;
  push.message = std::move(*message);
  return push;
}

std::optional<Presence> read_presence(std::string_view payload) {
  if (!payload.starts_with("p ")) return std::nullopt;
  std::string_view rest = payload.substr(2);
  // Words split by single spaces: an empty word (two spaces, a trailing space) is malformed.
  auto word = [&rest]() -> std::optional<std::string_view> {
    if (rest.empty()) return std::nullopt;
    const auto space = rest.find(' ');
    std::string_view w = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    if (w.empty() || (space != std::string_view::npos && rest.empty())) return std::nullopt;
    return w;
  };
  auto version = word();
  auto node = word();
  auto kind = word();
  if (!version || !node || !kind) return std::nullopt;
  Presence p;
  auto v = parse_seq(*version);
  if (!v || !valid_node(*node)) return std::nullopt;
  p.version = *v;
  p.node = std::string(*node);
  if (*kind == "join") p.kind = ClusterPresence::Kind::join;
  else if (*kind == "leave") p.kind = ClusterPresence::Kind::leave;
  else if (*kind == "nick") p.kind = ClusterPresence::Kind::nick;
  else if (*kind == "topic") {
    // The setter, then the text: the rest, as it is (spaces, nothing at all).
    p.kind = ClusterPresence::Kind::topic;
    const auto space = rest.find(' ');
    std::string_view nick = rest.substr(0, space);
    if (!valid_nick(nick)) return std::nullopt;
    p.nicks.emplace_back(nick);
    if (space != std::string_view::npos) p.topic = std::string(rest.substr(space + 1));
    return p;
  } else return std::nullopt;
  while (!rest.empty()) {
    auto nick = word();
    if (!nick || !valid_nick(*nick)) return std::nullopt;
    p.nicks.emplace_back(*nick);
  }
  if (p.nicks.empty() || (p.kind == ClusterPresence::Kind::nick && p.nicks.size() != 2)) return std::nullopt;
  return p;
}

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::optional<std::string> unhex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 2);
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int high = digit(text[i]), low = digit(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
  }
  return out;
}

std::optional<ClusterWhisper> read_whisper(std::string_view payload) {
  ClusterWhisper w;
  std::string_view rest = payload;
  auto word = [&rest]() -> std::optional<std::string_view> {
    const auto space = rest.find(' ');
    if (space == std::string_view::npos || space == 0) return std::nullopt;
    std::string_view out = rest.substr(0, space);
    rest = rest.substr(space + 1);
    return out;
  };
  auto from = word();
  auto ts = word();
  auto to = word();
  if (!from || !ts || !to) return std::nullopt;
  // "TO:HEX": the msg_id, hex (a node of the previous version takes it for a bad nick: dropped)
  if (const auto colon = to->find(':'); colon != std::string_view::npos) {
    auto id = unhex(to->substr(colon + 1));
    if (!id || !valid_msg_id(*id)) return std::nullopt;
    w.msg_id = std::move(*id);
    to = to->substr(0, colon);
  }
  if (!valid_nick(*from) || !valid_nick(*to) || fold_case(*to) != *to) return std::nullopt;
  auto [end, ec] = std::from_chars(ts->data(), ts->data() + ts->size(), w.ts);
  if (ec != std::errc() || end != ts->data() + ts->size()) return std::nullopt;
  w.from = std::string(*from);
  w.to = std::string(*to);
  w.text = std::string(rest);
  return w;
}

std::optional<Message> read_message(std::string_view payload) {
  const auto first = payload.find(' ');
  const auto second = first == std::string_view::npos ? first : payload.find(' ', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  auto seq = parse_seq(payload.substr(0, first));
  std::string_view epoch = payload.substr(first + 1, second - first - 1);
  std::string_view line = payload.substr(second + 1);
  if (!seq || !valid_epoch(epoch) || !plausible_line(line)) return std::nullopt;
  return Message{*seq, std::string(epoch), std::string(line)};
}

std::optional<std::vector<Message>> read_batch(std::string_view payload) {
  if (!payload.starts_with("b ")) return std::nullopt;
  const auto newline = payload.find('\n');
  if (newline == std::string_view::npos) return std::nullopt;
  const std::string_view epoch = payload.substr(2, newline - 2);
  if (!valid_epoch(epoch)) return std::nullopt;
  std::string_view rest = payload.substr(newline + 1);
  std::vector<Message> batch;
  while (!rest.empty()) {
    const auto first = rest.find(' ');
    const auto second = first == std::string_view::npos ? first : rest.find(' ', first + 1);
    if (second == std::string_view::npos) return std::nullopt;
    auto seq = parse_seq(rest.substr(0, first));
    const std::string_view length_text = rest.substr(first + 1, second - first - 1);
    std::size_t length = 0;
    auto [end, ec] = std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
    if (!seq || length_text.empty() || ec != std::errc() || end != length_text.data() + length_text.size())
      return std::nullopt;
    rest = rest.substr(second + 1);
    if (length > rest.size()) return std::nullopt;
    const std::string_view line = rest.substr(0, length);
    if (!plausible_line(line) || (!batch.empty() && *seq <= batch.back().seq)) return std::nullopt;
    batch.push_back({*seq, std::string(epoch), std::string(line)});
    rest = rest.substr(length);
  }
  if (batch.empty()) return std::nullopt;
  return batch;
}

Read<StreamRange> read_range(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    std::string why = text_of(r);
    return {std::nullopt, why.empty() ? std::string(r ? "odd reply" : "no reply") : why};
  }
  StreamRange range{{}, r->elements};
  for (std::size_t i = 0; i < r->elements; ++i) {
    const redisReply* entry = r->element[i];
    if (!is_array(entry, 2)) continue;
    const std::string id = text_of(entry->element[0]);
    auto seq = parse_seq(std::string_view(id).substr(0, id.find('-')));
    const redisReply* fields = entry->element[1];
    if (!seq || !is_array(fields, 2)) continue;
    std::string line = text_of(fields->element[1]);
    if (!plausible_line(line)) continue;
    range.entries.push_back({*seq, std::move(line)});
  }
  return {std::move(range), {}};
}

namespace {
// A count Redis gave: an integer 0..2^63-1.
bool is_count(const redisReply* r) { return r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0; }
}  // namespace

Read<MemberSnapshot> read_members(const redisReply* r, std::string_view self) {
  if (!is_array(r, 2) || !is_count(r->element[0]) || r->element[1]->type != REDIS_REPLY_ARRAY)
    return refused<MemberSnapshot>(r);
  MemberSnapshot snapshot{static_cast<std::uint64_t>(r->element[0]->integer), {}};
  const redisReply* nodes = r->element[1];
  for (std::size_t i = 0; i < nodes->elements; ++i) {
    const redisReply* entry = nodes->element[i];
    if (!entry || entry->type != REDIS_REPLY_ARRAY || entry->elements == 0 || !is_string(entry->element[0])) continue;
    if (text_of(entry->element[0]) == self) continue;  // this node's own: the router has them
    for (std::size_t k = 1; k < entry->elements; ++k) {
      if (!is_string(entry->element[k])) continue;
      std::string nick = text_of(entry->element[k]);
      if (valid_nick(nick)) snapshot.others.push_back(std::move(nick));
    }
  }
  return {std::move(snapshot), {}};
}

Read<TopicRead> read_topic(const redisReply* r) {
  if (!is_array(r, 3) || !is_count(r->element[0])) return refused<TopicRead>(r);
  TopicRead read{static_cast<std::uint64_t>(r->element[0]->integer), std::nullopt};
  const redisReply* text = r->element[1];
  const redisReply* by = r->element[2];
  if (text->type == REDIS_REPLY_NIL && by->type == REDIS_REPLY_NIL) return {std::move(read), {}};  // Lua's false: none
  if (!is_string(text) || !is_string(by) || !valid_nick(text_of(by))) return refused<TopicRead>(r);
  read.topic = ClusterTopic{text_of(text), text_of(by)};
  return {std::move(read), {}};
}

Read<ClusterMemberPage> read_who(const redisReply* r) {
  if (!is_array(r, 3) || !is_count(r->element[0]) || r->element[1]->type != REDIS_REPLY_ARRAY ||
      r->element[2]->type != REDIS_REPLY_INTEGER)
    return refused<ClusterMemberPage>(r);
  ClusterMemberPage page;
  page.count = static_cast<std::size_t>(r->element[0]->integer);
  page.more = r->element[2]->integer != 0;
  const redisReply* nicks = r->element[1];
  if (nicks->elements > page.count) return refused<ClusterMemberPage>(r);
  for (std::size_t i = 0; i < nicks->elements; ++i) {
    std::string nick = text_of(nicks->element[i]);
    if (is_string(nicks->element[i]) && valid_nick(nick)) page.nicks.push_back(std::move(nick));
  }
  return {std::move(page), {}};
}

Read<std::vector<ClusterRoomCount>> read_room_counts(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY) return refused<std::vector<ClusterRoomCount>>(r);
  std::vector<ClusterRoomCount> counts;
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    std::string room = text_of(r->element[i]);
    const redisReply* second = r->element[i + 1];
    if (!is_string(r->element[i]) || !valid_room_name(room)) continue;
    if (is_count(second)) {
      counts.push_back({std::move(room), static_cast<std::size_t>(second->integer), std::nullopt});
    } else if (is_string(second)) {
      // The topic of the room just counted (the function lists it right after its count).
      if (!counts.empty() && counts.back().room == room) counts.back().topic = text_of(second);
    }
  }
  return {std::move(counts), {}};
}

namespace {
// The strings of an array that `keep` accepts, in order.
template <class Keep>
std::vector<std::string> strings_of(const redisReply* array, Keep keep) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < array->elements; ++i) {
    if (!is_string(array->element[i])) continue;
    std::string s = text_of(array->element[i]);
    if (keep(s)) out.push_back(std::move(s));
  }
  return out;
}
}  // namespace

Read<Beat> read_beat(const redisReply* r) {
  if (!is_array(r, 3) || !is_count(r->element[0]) || r->element[0]->integer > 1 ||
      r->element[1]->type != REDIS_REPLY_ARRAY || r->element[2]->type != REDIS_REPLY_ARRAY)
    return refused<Beat>(r);
  Beat beat;
  beat.fresh = r->element[0]->integer == 1;
  beat.lost = strings_of(r->element[1], [](const std::string& n) { return valid_nick(n); });
  beat.expired = strings_of(r->element[2], [](const std::string& n) { return valid_node(n); });
  return {std::move(beat), {}};
}

Read<std::vector<std::string>> read_nicks(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY) return refused<std::vector<std::string>>(r);
  return {strings_of(r, [](const std::string& n) { return valid_nick(n); }), {}};
}

Read<long long> read_integer(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_INTEGER) return refused<long long>(r);
  return {r->integer, {}};
}

Read<RedisDurability> read_durability(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) return refused<RedisDurability>(r);
  RedisDurability d;
  for (std::size_t i = 0; i < r->elements; i += 2) {
    if (!is_string(r->element[i]) || !is_string(r->element[i + 1])) return refused<RedisDurability>(r);
    const std::string name = text_of(r->element[i]);
    if (name == "appendonly") d.appendonly = text_of(r->element[i + 1]);
    else if (name == "appendfsync") d.appendfsync = text_of(r->element[i + 1]);
  }
  if (d.appendonly.empty() || d.appendfsync.empty()) return {std::nullopt, "Redis did not name appendonly and appendfsync"};
  return {std::move(d), {}};
}

}  // namespace roomd::redis_replies
