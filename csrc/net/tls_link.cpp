// TlsLink: OpenSSL's TLS 1.3 over a Link; see tls_link.h. OpenSSL reads and writes the
// inner link through a BIO of ours, so any Link (TCP, relayed) can carry TLS.
#include "net/tls_link.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>

#include "core/errors.h"
#include "net/cancel.h"

namespace pcomm::net {

namespace {

constexpr unsigned char kAes128GcmSha256[2] = {0x13, 0x01};
constexpr size_t kRecord = 16384;            // TLS's largest record payload
constexpr size_t kSendBudget = 64 * 1024;     // bytes one send_raw call encrypts at most
constexpr size_t kReadBuffer = 256 * 1024;   // OpenSSL's read-ahead buffer per link
constexpr size_t kRecvBudget = 64 * 1024;     // bytes one recv_raw call decrypts at most
constexpr size_t kMaxIdentity = 256;         // a longer PSK identity is refused
constexpr unsigned kPskExtension = 41;       // pre_shared_key (RFC 8446 4.2.11)
constexpr uint8_t kHandshakeRecord = 22;     // the content type a ClientHello arrives in

std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

TlsLink* owner(SSL* ssl) { return static_cast<TlsLink*>(SSL_get_app_data(ssl)); }

SSL_SESSION* psk_session(SSL* ssl, const Key& key) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  SSL_SESSION* s = SSL_SESSION_new();
  if (!cipher || !s || !SSL_SESSION_set1_master_key(s, key.data(), key.size()) || !SSL_SESSION_set_cipher(s, cipher) ||
      !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;  // OpenSSL takes ownership
}

int client_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen, SSL_SESSION** sess) {
  TlsLink* self = owner(ssl);
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  if (md && cipher && md != SSL_CIPHER_get_handshake_digest(cipher)) {
    *sess = nullptr;  // the server chose a suite our key does not fit: no PSK, handshake fails
    return 1;
  }
  *sess = psk_session(ssl, self->key_);
  if (!*sess) return 0;
  *id = reinterpret_cast<const unsigned char*>(self->identity_.data());
  *idlen = self->identity_.size();
  return 1;
}

// Reads the first PSK identity of a ClientHello's pre_shared_key extension.
bool first_identity(SSL* ssl, std::string* identity) {
  const unsigned char* p = nullptr;
  size_t n = 0;
  if (SSL_client_hello_get0_ext(ssl, kPskExtension, &p, &n) != 1 || n < 4) return false;
  size_t list = (size_t(p[0]) << 8) | p[1], len = (size_t(p[2]) << 8) | p[3];
  if (list < len + 6 || 2 + list > n || len == 0 || len > kMaxIdentity) return false;
  identity->assign(reinterpret_cast<const char*>(p + 4), len);
  return true;
}

// The server decides early, from the ClientHello, whether it knows the identity's key:
// refused, accepted, or "not yet" (the handshake pauses until resume()).
int client_hello_checked(SSL* ssl, int* alert) {
  TlsLink* self = owner(ssl);
  if (!self->lookup_) return SSL_CLIENT_HELLO_SUCCESS;  // a client link
  std::string identity;
  if (!first_identity(ssl, &identity)) {
    self->refusal_ = "the client offered no run key (it has no secret, or not this run's)";
    *alert = SSL_AD_HANDSHAKE_FAILURE;
    return SSL_CLIENT_HELLO_ERROR;
  }
  KeyAnswer answer = self->lookup_(identity);
  switch (answer.kind) {
    case KeyAnswer::Kind::kNotYet: return SSL_CLIENT_HELLO_RETRY;
    case KeyAnswer::Kind::kUnknown:
      self->refusal_ = answer.why;
      *alert = SSL_AD_HANDSHAKE_FAILURE;
      return SSL_CLIENT_HELLO_ERROR;
    case KeyAnswer::Kind::kKey: break;
  }
  self->identity_ = identity;
  self->key_ = answer.key;
  return SSL_CLIENT_HELLO_SUCCESS;
}

int client_hello(SSL* ssl, int* alert, void*) {
  try {  // never through OpenSSL's C frames
    return client_hello_checked(ssl, alert);
  } catch (const std::exception& e) {
    owner(ssl)->refusal_ = std::string("looking the key up failed: ") + e.what();
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
}

int server_psk(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  TlsLink* self = owner(ssl);
  *sess = nullptr;  // unknown identity: no PSK, and with no certificate the handshake fails
  const std::string& want = self->identity_;
  if (want.empty() || idlen != want.size() || std::memcmp(id, want.data(), idlen) != 0) return 1;
  *sess = psk_session(ssl, self->key_);
  return *sess ? 1 : 0;
}

// The BIO: OpenSSL's bytes go to and come from the inner link, never blocking.
int bio_write(BIO* bio, const char* data, size_t size, size_t* written) {
  auto* self = static_cast<TlsLink*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  try {
    iovec iov{const_cast<char*>(data), size};
    size_t n = self->inner().send_some(&iov, 1);
    if (n == 0) {
      BIO_set_retry_write(bio);
      return 0;
    }
    *written = n;
    return 1;
  } catch (const std::exception& e) {  // never through OpenSSL's C frames
    self->inner_error_ = e.what();
    return 0;
  }
}

int bio_read(BIO* bio, char* data, size_t size, size_t* read) {
  auto* self = static_cast<TlsLink*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  try {
    size_t n = self->inner().recv_some(data, size);
    if (n == 0) {
      BIO_set_retry_read(bio);
      return 0;
    }
    if (!self->first_byte_seen_ && self->lookup_ && static_cast<uint8_t>(data[0]) != kHandshakeRecord) {
      // Not a TLS ClientHello: a client without the secret. Tell it, then fail.
      if (!self->plaintext_reply_.empty()) {
        iovec iov{self->plaintext_reply_.data(), self->plaintext_reply_.size()};
        self->inner().send_some(&iov, 1);
      }
      self->inner_error_ = "the client speaks without TLS (it was given no run secret)";
      return 0;
    }
    self->first_byte_seen_ = true;
    *read = n;
    return 1;
  } catch (const std::exception& e) {
    self->inner_error_ = e.what();
    return 0;
  }
}

long bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

struct Contexts {
  SSL_CTX* ctx = nullptr;
  BIO_METHOD* bio = nullptr;
  Contexts() {
    ctx = SSL_CTX_new(TLS_method());
    bio = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pcomm link");
    if (!ctx || !bio) throw Error("OpenSSL could not make a TLS context: " + ssl_errors());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1) throw Error("no AES-128-GCM in this OpenSSL");
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read ahead into a large buffer: one recv takes many records, not two per record.
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, kReadBuffer);
    SSL_CTX_set_client_hello_cb(ctx, client_hello, nullptr);
    SSL_CTX_set_psk_use_session_callback(ctx, client_psk);
    SSL_CTX_set_psk_find_session_callback(ctx, server_psk);
    BIO_meth_set_write_ex(bio, bio_write);
    BIO_meth_set_read_ex(bio, bio_read);
    BIO_meth_set_ctrl(bio, bio_ctrl);
    BIO_meth_set_create(bio, bio_create);
  }
};

const Contexts& contexts() {
  static Contexts c;  // thread-safe initialisation; lives for the process
  return c;
}

}  // namespace

KeyLookup single_key(std::string identity, const Key& key) {
  return [identity = std::move(identity), key](const std::string& presented) {
    if (presented == identity) return KeyAnswer::of(key);
    return KeyAnswer::unknown("the client presented '" + presented + "', not '" + identity + "'");
  };
}

std::shared_ptr<Link> coordinator_client(std::shared_ptr<Link> link, const std::string& secret, TimePoint deadline) {
  if (secret.empty()) return link;
  auto tls = TlsLink::client(std::move(link), coordinator_identity(), derive_key(secret, kCoordinatorPsk));
  tls->handshake(deadline);
  return tls;
}

struct TlsLink::Native {
  SSL* ssl = nullptr;
  ~Native() { SSL_free(ssl); }  // frees the BIO too
};

TlsLink::TlsLink(std::shared_ptr<Link> inner, bool is_server)
    : Link(inner->kind(), inner->remote()), inner_(std::move(inner)), is_server_(is_server),
      native_(std::make_unique<Native>()) {
  const auto& c = contexts();
  native_->ssl = SSL_new(c.ctx);
  BIO* bio = BIO_new(c.bio);
  if (!native_->ssl || !bio) {
    BIO_free(bio);
    throw Error("OpenSSL could not make a TLS connection: " + ssl_errors());
  }
  BIO_set_data(bio, this);
  SSL_set_bio(native_->ssl, bio, bio);
  SSL_set_app_data(native_->ssl, this);
  if (is_server) {
    SSL_set_accept_state(native_->ssl);
  } else {
    SSL_set_connect_state(native_->ssl);
  }
  want_ = is_server ? POLLIN : POLLOUT;
}

TlsLink::~TlsLink() = default;

std::shared_ptr<TlsLink> TlsLink::client(std::shared_ptr<Link> inner, std::string identity, const Key& key) {
  std::shared_ptr<TlsLink> link(new TlsLink(std::move(inner), false));
  link->identity_ = std::move(identity);
  link->key_ = key;
  return link;
}

std::shared_ptr<TlsLink> TlsLink::server(std::shared_ptr<Link> inner, KeyLookup lookup,
                                         std::vector<uint8_t> plaintext_reply) {
  std::shared_ptr<TlsLink> link(new TlsLink(std::move(inner), true));
  link->lookup_ = std::move(lookup);
  link->plaintext_reply_ = std::move(plaintext_reply);
  return link;
}

bool TlsLink::handshake_done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

bool TlsLink::waiting_for_key() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !done_ && want_ == 0;
}

std::string TlsLink::identity() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return identity_;
}

void TlsLink::resume() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!done_ && want_ == 0) want_ = POLLIN;  // try the lookup again on the next read
}

void TlsLink::fail(const std::string& doing, int ssl_error) {
  std::string why;
  if (!inner_error_.empty()) {
    why = inner_error_;
  } else if (!refusal_.empty()) {
    why = "refused: " + refusal_;
  } else {
    why = ssl_errors();
    if (why.empty()) why = ssl_error == SSL_ERROR_ZERO_RETURN ? "closed by the remote end" : "connection closed";
  }
  ERR_clear_error();
  mark_broken();
  if (!done_) {
    std::string text = "TLS handshake with " + remote() + " failed: " + why;
    // The transport failed (closed, reset): maybe retried. Else the other side refused.
    if (!inner_error_.empty()) throw IoError(text);
    if (!is_server_) text += " (the other side does not hold this key: another run's secret, or none)";
    throw AuthenticationError(text);
  }
  throw IoError("TLS " + doing + " " + remote() + " failed: " + why);
}

bool TlsLink::advance_handshake() {
  if (done_) return true;
  if (want_ == 0) return false;  // waiting for a key (resume())
  ERR_clear_error();
  int rc = SSL_do_handshake(native_->ssl);
  if (rc == 1) {
    done_ = true;
    want_ = 0;
    drained_ = false;  // read-ahead may already hold records that followed the handshake
    return true;
  }
  int err = SSL_get_error(native_->ssl, rc);
  switch (err) {
    case SSL_ERROR_WANT_READ: want_ = POLLIN; return false;
    case SSL_ERROR_WANT_WRITE: want_ = POLLOUT; return false;
    case SSL_ERROR_WANT_CLIENT_HELLO_CB: want_ = 0; return false;
    default: fail("handshake with", err);
  }
}

void TlsLink::handshake(TimePoint deadline, const Cancel* cancel) {
  for (;;) {
    short want;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (advance_handshake()) return;
      want = want_;
    }
    if (want == 0) {  // a server waiting for a key: poll again shortly
      wait_links({}, deadline, Clock::now() + Millis(20), cancel, "TLS handshake");
      continue;
    }
    wait_links({{this, want == POLLOUT, want == POLLIN}}, deadline, deadline, cancel, "TLS handshake");
  }
}

short TlsLink::poll_events(bool send, bool recv) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!done_) return want_;  // the handshake decides; 0 while it waits for a key
  return static_cast<short>((send ? POLLOUT : 0) | (recv ? POLLIN : 0));
}

bool TlsLink::holds_input() const {
  std::lock_guard<std::mutex> lock(mutex_);
  // Buffered bytes hold a whole record unless the last read ran dry (then what is left is
  // part of a record, and only the fd can complete it).
  return !recv_error_.empty() ||
         (done_ && (SSL_pending(native_->ssl) > 0 || (!drained_ && SSL_has_pending(native_->ssl)))) ||
         inner_->recv_ready();
}

size_t TlsLink::write_record(const uint8_t* data, size_t size, bool* would_block) {
  ERR_clear_error();
  size_t written = 0;
  if (SSL_write_ex(native_->ssl, data, size, &written) == 1) return written;
  int err = SSL_get_error(native_->ssl, 0);
  if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
    *would_block = true;
    return 0;
  }
  fail("send to", err);
}

size_t TlsLink::send_raw(const iovec* iov, int iovcnt) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!advance_handshake()) return 0;
  bool blocked = false;
  size_t offered = 0;
  for (int i = 0; i < iovcnt; ++i) offered += iov[i].iov_len;
  if (!pending_.empty()) {
    // OpenSSL holds this record half-sent; it must go out before anything else.
    size_t n = write_record(pending_.data(), pending_.size(), &blocked);
    if (blocked) return 0;
    // Counted as the caller's only if the caller still offers those bytes.
    bool same = offered >= n;
    size_t at = 0;
    for (int i = 0; i < iovcnt && same && at < n; ++i) {
      size_t k = std::min(iov[i].iov_len, n - at);
      same = std::memcmp(iov[i].iov_base, pending_.data() + at, k) == 0;
      at += k;
    }
    pending_.clear();
    if (!same) return 0;
    return n;
  }
  size_t sent = 0;
  int i = 0;
  size_t off = 0;  // into iov[i]
  while (i < iovcnt && sent < kSendBudget) {
    if (off == iov[i].iov_len) {
      ++i;
      off = 0;
      continue;
    }
    const uint8_t* data = static_cast<const uint8_t*>(iov[i].iov_base) + off;
    size_t size = std::min(iov[i].iov_len - off, kRecord);
    if (size < kRecord && i + 1 < iovcnt) {
      // A short piece followed by more: gather one full record instead of a tiny one.
      gather_.assign(data, data + size);
      for (int j = i + 1; j < iovcnt && gather_.size() < kRecord; ++j) {
        size_t k = std::min(iov[j].iov_len, kRecord - gather_.size());
        auto* p = static_cast<const uint8_t*>(iov[j].iov_base);
        gather_.insert(gather_.end(), p, p + k);
      }
      data = gather_.data();
      size = gather_.size();
    }
    size_t n = write_record(data, size, &blocked);
    if (blocked) {
      pending_.assign(data, data + size);
      break;
    }
    sent += n;
    // Advance over n bytes of the iovecs.
    for (size_t left = n; left > 0;) {
      size_t k = std::min(left, iov[i].iov_len - off);
      off += k;
      left -= k;
      if (off == iov[i].iov_len && left > 0) {
        ++i;
        off = 0;
      }
    }
  }
  return sent;
}

size_t TlsLink::recv_raw(void* buf, size_t len) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!recv_error_.empty()) {
    mark_broken();
    throw IoError(recv_error_);
  }
  if (!advance_handshake()) return 0;
  size_t got = 0;
  auto* out = static_cast<uint8_t*>(buf);
  len = std::min(len, kRecvBudget);  // the lock is not held for longer than this much work
  while (got < len) {
    ERR_clear_error();
    size_t n = 0;
    if (SSL_read_ex(native_->ssl, out + got, len - got, &n) == 1) {
      got += n;
      continue;
    }
    int err = SSL_get_error(native_->ssl, 0);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      drained_ = true;
      return got;
    }
    if (got > 0) {
      // Hand over what arrived; the error (its first cause, before it is cleared) comes
      // with the next call.
      try {
        fail("receive from", err);
      } catch (const Error& e) {
        recv_error_ = e.what();
      }
      break;
    }
    fail("receive from", err);
  }
  drained_ = false;  // stopped with the caller's buffer full: more records may be buffered
  return got;
}

}  // namespace pcomm::net
