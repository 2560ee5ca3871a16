// roomd's own TlsChannel (net/tls), as a server, against an in-process OpenSSL client over
// memory: the two complete a real handshake with a certificate made at start, then the
// fuzzer decides what the client sends, where its bytes are cut as they reach the channel,
// and what is corrupted or slipped in on the way.
//
// Input: [flags][client][corruption kind][xor or length][position: 2 bytes]
//        [split count][split sizes...][garbage bytes, for an insertion][messages: [len][bytes]...]
//   flags: bits 0-1 the mode: 0, 1 records (a corruption, if any, in the client's records
//          after the handshake), 2 handshake (the corruption in the client's handshake
//          bytes), 3 garbage (the bytes after the split sizes are the client's first bytes);
//          bit 2 the channel's set_busy flips after every piece; bit 3 the client sends
//          KeyUpdates (TLS 1.3); bit 4 the client ends with close_notify; bit 5 the channel
//          queues its own close_notify at the end; bit 6 one message of over 16 KB (two
//          records); bit 7 the server wants TLS 1.3 (min_version = "1.3").
//   client: which of 7 client set-ups (TLS 1.2: AES-GCM, ChaCha20, CBC with and without
//          encrypt-then-MAC; TLS 1.3: three suites).
//
// Checked, whatever comes: no crash; no plaintext before the handshake is done; once the
// channel has failed, error() says why and nothing more comes out of it (no plaintext, no
// output); encrypt() works while the channel is ok. Records mode: the plaintext is exactly
// the client's data up to the first corrupted record (byte for byte the records before it,
// none of it or after it), and a corruption ends the channel failed (if it is still waiting
// for the rest of a record whose length was changed, zeros complete it); no corruption: all
// the data, in order, and the channel ok (or closed, after the client's close_notify). A
// handshake that fails (the server wants 1.3, the client offers only 1.2; or a corrupted
// handshake) ends in a refusal: failed, with an error. Garbage mode: never a handshake, and
// after the garbage and enough zeros to end any record, a refusal.
//
// Deterministic: OpenSSL's randomness comes from a generator seeded from the input (the
// legacy RAND_METHOD hook, which OpenSSL 3.0 still consults first), and the certificate's
// dates are fixed, so an input replays the same bytes.
#define OPENSSL_SUPPRESS_DEPRECATED  // RAND_set_rand_method: deprecated in 3.0, still honoured

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz_input.hpp"
#include "roomd/net/tls.hpp"

namespace {

// ---- randomness from the input ------------------------------------------------------------

std::uint64_t rng_state = 0;

std::uint64_t next_random() {  // splitmix64
  std::uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
int random_bytes(unsigned char* buf, int num) {
  for (int i = 0; i < num; ++i) buf[i] = static_cast<unsigned char>(next_random());
  return 1;
}
int random_seed(const void*, int) { return 1; }
int random_add(const void*, int, double) { return 1; }
int random_status() { return 1; }
const RAND_METHOD kInputRandom = {random_seed, random_bytes, nullptr, random_add, random_bytes, random_status};

void seed_from(const std::uint8_t* data, std::size_t size) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001b3ULL;
  rng_state = h;
}

// ---- the world: two server contexts (roomd's, from files), seven client contexts --------

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using ClientCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;
using ClientSsl = std::unique_ptr<SSL, SslFree>;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "tls_record: %s\n", what);
  ERR_print_errors_fp(stderr);
  std::abort();
}

// A self-signed P-256 certificate and its key, written to `dir`.
void make_certificate(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  if (!key || !cert) die("cannot make a key");
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  ASN1_TIME_set_string(X509_getm_notBefore(cert), "20260101000000Z");
  ASN1_TIME_set_string(X509_getm_notAfter(cert), "20360101000000Z");
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("roomd-fuzz"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  if (X509_sign(cert, key, EVP_sha256()) <= 0) die("cannot sign the certificate");
  FILE* c = std::fopen(cert_path.c_str(), "w");
  FILE* k = std::fopen(key_path.c_str(), "w");
  if (!c || !k || PEM_write_X509(c, cert) != 1 || PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    die("cannot write the certificate");
  std::fclose(c);
  std::fclose(k);
  X509_free(cert);
  EVP_PKEY_free(key);
}

struct World {
  std::shared_ptr<roomd::TlsContext> server12;  // min_version 1.2 (roomd's default)
  std::shared_ptr<roomd::TlsContext> server13;  // min_version 1.3
  std::vector<ClientCtx> clients;
  std::vector<bool> client_is_13;
};

ClientCtx client_context(int max_version, const char* ciphers12, const char* suites13, bool no_etm) {
  ClientCtx ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) die("cannot make a client context");
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  if (SSL_CTX_set_cipher_list(ctx.get(), ciphers12) != 1 || SSL_CTX_set_ciphersuites(ctx.get(), suites13) != 1)
    die("cannot set the client's ciphers");
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  if (no_etm) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_ENCRYPT_THEN_MAC);
  return ctx;
}

const World& world() {
  static const World* w = [] {
    if (RAND_set_rand_method(&kInputRandom) != 1) die("cannot set the random method");
    rng_state = 1;
    char dir[] = "/tmp/roomd-fuzz-tls-XXXXXX";
    if (!mkdtemp(dir)) die("cannot make a temporary folder");
    const std::string cert = std::string(dir) + "/cert.pem", key = std::string(dir) + "/key.pem";
    make_certificate(cert, key);
    auto* made = new World;
    for (const char* min_version : {"1.2", "1.3"}) {
      roomd::TlsFiles files;
      files.cert = cert;
      files.key = key;
      files.min_version = min_version;
      auto loaded = roomd::TlsContext::load(roomd::TlsContext::Side::server, files);
      if (auto* error = std::get_if<std::string>(&loaded)) die(error->c_str());
      (min_version == std::string("1.2") ? made->server12 : made->server13) =
          std::get<std::shared_ptr<roomd::TlsContext>>(loaded);
    }
    std::remove(cert.c_str());
    std::remove(key.c_str());
    rmdir(dir);
    const char* kAll13 = "TLS_AES_128_GCM_SHA256";
    made->clients.push_back(client_context(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", kAll13, false));
    made->clients.push_back(client_context(TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", kAll13, false));
    made->clients.push_back(client_context(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256", kAll13, false));
    made->clients.push_back(client_context(TLS1_2_VERSION, "ECDHE-ECDSA-AES256-SHA384", kAll13, true));
    made->clients.push_back(client_context(TLS1_3_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256", false));
    made->clients.push_back(client_context(TLS1_3_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_CHACHA20_POLY1305_SHA256", false));
    made->clients.push_back(client_context(TLS1_3_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_256_GCM_SHA384", false));
    made->client_is_13 = {false, false, false, false, true, true, true};
    return made;
  }();
  return *w;
}

// ---- the client ---------------------------------------------------------------------------

struct Client {
  ClientSsl ssl;
  BIO* in = nullptr;   // owned by ssl
  BIO* out = nullptr;  // owned by ssl

  explicit Client(SSL_CTX* ctx) : ssl(SSL_new(ctx)) {
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    if (!ssl || !in || !out) die("cannot make the client");
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    SSL_set_bio(ssl.get(), in, out);
    SSL_set_connect_state(ssl.get());
  }
  std::string take() {
    std::string s(BIO_ctrl_pending(out), '\0');
    if (!s.empty()) s.resize(static_cast<std::size_t>(std::max(0, BIO_read(out, s.data(), static_cast<int>(s.size())))));
    return s;
  }
  void give(const std::string& bytes) {
    if (!bytes.empty()) BIO_write(in, bytes.data(), static_cast<int>(bytes.size()));
  }
  // One handshake step: true while it goes on or is done, false once it failed.
  bool step() {
    ERR_clear_error();
    const int rc = SSL_do_handshake(ssl.get());
    const int err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl.get(), rc);
    ERR_clear_error();
    return rc == 1 || err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
  }
  bool done() const { return SSL_is_init_finished(ssl.get()) == 1; }
};

// ---- the channel, fed in pieces, checked after each ------------------------------------

struct Channel {
  roomd::TlsChannel tls;
  const std::vector<std::size_t>& sizes;
  bool flip_busy;
  std::size_t next_size = 0;
  std::string plain;       // all that came out
  std::string to_client;   // its output not yet handed to the client
  bool closed = false;     // the client's close_notify came
  bool shut = false;       // we queued our own

  Channel(std::shared_ptr<roomd::TlsContext> context, const std::vector<std::size_t>& s, bool busy)
      : tls(std::move(context)), sizes(s), flip_busy(busy) {}

  void feed(std::string_view bytes) {
    while (!bytes.empty()) {
      std::size_t n = bytes.size();
      if (!sizes.empty()) n = std::min(n, sizes[next_size++ % sizes.size()]);
      feed_piece(bytes.substr(0, n));
      bytes.remove_prefix(n);
    }
  }

  void feed_piece(std::string_view piece) {
    const bool was_failed = tls.failed();
    const std::size_t before = plain.size();
    const auto status = tls.feed(piece, plain);
    if (was_failed) {
      FUZZ_CHECK(status == roomd::TlsChannel::Status::failed, tls.error());
      FUZZ_CHECK(plain.size() == before, "plaintext after the failure");
      FUZZ_CHECK(!tls.has_output(), "output after the failure");
    }
    if (status == roomd::TlsChannel::Status::failed) FUZZ_CHECK(tls.failed() && !tls.error().empty(), tls.error());
    if (!tls.handshake_done()) FUZZ_CHECK(plain.empty(), plain);
    if (closed) FUZZ_CHECK(plain.size() == before, "plaintext after close_notify");
    if (status == roomd::TlsChannel::Status::closed) closed = true;
    // What a server does with what it read: answers it (the echo is not checked by the client).
    if (status == roomd::TlsChannel::Status::ok && tls.handshake_done() && !shut && plain.size() > before)
      FUZZ_CHECK(tls.encrypt(std::string_view(plain).substr(before)), tls.error());
    if (flip_busy) tls.set_busy(!tls.busy());
    to_client += tls.take_output();
  }

  // Enough zeros to complete any record in progress and start a bad one.
  void feed_zeros() { feed_piece(std::string(2 * (16384 + 2048 + 5), '\0')); }
};

// ---- a run --------------------------------------------------------------------------------

struct Corruption {
  enum class Kind { none, flip, insert } kind = Kind::none;
  std::size_t at = 0;      // the offset in the stream it applies to (before the byte there)
  std::uint8_t mask = 1;   // flip: XORed into the byte (never 0)
  std::string garbage;     // insert: put in before the byte at `at`
};

// The stream as the channel gets it.
std::string corrupted(const std::string& stream, const Corruption& c) {
  std::string out = stream;
  if (c.kind == Corruption::Kind::flip && c.at < out.size()) out[c.at] = static_cast<char>(out[c.at] ^ c.mask);
  if (c.kind == Corruption::Kind::insert && c.at <= out.size()) out.insert(c.at, c.garbage);
  return out;
}
bool takes_effect(const std::string& stream, const Corruption& c) {
  return (c.kind == Corruption::Kind::flip && c.at < stream.size()) ||
         (c.kind == Corruption::Kind::insert && c.at <= stream.size() && !c.garbage.empty());
}

// The ends of the TLS records in bytes [begin, end) of the stream (the headers are the
// client's, uncorrupted).
std::vector<std::size_t> record_ends(const std::string& stream, std::size_t begin, std::size_t end) {
  std::vector<std::size_t> ends;
  std::size_t at = begin;
  while (at + 5 <= end) {
    const std::size_t len = (static_cast<std::uint8_t>(stream[at + 3]) << 8) | static_cast<std::uint8_t>(stream[at + 4]);
    at += 5 + len;
    ends.push_back(at);
  }
  FUZZ_CHECK(at == end, "the client's records do not tile its output");
  return ends;
}

// One client write: its bytes in the stream and the data its records carry, the last
// `data_records` of them (a KeyUpdate may go ahead), up to 16 KB each.
struct Write {
  std::size_t begin, end;
  std::string data;
};

// What the channel must have put out when the stream is corrupted at `at`: the data of every
// record that ends at or before it.
std::string expected_before(const std::string& stream, const std::vector<Write>& writes, std::size_t at) {
  std::string expected;
  for (const auto& w : writes) {
    const auto ends = record_ends(stream, w.begin, w.end);
    const std::size_t data_records = (w.data.size() + 16383) / 16384;
    FUZZ_CHECK(ends.size() >= data_records, "a write made too few records");
    for (std::size_t r = 0; r < data_records; ++r) {
      if (ends[ends.size() - data_records + r] > at) return expected;
      expected += w.data.substr(r * 16384, 16384);
    }
  }
  return expected;
}

// Handshake until both sides are done, or one fails, or nothing moves; the client's bytes go
// through `corruption` (handshake mode) at their offset in its handshake stream.
bool handshake(Client& client, Channel& channel, const Corruption& corruption) {
  std::string sent;  // the client's handshake bytes so far, uncorrupted
  for (int round = 0; round < 12; ++round) {
    const bool client_ok = client.step();
    const std::string out = client.take();
    if (!out.empty()) {
      const std::size_t from = sent.size();
      sent += out;
      // This flight's share of the corruption.
      std::string piece = out;
      if (corruption.kind == Corruption::Kind::flip && corruption.at >= from && corruption.at < sent.size())
        piece[corruption.at - from] = static_cast<char>(piece[corruption.at - from] ^ corruption.mask);
      if (corruption.kind == Corruption::Kind::insert && corruption.at >= from && corruption.at < sent.size())
        piece.insert(corruption.at - from, corruption.garbage);
      channel.feed(piece);
    }
    client.give(channel.to_client);
    const bool moved = !out.empty() || !channel.to_client.empty();
    channel.to_client.clear();
    if (client.done() && channel.tls.handshake_done()) return true;
    if (channel.tls.failed() || (!client_ok && out.empty()) || !moved) return false;
  }
  return false;
}

void run_garbage(fuzz::Input& in, std::uint8_t flags) {
  const auto sizes = in.splits();
  Channel channel(world().server12, sizes, (flags & 4) != 0);
  channel.feed(in.rest());
  FUZZ_CHECK(!channel.tls.handshake_done(), "a handshake from garbage");
  if (!channel.tls.failed()) channel.feed_zeros();
  FUZZ_CHECK(channel.tls.failed() && !channel.tls.error().empty(), "garbage not refused");
  channel.feed_piece("more");  // and nothing after
}

void run_session(fuzz::Input& in, std::uint8_t flags) {
  const World& w = world();
  const std::size_t which = in.byte() % w.clients.size();
  const bool client_13 = w.client_is_13[which];
  const bool server_13 = (flags & 0x80) != 0;
  const bool handshake_mode = (flags & 3) == 2;

  Corruption corruption;
  const std::uint8_t kind = in.byte();
  const std::uint8_t value = in.byte();
  const std::size_t position = (std::size_t{in.byte()} << 8) | in.byte();
  if (kind % 4 == 1 || kind % 4 == 2) {
    corruption.kind = Corruption::Kind::flip;
    corruption.mask = value ? value : 0x80;
  } else if (kind % 4 == 3) {
    corruption.kind = Corruption::Kind::insert;
  }
  const auto sizes = in.splits();
  if (corruption.kind == Corruption::Kind::insert)
    for (std::size_t n = value % 32 + 1; n > 0; --n) corruption.garbage += static_cast<char>(in.byte());
  std::vector<std::string> messages;
  while (!in.rest().empty()) {
    const std::size_t n = in.byte();
    std::string m(in.rest().substr(0, n));
    for (std::size_t i = 0; i < n; ++i) in.byte();
    if (!m.empty()) messages.push_back(std::move(m));
  }
  if (flags & 0x40) {
    std::string big(16384 + position % 4096 + 1, '\0');
    for (auto& c : big) c = static_cast<char>(next_random());
    messages.insert(messages.begin() + static_cast<std::ptrdiff_t>(messages.size() / 2), std::move(big));
  }

  Client client(w.clients[which].get());
  Channel channel(server_13 ? w.server13 : w.server12, sizes, (flags & 4) != 0);
  Corruption in_handshake = corruption;
  if (handshake_mode) in_handshake.at = position % 1024;
  else in_handshake.kind = Corruption::Kind::none;

  if (!handshake(client, channel, in_handshake)) {
    // A refusal: the versions do not meet, or the handshake was corrupted.
    FUZZ_CHECK((server_13 && !client_13) || in_handshake.kind != Corruption::Kind::none, channel.tls.error());
    if (!channel.tls.failed()) channel.feed_zeros();
    FUZZ_CHECK(channel.tls.failed() && !channel.tls.error().empty(), "a failed handshake not refused");
    FUZZ_CHECK(channel.plain.empty(), channel.plain);
    return;
  }
  FUZZ_CHECK(!(server_13 && !client_13), "a 1.2 client got through a 1.3-only server");
  FUZZ_CHECK(channel.plain.empty(), channel.plain);

  // The client writes everything; its bytes are then corrupted (records mode) and fed.
  std::string stream;
  std::vector<Write> writes;
  std::string all;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if ((flags & 8) && client_13 && i % 2 == 1)
      SSL_key_update(client.ssl.get(), i % 4 == 1 ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED);
    ERR_clear_error();
    std::size_t written = 0;
    if (SSL_write_ex(client.ssl.get(), messages[i].data(), messages[i].size(), &written) != 1 ||
        written != messages[i].size())
      die("the client cannot write");
    const std::size_t begin = stream.size();
    stream += client.take();
    writes.push_back({begin, stream.size(), messages[i]});
    all += messages[i];
  }
  const std::size_t data_end = stream.size();
  if (flags & 0x10) {
    SSL_shutdown(client.ssl.get());
    stream += client.take();
  }
  ERR_clear_error();

  Corruption in_records = handshake_mode ? Corruption{} : corruption;
  in_records.at = stream.empty() ? 0 : position % (stream.size() + 1);
  const bool hit = takes_effect(stream, in_records);
  channel.feed(corrupted(stream, in_records));
  if (std::getenv("TLS_RECORD_VERBOSE")) {  // for reading a run: what happened, and a digest of the bytes
    std::uint64_t digest = 0xcbf29ce484222325ULL;
    for (char c : stream) digest = (digest ^ static_cast<std::uint8_t>(c)) * 0x100000001b3ULL;
    std::fprintf(stderr, "tls_record: %s, %zu writes, %zu stream bytes (digest %016llx), corruption %s at %zu, %zu of %zu plaintext bytes out, %s\n",
                 channel.tls.description().c_str(), writes.size(), stream.size(), static_cast<unsigned long long>(digest),
                 !hit ? "none" : in_records.kind == Corruption::Kind::flip ? "flip" : "insert", in_records.at,
                 channel.plain.size(), all.size(), channel.tls.failed() ? channel.tls.error().c_str() : "ok");
  }
  if (!hit) {
    FUZZ_CHECK(!channel.tls.failed(), channel.tls.error());
    FUZZ_CHECK(channel.plain == all, "the plaintext is not what the client sent");
    FUZZ_CHECK(channel.closed == ((flags & 0x10) != 0), "close_notify");
  } else {
    // Garbage after the client's close_notify is never read: the channel stays closed.
    const bool after_close = (flags & 0x10) && in_records.at >= stream.size();
    if (!channel.tls.failed() && !after_close) channel.feed_zeros();
    if (after_close) {
      FUZZ_CHECK(channel.closed && !channel.tls.failed(), channel.tls.error());
      FUZZ_CHECK(channel.plain == all, "the plaintext is not what the client sent");
    } else {
      FUZZ_CHECK(channel.tls.failed() && !channel.tls.error().empty(), "a corrupted record was not refused");
      const std::string expected = expected_before(stream, writes, std::min(in_records.at, data_end));
      FUZZ_CHECK(channel.plain == expected, "the plaintext is not the client's up to the corruption");
    }
  }
  if (flags & 0x20) {
    const bool could = !channel.tls.failed();
    channel.tls.shutdown();
    channel.shut = true;
    if (could) FUZZ_CHECK(channel.tls.has_output(), "no close_notify");
    FUZZ_CHECK(!channel.tls.encrypt("late"), "encrypt after shutdown");
  }
  channel.feed_piece("x");  // one more read: checked as every other
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)world();
  seed_from(data, size);
  ERR_clear_error();
  fuzz::Input in(data, size);
  const std::uint8_t flags = in.byte();
  if ((flags & 3) == 3) run_garbage(in, flags);
  else run_session(in, flags);
  ERR_clear_error();
  return 0;
}
