// Relay: forwards bytes between two peers that cannot reach each other (a port-
// randomising NAT on one side, or a punch that failed). It runs on its own EventLoop
// thread; each circuit forwards on a thread of its own with splice(2) through a pipe per
// direction, so bytes never enter user space and are never parsed. Peers encrypt end
// to end above it (the TLS issue); the relay only pairs and forwards.
//
// Admission (proto/relay_messages.h): a coordinator registers one-time tokens for a pair
// of peers; each peer joins with the token; when both have joined they are paired and
// the token is spent. Unknown, expired or reused tokens, garbage, and anything that
// breaks the limits below close that connection only.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "net/cancel.h"
#include "net/event_loop.h"
#include "net/frame_conn.h"
#include "net/run_keys.h"
#include "net/socket.h"

namespace pcomm::net {

struct RelayOptions {
  std::string listen = "127.0.0.1:0";
  uint32_t max_circuits = 1024;            // in total
  uint32_t max_circuits_per_peer = 64;     // per peer id named in registrations
  uint32_t max_per_source = 128;           // connections per source address (joins and circuits)
  // A circuit that moved no byte this long is closed. Long: a training run's pool may be
  // quiet for many minutes between outer steps; dead ends are found by TCP keepalive.
  Duration idle_timeout = std::chrono::hours(1);
  uint64_t rate_bytes_per_second = 0;      // per circuit and direction; 0: no cap
  // The run secret (empty: none). With it, registrations are taken only over TLS keyed by
  // it (so only the run's coordinator issues tokens); joins stay plain (a token is a
  // one-time capability, and the peers' own TLS runs end to end through the circuit).
  // Without it the relay listens on loopback only, unless `insecure`.
  std::string secret;
  bool insecure = false;
};

class Relay {
 public:
  explicit Relay(RelayOptions options);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  void start();
  void stop();  // closes every connection and circuit; idempotent
  std::string address() const { return address_; }
  bool running() const { return running_; }

  struct Stats {
    uint64_t circuits_open = 0;
    uint64_t circuits_total = 0;
    uint64_t bytes_forwarded = 0;
    uint64_t refused = 0;  // connections closed for a bad token, garbage or a limit
  };
  Stats stats() const;

 private:
  struct Token {
    std::string peer_a, peer_b;
    TimePoint expires;
    uint64_t waiting_conn = 0;  // the first side's connection, while it waits
  };
  struct Conn {
    std::shared_ptr<FramedConnection> frames;
    std::string source;  // remote host
    std::string token;   // set once it joined
    bool tls = false;    // a coordinator's registration channel (runs with a secret)
  };
  struct Circuit {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  void on_accept();
  // The first byte tells a TLS registration channel from a plain join.
  void on_first_bytes(uint64_t id);
  void start_conn(uint64_t id, std::shared_ptr<Link> link, std::string source, bool tls);
  void on_frame(uint64_t id, uint16_t type, const uint8_t* payload, size_t size);
  void on_closed(uint64_t id);
  void refuse(uint64_t id, const std::string& why);
  void pair(uint64_t first, uint64_t second, const std::string& token);
  void forward(std::shared_ptr<Link> a, std::shared_ptr<Link> b, std::string peer_a, std::string peer_b,
               std::string source_a, std::string source_b, std::shared_ptr<std::atomic<bool>> done);
  void tick();
  void reap_circuits();

  RelayOptions options_;
  Logger log_;
  EventLoop loop_;
  Socket listener_;
  std::string address_;
  std::atomic<bool> running_{false};
  Cancel stopping_;
  Key relay_key_{};  // derived from the secret once (runs with a secret)

  // Loop thread.
  std::map<uint64_t, Conn> conns_;
  std::map<uint64_t, std::pair<Socket, std::string>> unsorted_;  // accepted, first byte not seen yet
  std::map<std::string, Token> tokens_;
  uint64_t next_id_ = 1;

  // Shared with circuit threads, under mutex_.
  mutable std::mutex mutex_;
  std::map<std::string, uint32_t> per_source_;
  std::map<std::string, uint32_t> per_peer_;
  std::vector<Circuit> circuits_;
  Stats stats_;
};

}  // namespace pcomm::net
