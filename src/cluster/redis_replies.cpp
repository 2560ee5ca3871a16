// Reading Redis' replies for the cluster client (redis_replies.hpp).
#include "roomd/cluster/redis_replies.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

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

Read<RoomState> read_state(const redisReply* r) {
  if (!is_array(r, 3) || r->element[0]->type != REDIS_REPLY_INTEGER || !is_string(r->element[1]) ||
      r->element[2]->type != REDIS_REPLY_ARRAY)
    return refused<RoomState>(r);
  const long long seq = r->element[0]->integer;
  RoomState state{static_cast<std::uint64_t>(seq), text_of(r->element[1]), {}};
  if (seq < 0 || !valid_epoch(state.epoch)) return refused<RoomState>(r);
  const redisReply* lines = r->element[2];
  state.recent.reserve(lines->elements);
  for (std::size_t i = 0; i < lines->elements; ++i) state.recent.push_back(text_of(lines->element[i]));
  return {std::move(state), {}};
}

std::optional<Push> read_push(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return std::nullopt;
  const std::string kind = text_of(r->element[0]);
  const std::string name = text_of(r->element[1]);
  // "roomd:{ROOM}" -> ROOM
  if (!name.starts_with("roomd:{") || !name.ends_with("}")) return std::nullopt;
  Push push{Push::Kind::subscribed, name.substr(7, name.size() - 8), {}};
  if (kind == "subscribe") return push;
  if (kind != "message" || !is_string(r->element[2])) return std::nullopt;
  auto message = read_message(std::string_view(r->element[2]->str, r->element[2]->len));
  if (!message) return std::nullopt;
  push.kind = Push::Kind::message;
  push.message = std::move(*message);
  return push;
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

}  // namespace roomd::redis_replies
