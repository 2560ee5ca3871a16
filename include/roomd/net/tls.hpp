// TLS over memory BIOs: OpenSSL never touches a socket. The connection hands in what it read
// (`feed`), takes out what must be sent (`take_output`), and asks for its plaintext to be
// encrypted (`encrypt`); the ciphertext then goes through the connection's own queue, flow
// control and write path, as plaintext does. One TlsContext (an SSL_CTX) serves every
// connection of a listener; a reload builds a new one and swaps it in, and connections
// already open keep theirs (each SSL holds a reference to its SSL_CTX).
//
// What OpenSSL users learned the hard way, designed in here:
// - every SSL call may produce output (TLS 1.3 tickets and KeyUpdate come out of SSL_read),
//   so the write BIO is drained after each call, not only after SSL_write;
// - the thread's error queue is cleared before each call, so a stale error is never read as
//   this call's;
// - renegotiation is off (SSL_OP_NO_RENEGOTIATION), buffers are released when idle
//   (SSL_MODE_RELEASE_BUFFERS).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace roomd {

struct TlsFiles {
  std::string cert;   // PEM chain (server: required; client: optional, for a client certificate)
  std::string key;    // PEM private key, with cert
  std::string ca;     // PEM bundle. Server: when set, client certificates are required and checked
                      // against it. Client: the anchors (empty: the system's default paths)
  std::string min_version = "1.2";  // "1.2" or "1.3"
  bool verify = true;  // client: false skips the server's certificate check (roomd-bench --insecure only)
};

class TlsContext {
 public:
  enum class Side { server, client };
  // Builds a context from the files, or says why not (a file that does not load, a key that
  // does not match its certificate, a CA bundle without one certificate).
  static std::variant<std::shared_ptr<TlsContext>, std::string> load(Side side, const TlsFiles& files);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  Side side() const { return side_; }
  SSL_CTX* get() const { return ctx_; }
  // The served certificate's subject and expiry, for the log.
  const std::string& summary() const { return summary_; }

 private:
  TlsContext(Side side, SSL_CTX* ctx) : side_(side), ctx_(ctx) {}
  Side side_;
  SSL_CTX* ctx_;
  std::string summary_;
};

// One connection's TLS state.
class TlsChannel {
 public:
  enum class Status {
    ok,        // go on
    closed,    // the peer sent close_notify: no more input will come
    failed,    // a fatal error (handshake or record): error() says what; send the output, then close
  };

  // `host`: for a client, the name to send (SNI) and to verify the certificate against.
  explicit TlsChannel(std::shared_ptr<TlsContext> context, const std::string& host = "");
  ~TlsChannel();
  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;

  // A client starts the handshake (its ClientHello is then in the output).
  void start_handshake();
  // Ciphertext read from the socket; the plaintext it carries is appended to `plain`.
  Status feed(std::string_view cipher, std::string& plain);
  // Encrypts `plain` whole (TLS records), or nothing before the handshake is done; returns
  // whether it did.
  bool encrypt(std::string_view plain);
  // Queues our close_notify (once, and only after a finished handshake).
  void shutdown();
  // A connection that is writing keeps its record buffers (with SSL_MODE_RELEASE_BUFFERS each
  // record would allocate, clear and free 17 KB); once idle it gives them back.
  void set_busy(bool busy);
  bool busy() const { return busy_; }
  // Ciphertext waiting to be sent, moved out.
  std::string take_output();
  bool has_output() const;

  bool handshake_done() const { return handshake_done_; }
  // True once, when the handshake has just finished (the caller counts it and writes what waits).
  bool take_handshake_news() { return std::exchange(handshake_news_, false); }
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384", after the handshake.
  std::string description() const;

 private:
  Status fail(int ssl_error);
  bool advance_handshake();  // false on failure

  std::shared_ptr<TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // owned by ssl_
  BIO* out_ = nullptr;  // owned by ssl_
  bool handshake_done_ = false;
  bool handshake_news_ = false;
  bool shutdown_sent_ = false;
  bool busy_ = false;
  bool failed_ = false;
  std::string error_;
};

}  // namespace roomd
