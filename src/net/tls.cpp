// TLS over memory BIOs. See tls.hpp.
#include "roomd/net/tls.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <utility>

namespace roomd {

namespace {

// The most recent OpenSSL error as text, or `fallback`; empties the queue.
std::string openssl_error(const std::string& fallback) {
  unsigned long last = 0;
  while (unsigned long e = ERR_get_error()) last = e;
  if (last == 0) return fallback;
  char buf[256];
  ERR_error_string_n(last, buf, sizeof buf);
  return buf;
}

std::string certificate_summary(SSL_CTX* ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (!cert) return "no certificate";
  char subject[256] = {0};
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
  std::string s = subject;
  BIO* mem = BIO_new(BIO_s_mem());
  if (mem && ASN1_TIME_print(mem, X509_get0_notAfter(cert)) == 1) {
    char* data = nullptr;
    long n = BIO_get_mem_data(mem, &data);
    s += ", valid until " + std::string(data, static_cast<std::size_t>(n));
  }
  BIO_free(mem);
  return s;
}

}  // namespace

std::variant<std::shared_ptr<TlsContext>, std::string> TlsContext::load(Side side, const TlsFiles& files) {
  ERR_clear_error();
  SSL_CTX* raw = SSL_CTX_new(side == Side::server ? TLS_server_method() : TLS_client_method());
  if (!raw) return openssl_error("cannot create an SSL_CTX");
  std::shared_ptr<TlsContext> context(new TlsContext(side, raw));
  SSL_CTX* ctx = context->ctx_;

  SSL_CTX_set_min_proto_version(ctx, files.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Idle connections give their read and write buffers back (about 34 KB each otherwise);
  // a busy one keeps them while it writes (TlsChannel::set_busy).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  if (!files.cert.empty() || side == Side::server) {
    if (files.cert.empty() || files.key.empty()) return std::string("needs both cert and key");
    if (SSL_CTX_use_certificate_chain_file(ctx, files.cert.c_str()) != 1)
      return "cannot load the certificate " + files.cert + ": " + openssl_error("unknown error");
    if (SSL_CTX_use_PrivateKey_file(ctx, files.key.c_str(), SSL_FILETYPE_PEM) != 1)
      return "cannot load the key " + files.key + ": " + openssl_error("unknown error");
    if (SSL_CTX_check_private_key(ctx) != 1)
      return "the key " + files.key + " does not match the certificate " + files.cert + ": " +
             openssl_error("mismatch");
  }

  if (side == Side::server) {
    if (!files.ca.empty()) {
      // A fresh store from the file, never added to an old one: a reload that drops an anchor
      // drops it (the mosquitto bug was a reloaded CA store that kept the old anchors).
      if (SSL_CTX_load_verify_locations(ctx, files.ca.c_str(), nullptr) != 1)
        return "cannot load the CA bundle " + files.ca + ": " + openssl_error("unknown error");
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.ca.c_str());
      if (!names) return "the CA bundle " + files.ca + " holds no certificate";
      SSL_CTX_set_client_CA_list(ctx, names);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    // Stateless tickets for resumption; no server-side session cache to grow.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    context->summary_ = certificate_summary(ctx);
  } else if (!files.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  } else {
    if (!files.ca.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, files.ca.c_str(), nullptr) != 1)
        return "cannot load the CA bundle " + files.ca + ": " + openssl_error("unknown error");
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return "cannot load the system's CA certificates: " + openssl_error("unknown error");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  ERR_clear_error();
  return context;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsChannel::TlsChannel(std::shared_ptr<TlsContext> context, const std::string& host) : context_(std::move(context)) {
  ERR_clear_error();
  ssl_ = SSL_new(context_->get());
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  if (!ssl_ || !in_ || !out_) {
    failed_ = true;
    error_ = openssl_error("out of memory");
    BIO_free(in_);
    BIO_free(out_);
    in_ = out_ = nullptr;
    return;
  }
  // An empty read BIO says "retry later", not EOF.
  BIO_set_mem_eof_return(in_, -1);
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);
  if (context_->side() == TlsContext::Side::server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    if (!host.empty()) {
      SSL_set_tlsext_host_name(ssl_, host.c_str());
      // An IP address is checked against the certificate's IP entries, a name against its DNS ones.
      if (X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
          X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) {
        ERR_clear_error();
        SSL_set1_host(ssl_, host.c_str());
      }
    }
  }
}

TlsChannel::~TlsChannel() { SSL_free(ssl_); }  // frees both BIOs

void TlsChannel::start_handshake() {
  if (failed_) return;
  advance_handshake();
}

bool TlsChannel::advance_handshake() {
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshake_done_ = true;
    handshake_news_ = true;
    return true;
  }
  int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return true;
  fail(err);
  return false;
}

TlsChannel::Status TlsChannel::fail(int ssl_error) {
  failed_ = true;
  if (ssl_error == SSL_ERROR_SSL) {
    long verify = SSL_get_verify_result(ssl_);
    error_ = openssl_error("TLS error");
    if (verify != X509_V_OK) error_ = "certificate verify failed: " + std::string(X509_verify_cert_error_string(verify));
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    error_ = openssl_error("unexpected end of the TLS stream");
  } else {
    error_ = openssl_error("TLS error " + std::to_string(ssl_error));
  }
  return Status::failed;
}

TlsChannel::Status TlsChannel::feed(std::string_view cipher, std::string& plain) {
  if (failed_) return Status::failed;
  if (!cipher.empty() && BIO_write(in_, cipher.data(), static_cast<int>(cipher.size())) <= 0) {
    failed_ = true;
    error_ = openssl_error("cannot buffer TLS input");
    return Status::failed;
  }
  if (!handshake_done_ && (!advance_handshake() || !handshake_done_)) return failed_ ? Status::failed : Status::ok;
  char buf[16384];
  for (;;) {
    ERR_clear_error();
    std::size_t n = 0;
    int rc = SSL_read_ex(ssl_, buf, sizeof buf, &n);
    if (rc == 1) {
      plain.append(buf, n);
      continue;
    }
    int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::ok;
    if (err == SSL_ERROR_ZERO_RETURN) return Status::closed;
    return fail(err);
  }
}

bool TlsChannel::encrypt(std::string_view plain) {
  if (failed_ || !handshake_done_ || shutdown_sent_) return false;
  if (plain.empty()) return true;
  ERR_clear_error();
  std::size_t written = 0;
  // A memory BIO never blocks, so without partial writes SSL_write_ex takes everything or fails.
  int rc = SSL_write_ex(ssl_, plain.data(), plain.size(), &written);
  if (rc == 1) return true;
  fail(SSL_get_error(ssl_, rc));
  return false;
}

void TlsChannel::shutdown() {
  if (failed_ || !handshake_done_ || shutdown_sent_) return;
  shutdown_sent_ = true;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // queues close_notify; we do not wait for the peer's
  ERR_clear_error();
}

void TlsChannel::set_busy(bool busy) {
  if (!ssl_ || busy == busy_) return;
  busy_ = busy;
  if (busy) {
    SSL_clear_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
  } else {
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
    SSL_free_buffers(ssl_);  // refuses (harmlessly) while a record is half read
  }
}

bool TlsChannel::has_output() const { return out_ && BIO_ctrl_pending(out_) > 0; }

std::string TlsChannel::take_output() {
  std::string s;
  if (!out_) return s;
  std::size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) return s;
  s.resize(pending);
  int n = BIO_read(out_, s.data(), static_cast<int>(pending));
  s.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return s;
}

std::string TlsChannel::description() const {
  if (!handshake_done_) return "handshaking";
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

}  // namespace roomd
