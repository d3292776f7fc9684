// TlsLink: TLS 1.3 (OpenSSL) over any other Link: a direct, punched or relayed stream
// becomes an encrypted and authenticated one, and nothing above it changes (framing,
// lanes, resync all see a Link). Authentication is by an external pre-shared key with
// ECDHE (psk_dhe_ke: forward secrecy), cipher TLS_AES_128_GCM_SHA256; no certificates,
// no session tickets, no early data (so a recorded handshake cannot be replayed).
//
// The client names its key with a PSK identity; the server looks the identity up with a
// KeyLookup that may answer "not yet" (a data link from a peer whose epoch key has not
// arrived here): the handshake then waits until resume() after the keys arrived, or
// until whoever owns the link gives up on it.
//
// The handshake runs inside send_some/recv_some, non-blocking (so an event loop can
// accept TLS without a thread per connection), or blocking with handshake(). Bytes that
// fail authentication close the link (IoError): never a wrong byte upward.
//
// Send semantics: like TCP, send_some reports what it took. When it returns 0 the link
// may already have committed (encrypted) a prefix of the offered bytes; offering the same
// bytes again counts them, offering others (an op abandoned mid-frame, then a resync
// marker) delivers the committed ones first as stray bytes, as a TCP stream delivers an
// abandoned frame's bytes already in the kernel.
//
// Threads: as Link: one sender and one receiver at a time (an internal mutex serialises
// their calls into OpenSSL, which is not safe for concurrent use of one connection).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "net/link.h"
#include "net/run_keys.h"

typedef struct ssl_st SSL;

namespace pcomm::net {

// What the server answers for a PSK identity: a key, "unknown" (refused), or "not yet".
struct KeyAnswer {
  enum class Kind { kKey, kUnknown, kNotYet } kind = Kind::kUnknown;
  Key key{};
  std::string why;  // for kUnknown: said in the error
  static KeyAnswer of(const Key& k) { return {Kind::kKey, k, {}}; }
  static KeyAnswer unknown(std::string why) { return {Kind::kUnknown, {}, std::move(why)}; }
  static KeyAnswer not_yet() { return {Kind::kNotYet, {}, {}}; }
};
using KeyLookup = std::function<KeyAnswer(const std::string& identity)>;
// A server that knows one identity and its key (the coordinator's and the relay's).
KeyLookup single_key(std::string identity, const Key& key);

// A client link to a run's coordinator: TLS keyed by the secret with the handshake done
// (blocking, within deadline), or `link` itself when the secret is empty.
std::shared_ptr<Link> coordinator_client(std::shared_ptr<Link> link, const std::string& secret, TimePoint deadline);

class TlsLink : public Link {
 public:
  // A client presents identity and proves key; a server checks with lookup.
  static std::shared_ptr<TlsLink> client(std::shared_ptr<Link> inner, std::string identity, const Key& key);
  // A server whose client speaks without TLS (it has no secret) sends it plaintext_reply
  // (say, a pcomm Error frame telling it so) and closes.
  static std::shared_ptr<TlsLink> server(std::shared_ptr<Link> inner, KeyLookup lookup,
                                         std::vector<uint8_t> plaintext_reply = {});
  ~TlsLink() override;

  // Blocking handshake within deadline (cancel may be null): IoError naming the cause
  // when the other side does not hold the key, TimeoutError, Aborted.
  void handshake(TimePoint deadline, const Cancel* cancel = nullptr);
  bool handshake_done() const;
  // Server: the keys may have changed; a handshake waiting for one can go on. The
  // owner then reads again (it gets no fd event for this).
  void resume();
  bool waiting_for_key() const;
  // The PSK identity the handshake used (server: what the client presented).
  std::string identity() const;

  int fd() const override { return inner_->fd(); }
  short poll_events(bool send, bool recv) const override;
  void shutdown() override { inner_->shutdown(); mark_broken(); }
  double rtt_seconds() const override { return inner_->rtt_seconds(); }

 protected:
  size_t send_raw(const iovec* iov, int iovcnt) override;
  size_t recv_raw(void* buf, size_t len) override;
  bool holds_input() const override;

 private:
  struct Native;
  TlsLink(std::shared_ptr<Link> inner, bool is_server);
  // Progress on the handshake; true once it is done. Caller holds mutex_.
  bool advance_handshake();
  [[noreturn]] void fail(const std::string& doing, int ssl_error);
  size_t write_record(const uint8_t* data, size_t size, bool* would_block);

  std::shared_ptr<Link> inner_;
  bool is_server_;
  std::unique_ptr<Native> native_;
  mutable std::mutex mutex_;
  bool done_ = false;
  short want_ = 0;  // what the handshake waits for: POLLIN, POLLOUT, or 0 (a key)
  bool drained_ = true;  // the last read consumed every whole record OpenSSL had buffered
  std::string recv_error_;  // a failure met after some bytes were handed over: the next read's
  std::vector<uint8_t> pending_;  // plaintext of a record OpenSSL has taken but not flushed
  std::vector<uint8_t> gather_;   // small iovecs gathered into one record

 public:  // for OpenSSL's C callbacks (tls_link.cpp) only
  std::string identity_;
  Key key_{};
  KeyLookup lookup_;
  std::string refusal_;      // why the server refused the client's identity
  std::string inner_error_;  // an IoError of the inner link, rethrown after OpenSSL returns
  bool first_byte_seen_ = false;
  std::vector<uint8_t> plaintext_reply_;
  Link& inner() { return *inner_; }
};

}  // namespace pcomm::net
