// Redis' replies as the cluster client reads them (cluster/redis_replies): RESP bytes fed to
// hiredis' own reader in fuzzer-chosen splits, and every complete reply given to every
// reading (a say's result, a batch of says' results, a state, a subscriber push (a batch of
// messages too), an XRANGE answer, a members read, a who page, room counts, a beat, a nick
// list, an integer, a CONFIG GET of Redis' persistence).
// Input: [split count][split sizes...][RESP bytes...]
//
// Checked: no crash, undefined behaviour or leak; what is accepted holds to the documented
// constraints (seqs 1..2^63-1, a state's from 0, its base no more than its seq; epochs non-empty
// words; lines one JSON object and its newline; a range's entries no more than it held; a
// persistence names both settings; a refusal says why) and reads back
// the same from the RESP Redis would send for it; and **differentially**, the same bytes fed
// whole give the same replies, read the same, and the same reader error.
//
// hiredis allocates a multi-bulk's element vector from its header, before any element has
// come: up to 2^31-1 pointers, 16 GB (Debian's 0.14.1 refuses larger counts, its
// CVE-2021-32765 patch), which libFuzzer's malloc limit reports as out of memory. Inputs
// with a multi-bulk count of five digits or more are therefore skipped: that is hiredis
// trusting its server, not roomd's reading.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "roomd/base/names.hpp"
#include "roomd/cluster/redis_replies.hpp"

namespace {

namespace rr = roomd::redis_replies;

struct ReaderFree {
  void operator()(redisReader* r) const { redisReaderFree(r); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// A multi-bulk header ('*', a sign, digits) with 5 digits or more anywhere in the bytes.
bool huge_multibulk(std::string_view bytes) {
  for (std::size_t i = bytes.find('*'); i != std::string_view::npos; i = bytes.find('*', i + 1)) {
    std::size_t j = i + 1;
    if (j < bytes.size() && (bytes[j] == '-' || bytes[j] == '+')) ++j;
    std::size_t digits = 0;
    while (j + digits < bytes.size() && bytes[j + digits] >= '0' && bytes[j + digits] <= '9') ++digits;
    if (digits >= 5) return true;
  }
  return false;
}

std::string field(std::string_view s) { return std::to_string(s.size()) + ":" + std::string(s) + ";"; }

std::string bulk(std::string_view s) { return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n"; }

// The one reply in `resp` (made by this harness, so well-formed).
ReplyPtr parse_one(const std::string& resp) {
  std::unique_ptr<redisReader, ReaderFree> reader(redisReaderCreate());
  void* out = nullptr;
  if (redisReaderFeed(reader.get(), resp.data(), resp.size()) != REDIS_OK ||
      redisReaderGetReply(reader.get(), &out) != REDIS_OK || !out)
    fuzz::fail("the harness's own RESP did not parse", resp);
  return ReplyPtr(static_cast<redisReply*>(out));
}

void check_refusal(const std::string& error) { FUZZ_CHECK(!error.empty(), error); }

void check_seq(std::uint64_t seq, std::string_view what) { FUZZ_CHECK(seq >= 1 && seq <= rr::kMaxSeq, what); }

// Every reading of one reply, checked, written as one text to compare.
std::string interpret(const redisReply* r) {
  std::string out;

  auto say = rr::read_say(r);
  if (say) {
    check_seq(say.value->seq, "say");
    FUZZ_CHECK(rr::valid_epoch(say.value->epoch), say.value->epoch);
    FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == (say.value->duplicate ? 3u : 2u) &&
                   static_cast<std::uint64_t>(r->element[0]->integer) == say.value->seq,
               "say");
    auto again = rr::read_say(parse_one((say.value->duplicate ? "*3\r\n:" : "*2\r\n:") + std::to_string(say.value->seq) +
                                        "\r\n" + bulk(say.value->epoch) + (say.value->duplicate ? ":1\r\n" : ""))
                                  .get());
    FUZZ_CHECK(again && *again.value == *say.value, say.value->epoch);
    out += "say ok " + std::to_string(say.value->seq) + " " + field(say.value->epoch) +
           (say.value->duplicate ? " duplicate" : "");
  } else {
    check_refusal(say.error);
    out += "say no " + field(say.error);
  }

  // A batch's answer, for as many says as its pairs (one when it has none to count).
  const std::size_t says = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                                   r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements >= 2
                               ? r->element[1]->elements / 2
                               : 1;
  auto batch = rr::read_say_batch(r, says);
  if (batch) {
    FUZZ_CHECK(batch.value->size() == says, "say batch");
    std::string resp = "*2\r\n" + bulk(batch.value->front().epoch) + "*" + std::to_string(2 * says) + "\r\n";
    out += "batch ok";
    for (const auto& said : *batch.value) {
      check_seq(said.seq, "say batch");
      FUZZ_CHECK(rr::valid_epoch(said.epoch) && said.epoch == batch.value->front().epoch, said.epoch);
      resp += ":" + std::to_string(said.seq) + "\r\n:" + (said.duplicate ? "1" : "0") + "\r\n";
      out += " " + std::to_string(said.seq) + (said.duplicate ? "d" : "");
    }
    // As the function answers it, it reads the same.
    auto again = rr::read_say_batch(parse_one(resp).get(), says);
    FUZZ_CHECK(again && *again.value == *batch.value, resp);
    out += " " + field(batch.value->front().epoch);
  } else {
    check_refusal(batch.error);
    out += "batch no " + field(batch.error);
  }

  auto state = rr::read_state(r);
  if (state) {
    FUZZ_CHECK(state.value->last_seq <= rr::kMaxSeq, "state");
    FUZZ_CHECK(rr::valid_epoch(state.value->epoch), state.value->epoch);
    FUZZ_CHECK(state.value->recent.size() == r->element[2]->elements, "state lines");
    FUZZ_CHECK(state.value->base <= state.value->last_seq, "state base");
    out += "state ok " + std::to_string(state.value->last_seq) + " " + std::to_string(state.value->base) + " " +
           field(state.value->epoch);
    for (const auto& line : state.value->recent) out += field(line);
  } else {
    check_refusal(state.error);
    out += "state no " + field(state.error);
  }

  auto push = rr::read_push(r);
  if (push) {
    FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements >= 3, "push");
    const std::string channel = rr::text_of(r->element[1]);
    // A whisper on a node's own channel; everything else on its room's.
    FUZZ_CHECK(push->kind == rr::Push::Kind::whisper ? channel.starts_with("roomd:node:")
                                                     : channel == "roomd:{" + push->room + "}",
               channel);
    if (push->kind == rr::Push::Kind::whisper) {
      const roomd::ClusterWhisper& w = push->whisper;
      FUZZ_CHECK(roomd::valid_nick(w.from) && roomd::valid_nick(w.to) && roomd::fold_case(w.to) == w.to, w.to);
      // As the sender's node writes it, it reads the same.
      const std::string payload = w.from + " " + std::to_string(w.ts) + " " + w.to + " " + w.text;
      auto again = rr::read_push(parse_one("*3\r\n" + bulk("message") + bulk(channel) + bulk(payload)).get());
      FUZZ_CHECK(again && *again == *push, payload);
      out += "whisper " + field(payload);
    } else if (push->kind == rr::Push::Kind::message) {
      const rr::Message& m = push->message;
      check_seq(m.seq, "message");
      FUZZ_CHECK(rr::valid_epoch(m.epoch), m.epoch);
      FUZZ_CHECK(rr::plausible_line(m.line), m.line);
      // As the function publishes it, it reads the same.
      const std::string payload = std::to_string(m.seq) + " " + m.epoch + " " + m.line;
      auto again = rr::read_push(parse_one("*3\r\n" + bulk("message") + bulk(channel) + bulk(payload)).get());
      FUZZ_CHECK(again && *again == *push, payload);
      out += "message " + field(push->room) + std::to_string(m.seq) + " " + field(m.epoch) + field(m.line);
    } else if (push->kind == rr::Push::Kind::batch) {
      FUZZ_CHECK(!push->batch.empty(), "batch");
      const std::string& epoch = push->batch.front().epoch;
      FUZZ_CHECK(rr::valid_epoch(epoch), epoch);
      std::string payload = "b " + epoch + "\n";
      out += "batch " + field(push->room) + field(epoch);
      std::uint64_t last = 0;
      for (const rr::Message& m : push->batch) {
        check_seq(m.seq, "batch");
        FUZZ_CHECK(m.seq > last && m.epoch == epoch, "batch order");
        FUZZ_CHECK(rr::plausible_line(m.line), m.line);
        last = m.seq;
        payload += std::to_string(m.seq) + " " + std::to_string(m.line.size()) + " " + m.line;
        out += std::to_string(m.seq) + " " + field(m.line);
      }
      // As the function publishes it, it reads the same.
      auto again = rr::read_push(parse_one("*3\r\n" + bulk("message") + bulk(channel) + bulk(payload)).get());
      FUZZ_CHECK(again && *again == *push, payload);
    } else if (push->kind == rr::Push::Kind::presence) {
      const rr::Presence& p = push->presence;
      check_seq(p.version, "presence");
      FUZZ_CHECK(rr::valid_node(p.node), p.node);
      FUZZ_CHECK(!p.nicks.empty(), "presence");
      std::string payload = "p " + std::to_string(p.version) + " " + p.node + " " +
                            (p.kind == roomd::ClusterPresence::Kind::join    ? "join"
                             : p.kind == roomd::ClusterPresence::Kind::leave ? "leave"
                             : p.kind == roomd::ClusterPresence::Kind::topic ? "topic"
                                                                             : "nick");
      for (const auto& n : p.nicks) {
        FUZZ_CHECK(roomd::valid_nick(n), n);
        payload += " " + n;
      }
      if (p.kind == roomd::ClusterPresence::Kind::topic) {
        FUZZ_CHECK(p.nicks.size() == 1, "topic");
        payload += " " + p.topic;
      } else {
        FUZZ_CHECK(p.topic.empty(), "presence");
      }
      auto again = rr::read_push(parse_one("*3\r\n" + bulk("message") + bulk(channel) + bulk(payload)).get());
      FUZZ_CHECK(again && *again == *push, payload);
      out += "presence " + field(push->room) + field(payload);
    } else {
      out += "subscribed " + field(push->room);
    }
  } else {
    out += "no push;";
  }

  auto range = rr::read_range(r);
  if (range) {
    FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && range.value->held == r->elements, "range");
    FUZZ_CHECK(range.value->entries.size() <= range.value->held, "range");
    out += "range " + std::to_string(range.value->held);
    for (const auto& e : range.value->entries) {
      check_seq(e.seq, "entry");
      FUZZ_CHECK(rr::plausible_line(e.line), e.line);
      out += " " + std::to_string(e.seq) + " " + field(e.line);
    }
  } else {
    check_refusal(range.error);
    FUZZ_CHECK(!r || r->type != REDIS_REPLY_ARRAY, "range refused an array");
    out += "range no " + field(range.error);
  }
  auto members = rr::read_members(r, "self");
  if (members) {
    for (const auto& n : members.value->others) FUZZ_CHECK(roomd::valid_nick(n), n);
    out += "members " + std::to_string(members.value->version) + " " + std::to_string(members.value->others.size());
  } else {
    check_refusal(members.error);
  }
  auto topic = rr::read_topic(r);
  if (topic) {
    if (topic.value->topic) FUZZ_CHECK(roomd::valid_nick(topic.value->topic->by), topic.value->topic->by);
    out += " topic " + std::to_string(topic.value->version) + " " + (topic.value->topic ? field(topic.value->topic->text) : "none");
  } else {
    check_refusal(topic.error);
  }
  auto who = rr::read_who(r);
  if (who) {
    FUZZ_CHECK(who.value->nicks.size() <= who.value->count, "who");
    for (const auto& n : who.value->nicks) FUZZ_CHECK(roomd::valid_nick(n), n);
    out += " who " + std::to_string(who.value->count) + " " + std::to_string(who.value->nicks.size());
  } else {
    check_refusal(who.error);
  }
  auto counts = rr::read_room_counts(r);
  if (counts) {
    for (const auto& c : *counts.value) FUZZ_CHECK(roomd::valid_room_name(c.room), c.room);
    out += " rooms " + std::to_string(counts.value->size());
  } else {
    check_refusal(counts.error);
  }
  auto beat = rr::read_beat(r);
  if (beat) {
    for (const auto& n : beat.value->lost) FUZZ_CHECK(roomd::valid_nick(n), n);
    for (const auto& n : beat.value->expired) FUZZ_CHECK(rr::valid_node(n), n);
    out += " beat " + std::to_string(beat.value->fresh) + " " + std::to_string(beat.value->lost.size()) + " " +
           std::to_string(beat.value->expired.size());
  } else {
    check_refusal(beat.error);
  }
  auto nicks = rr::read_nicks(r);
  if (nicks) out += " nicks " + std::to_string(nicks.value->size());
  else check_refusal(nicks.error);
  auto integer = rr::read_integer(r);
  if (integer) out += " integer " + std::to_string(*integer.value);
  else check_refusal(integer.error);

  auto durability = rr::read_durability(r);
  if (durability) {
    FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements % 2 == 0, "durability");
    FUZZ_CHECK(!durability.value->appendonly.empty() && !durability.value->appendfsync.empty(), "durability");
    out += "durability " + field(durability.value->appendonly) + field(durability.value->appendfsync);
  } else {
    check_refusal(durability.error);
    out += "durability no " + field(durability.error);
  }
  return out;
}

// Feeds the bytes in the given pieces, taking every reply that completes; the last entry is
// the reader's error, if any.
std::vector<std::string> read_all(std::string_view bytes, const std::vector<std::size_t>& sizes) {
  std::unique_ptr<redisReader, ReaderFree> reader(redisReaderCreate());
  std::vector<std::string> replies;
  bool failed = false;
  fuzz::in_chunks(bytes, sizes, [&](std::string_view piece) {
    if (failed) return;
    if (redisReaderFeed(reader.get(), piece.data(), piece.size()) != REDIS_OK) {
      failed = true;
      return;
    }
    for (;;) {
      void* out = nullptr;
      if (redisReaderGetReply(reader.get(), &out) != REDIS_OK) {
        failed = true;
        return;
      }
      if (!out) return;
      ReplyPtr reply(static_cast<redisReply*>(out));
      replies.push_back(interpret(reply.get()));
    }
  });
  if (failed) replies.push_back(std::string("reader error: ") + reader->errstr);
  return replies;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  const auto sizes = in.splits();
  const std::string_view bytes = in.rest();
  if (huge_multibulk(bytes)) return 0;
  const auto split = read_all(bytes, sizes);
  const auto whole = sizes.empty() ? split : read_all(bytes, {});
  FUZZ_CHECK(split.size() == whole.size(), bytes);
  for (std::size_t i = 0; i < split.size(); ++i) FUZZ_CHECK(split[i] == whole[i], split[i] + " | " + whole[i]);
  return 0;
}
