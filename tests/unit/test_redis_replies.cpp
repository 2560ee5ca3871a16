// What the cluster client makes of Redis' replies (cluster/redis_replies): replies built from
// RESP bytes by hiredis' own reader, well-formed and not.
#include <hiredis/hiredis.h>

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "roomd/cluster/redis_replies.hpp"

using namespace roomd::redis_replies;

namespace {

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// The one complete reply in `resp`, as hiredis reads it off a socket.
ReplyPtr reply(const std::string& resp) {
  std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(), redisReaderFree);
  REQUIRE(reader);
  REQUIRE(redisReaderFeed(reader.get(), resp.data(), resp.size()) == REDIS_OK);
  void* out = nullptr;
  REQUIRE(redisReaderGetReply(reader.get(), &out) == REDIS_OK);
  REQUIRE(out != nullptr);
  return ReplyPtr(static_cast<redisReply*>(out));
}

std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }

const std::string kLine = "{\"op\":\"message\",\"seq\":7}\n";

}  // namespace

TEST_CASE("redis replies: seqs are 1..2^63-1 in plain digits") {
  CHECK(parse_seq("1") == 1u);
  CHECK(parse_seq("9223372036854775807") == kMaxSeq);
  CHECK(parse_seq("007") == 7u);
  CHECK_FALSE(parse_seq("0"));
  CHECK_FALSE(parse_seq("9223372036854775808"));
  CHECK_FALSE(parse_seq("18446744073709551615"));  // its next would be 0
  CHECK_FALSE(parse_seq("99999999999999999999999"));
  CHECK_FALSE(parse_seq("-1"));
  CHECK_FALSE(parse_seq("+1"));
  CHECK_FALSE(parse_seq(""));
  CHECK_FALSE(parse_seq("12a"));
  CHECK_FALSE(parse_seq(" 12"));
}

TEST_CASE("redis replies: roomd_say's [seq, epoch] and a repeat's [seq, epoch, 1]") {
  auto ok = read_say(reply("*2\r\n:42\r\n" + bulk("00ff00ff00ff00ff")).get());
  REQUIRE(ok);
  CHECK(ok.value->seq == 42);
  CHECK(ok.value->epoch == "00ff00ff00ff00ff");
  CHECK_FALSE(ok.value->duplicate);

  auto repeat = read_say(reply("*3\r\n:41\r\n" + bulk("00ff00ff00ff00ff") + ":1\r\n").get());
  REQUIRE(repeat);
  CHECK(repeat.value->seq == 41);
  CHECK(repeat.value->duplicate);

  auto err = read_say(reply("-ERR Function not found\r\n").get());
  CHECK_FALSE(err);
  CHECK(err.error == "ERR Function not found");

  for (const std::string& odd : {
           std::string("*2\r\n:0\r\n") + bulk("e"),                      // seq 0 is never a message's
           std::string("*2\r\n:-5\r\n") + bulk("e"),                     // negative
           std::string("*2\r\n:-9223372036854775808\r\n") + bulk("e"),   // the most negative
           std::string("*2\r\n") + bulk("42") + bulk("e"),               // seq as a string
           std::string("*2\r\n:42\r\n$-1\r\n"),                          // nil epoch
           std::string("*2\r\n:42\r\n:7\r\n"),                           // integer epoch
           std::string("*2\r\n:42\r\n$0\r\n\r\n"),                       // empty epoch
           std::string("*2\r\n:42\r\n") + bulk("two words"),             // an epoch no message can carry
           std::string("*1\r\n:42\r\n"),                                 // one element
           std::string("*3\r\n:42\r\n") + bulk("e") + bulk("x"),         // a third that is no flag
           std::string("*3\r\n:42\r\n") + bulk("e") + ":0\r\n",         // a flag that is not 1
           std::string("*3\r\n:42\r\n") + bulk("e") + ":2\r\n",
           std::string("*4\r\n:42\r\n") + bulk("e") + ":1\r\n:1\r\n",  // four
           std::string("*0\r\n"), std::string("*-1\r\n"), std::string("$-1\r\n"), std::string(":42\r\n"),
           std::string("+OK\r\n"), std::string("*2\r\n*0\r\n") + bulk("e")}) {
    CAPTURE(odd);
    auto r = read_say(reply(odd).get());
    CHECK_FALSE(r);
    CHECK(r.error == "odd reply");
  }
  CHECK(read_say(nullptr).error == "no reply");
}

TEST_CASE("redis replies: roomd_state's [seq, epoch, lines]") {
  auto ok = read_state(reply("*3\r\n:7\r\n" + bulk("abc") + "*2\r\n" + bulk(kLine) + "$-1\r\n").get());
  REQUIRE(ok);
  CHECK(ok.value->last_seq == 7);
  CHECK(ok.value->epoch == "abc");
  // Lines as they are, a nil one as empty: the router keeps those that lead up to the seq.
  CHECK(ok.value->recent == std::vector<std::string>{kLine, ""});

  auto fresh = read_state(reply("*3\r\n:0\r\n" + bulk("abc") + "*0\r\n").get());
  REQUIRE(fresh);  // a room nobody has said anything in yet
  CHECK(fresh.value->last_seq == 0);
  CHECK(fresh.value->recent.empty());

  CHECK(read_state(reply("-BUSY Redis is busy\r\n").get()).error == "BUSY Redis is busy");
  for (const std::string& odd : {
           std::string("*3\r\n:-1\r\n") + bulk("e") + "*0\r\n",
           std::string("*3\r\n") + bulk("7") + bulk("e") + "*0\r\n",
           std::string("*3\r\n:7\r\n$-1\r\n*0\r\n"),
           std::string("*3\r\n:7\r\n") + bulk("") + "*0\r\n",
           std::string("*3\r\n:7\r\n") + bulk("e") + "$-1\r\n",  // lines nil
           std::string("*3\r\n:7\r\n") + bulk("e") + "*-1\r\n",  // a nil array is nil
           std::string("*3\r\n:7\r\n") + bulk("e") + bulk(kLine),
           std::string("*2\r\n:7\r\n") + bulk("e"),
           std::string("*4\r\n:7\r\n") + bulk("e") + "*0\r\n:1\r\n",
           std::string("*0\r\n")}) {
    CAPTURE(odd);
    auto r = read_state(reply(odd).get());
    CHECK_FALSE(r);
    CHECK(r.error == "odd reply");
  }
}

TEST_CASE("redis replies: a subscriber's pushes") {
  auto message = read_push(reply("*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + bulk("12 ep " + kLine)).get());
  REQUIRE(message);
  CHECK(message->kind == Push::Kind::message);
  CHECK(message->room == "lobby");
  CHECK(message->message == Message{12, "ep", kLine});

  auto subscribed = read_push(reply("*3\r\n" + bulk("subscribe") + bulk("roomd:{a b}") + ":1\r\n").get());
  REQUIRE(subscribed);
  CHECK(subscribed->kind == Push::Kind::subscribed);
  CHECK(subscribed->room == "a b");

  // A room whose name has braces is still the part between the first "{" and the last "}".
  auto braces = read_push(reply("*3\r\n" + bulk("subscribe") + bulk("roomd:{x}y}") + ":1\r\n").get());
  REQUIRE(braces);
  CHECK(braces->room == "x}y");

  for (const std::string& ignored : {
           "*3\r\n" + bulk("unsubscribe") + bulk("roomd:{lobby}") + ":0\r\n",
           "*4\r\n" + bulk("pmessage") + bulk("roomd:*") + bulk("roomd:{lobby}") + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("other:{lobby}") + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby") + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + ":5\r\n",
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + "$-1\r\n",
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + "*1\r\n" + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + bulk("0 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + bulk("x e " + kLine),
           "*3\r\n" + bulk("message") + "$-1\r\n" + bulk("1 e " + kLine),
           "*3\r\n:1\r\n" + bulk("roomd:{lobby}") + bulk("1 e " + kLine),
           "*2\r\n" + bulk("message") + bulk("roomd:{lobby}"),
           std::string("*-1\r\n"), std::string("*0\r\n"), bulk("message"), std::string("-ERR no\r\n")}) {
    CAPTURE(ignored);
    CHECK_FALSE(read_push(reply(ignored).get()));
  }
  CHECK_FALSE(read_push(nullptr));
}

TEST_CASE("redis replies: a message's payload \"SEQ EPOCH LINE\"") {
  CHECK(read_message("3 ep " + kLine) == Message{3, "ep", kLine});
  // The line may hold spaces; only the first two separate.
  CHECK(read_message("3 ep {\"a\": 1}\n") == Message{3, "ep", "{\"a\": 1}\n"});
  CHECK_FALSE(read_message(""));
  CHECK_FALSE(read_message("3"));
  CHECK_FALSE(read_message("3 ep"));
  CHECK_FALSE(read_message("3 ep "));                // no line
  CHECK_FALSE(read_message("3  " + kLine));          // no epoch
  CHECK_FALSE(read_message(" ep " + kLine));         // no seq
  CHECK_FALSE(read_message("0 ep " + kLine));
  CHECK_FALSE(read_message("-3 ep " + kLine));
  CHECK_FALSE(read_message("3x ep " + kLine));
  CHECK_FALSE(read_message("18446744073709551615 ep " + kLine));
  CHECK_FALSE(read_message("3 ep {\"a\":1}"));       // no newline
  CHECK_FALSE(read_message("3 ep [1]\n"));           // not an object
  CHECK_FALSE(read_message("3 ep {}\n\n"));
}

TEST_CASE("redis replies: XRANGE entries for a gap fill") {
  auto entry = [](const std::string& id, const std::string& line) {
    return "*2\r\n" + bulk(id) + "*2\r\n" + bulk("m") + bulk(line);
  };
  auto ok = read_range(reply("*3\r\n" + entry("5-0", kLine) + entry("6-0", kLine) + entry("9", kLine)).get());
  REQUIRE(ok);
  CHECK(ok.value->held == 3);
  CHECK(ok.value->entries == std::vector<StreamEntry>{{5, kLine}, {6, kLine}, {9, kLine}});

  auto empty = read_range(reply("*0\r\n").get());
  REQUIRE(empty);
  CHECK(empty.value->held == 0);
  CHECK(empty.value->entries.empty());

  // Malformed entries are skipped, but counted as held (a full batch means read on).
  auto skipped = read_range(reply("*12\r\n" + entry("0-1", kLine) + entry("-1-0", kLine) + entry("x-0", kLine) +
                                  entry("18446744073709551615-0", kLine) + entry("7-0", "not json\n") +
                                  "*2\r\n:8\r\n*2\r\n" + bulk("m") + bulk(kLine) +  // an integer id
                                  "*2\r\n" + bulk("8-0") + "$-1\r\n" +              // nil fields
                                  "*2\r\n" + bulk("8-0") + "*1\r\n" + bulk("m") +    // a field without value
                                  "*3\r\n" + bulk("8-0") + "*2\r\n" + bulk("m") + bulk(kLine) + ":1\r\n" +
                                  "$-1\r\n" + ":8\r\n" + entry("8-0", kLine))
                                .get());
  REQUIRE(skipped);
  CHECK(skipped.value->held == 12);
  CHECK(skipped.value->entries == std::vector<StreamEntry>{{8, kLine}});

  auto err = read_range(reply("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n").get());
  CHECK_FALSE(err);
  CHECK(err.error.starts_with("WRONGTYPE"));
  CHECK(read_range(reply("$-1\r\n").get()).error == "odd reply");
  CHECK(read_range(reply(":3\r\n").get()).error == "odd reply");
  CHECK(read_range(nullptr).error == "no reply");
}
