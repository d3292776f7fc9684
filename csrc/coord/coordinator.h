// Coordinator: the server side of the coordination plane. It owns one EventLoop thread,
// accepts peer connections, turns their frames into Membership events and carries out
// the resulting Actions. It holds no tensors and no Python state.
//
// NAT observation (before a peer is welcomed): the address its connection comes from is
// its observed endpoint (the NAT mapping of its shared port). The coordinator sends
// Observe{nonce, probe_port}; the peer connects from the same port to the second
// (probe) listener: a different mapping there means a port-randomising NAT. Meanwhile
// the coordinator dials the observed endpoint back: if that gets through, the peer is
// reachable. Both facts travel in every Topology (peer/remote_peer.h uses them).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <condition_variable>
#include <thread>
#include <string>

#include "coord/collectives.h"
#include "coord/membership.h"
#include "coord/path_broker.h"
#include "coord/peer_reports.h"
#include "coord/relay_registry.h"
#include "coord/terms.h"
#include "coord/state_sync.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/event_loop.h"
#include "net/frame_conn.h"
#include "net/run_keys.h"
#include "proto/status_messages.h"
#include "proto/term_messages.h"

namespace pcomm::coord {

struct CoordinatorOptions {
  std::string listen = "127.0.0.1:0";
  std::string run = "default";
  Duration heartbeat_timeout = std::chrono::seconds(5);
  std::vector<std::string> relays;  // "host:port" of relays for peers that cannot connect otherwise
  // The run secret (empty: none). With it every peer connection is TLS with a key derived
  // from it, and peers get per-pair keys for their data links. Without it the coordinator
  // listens on loopback only, unless `insecure`.
  std::string secret;
  bool insecure = false;
  // A ring member that has not entered a barrier others wait in for this long, while it
  // waits in none itself, is dropped (coord/stalls.h). Zero: never.
  Duration straggler_timeout = std::chrono::seconds(10);
  // Failover (coord/terms.h, docs/failover.md). state_dir: where the term and last ring
  // persist (empty: nowhere). standby: serve nobody until `peer_of` (the primary's
  // "host:port") has not answered for heartbeat_timeout, then take over. peer_of without
  // standby: watch that coordinator only to fence it. gather_window: how long a new
  // term waits for the last ring's peers to re-register.
  std::string state_dir;
  bool standby = false;
  std::string peer_of;
  Duration gather_window = std::chrono::seconds(2);
};


class Coordinator {
 public:
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Binds the listening socket (errors are thrown here) and starts the loop thread.
  void start();
  // Closes every connection (peers get a shutdown error) and joins the thread. Idempotent.
  void stop();
  // The "host:port" actually bound; valid after start().
  std::string address() const;
  bool running() const { return running_; }
  // Adds a relay (e.g. one found in the DHT); any thread.
  void add_relay(const std::string& address);
  std::vector<std::string> relays() const;
  // The key this coordinator issues to peers a and b for their links in epoch (runs with
  // a secret). For tests that play a member: whoever owns the coordinator holds them all.
  net::Key pair_key(uint64_t epoch, const std::string& a, const std::string& b) const {
    return net::pair_key(pair_master_, epoch, a, b);
  }

  // This incarnation of the run (random, drawn at construction, or adopted from the
  // state_dir or the peers that re-register; peers see it as run_id). Any thread.
  std::string run_id() const;
  // The current term (0 while a standby has not taken over) and role; any thread.
  uint64_t term() const;
  std::string role() const;
  // Snapshot for tests and the CLI; safe from any thread.
  struct Snapshot {
    uint64_t term = 0;
    std::string role;
    std::string run_id;
    uint64_t epoch = 0;
    std::vector<std::string> ring;
    uint32_t pending = 0;
    size_t collectives_running = 0;
    bool state_sync_planned = false;  // a sync's plans went out and it is not decided yet
    uint64_t punch_requests = 0, relay_requests = 0;  // paths peers asked for (PathBroker)
  };
  Snapshot snapshot() const;

 private:
  // A peer between its Hello and its Welcome: what the NAT observation found so far.
  struct Observation {
    std::string data_address;
    uint64_t nonce = 0;
    bool probed = false, dialed = false;
    std::string probe_seen;  // the mapping the probe listener saw
    bool reachable = false;
    net::Socket dial_back;
  };
  struct Conn {
    std::shared_ptr<net::FramedConnection> link;
    std::string peer_id;  // empty until Hello
    TimePoint opened;
    TimePoint last_sent;
    std::shared_ptr<Observation> observing;  // set between Hello and Welcome
    std::string source;          // the remote host, while the connection is unauthenticated
    std::string rejoining;       // a peer id that re-registered and waits for the new term
    bool deferred = false;       // its hello waits until the term forms
    bool left = false;           // it sent Leave: its close is a departure, not a loss
  };

  enum class Role { kServing, kGathering, kStandby };
  // A peer that re-registered while a new term gathers (coordinator_terms.cpp).
  struct Gathered {
    uint64_t conn_id = 0;
    proto::Rejoin rejoin;
  };

  void on_accept();
  void on_probe_accept();
  void start_dial_back(uint64_t conn_id);
  void finish_observation(uint64_t conn_id);
  void on_frame(uint64_t conn_id, uint16_t type, const uint8_t* payload, size_t size);
  void on_hello(uint64_t conn_id, const proto::Hello& hello);
  void on_closed(uint64_t conn_id, const std::string& reason);
  // An unauthenticated connection leaves the caps (it said hello, or it closed).
  void release_stranger(Conn& conn);
  // Runs with a secret: the pair keys of this epoch's ring for one peer.
  void send_link_keys(const std::string& peer, const proto::Topology& topology);
  // Carries out actions, then lets the two decision makers react to each other until
  // nothing changes (a new epoch aborts collectives; finished collectives unblock
  // admission; an abort asks for a relink).
  void apply(const Actions& actions);
  void execute(const Actions& actions);
  View view() const;
  void send_to_peer(const std::string& peer, std::vector<uint8_t> frame);
  // Failpoints coordinator.op_commit / coordinator.sync_commit (core/failpoint.h): the
  // commit just sent is the last message a peer gets; SIGKILL once it has left.
  void die_after_last_send(const std::string& what);
  void tick();
  // Failover (coordinator_terms.cpp).
  void on_rejoin(uint64_t conn_id, const proto::Rejoin& rejoin);
  void try_form_term(TimePoint now);
  void form_term(const TermDecision& decision, TimePoint now);
  // Pending all-reduces of the re-registered peers: committed if anyone saw the commit.
  void resolve_pending_ops();
  void resolve_pending_of(const std::string& peer, const proto::Rejoin& rejoin);
  void send_term_welcome(Conn& conn, const std::string& peer);
  void log_shared_state() const;
  void on_status_request(uint64_t conn_id, const proto::StatusRequest& request);
  // A hello while no term serves: held until one does (refused by a standby).
  void defer_hello(uint64_t conn_id, const proto::Hello& hello);
  // A term serves now: the held hellos go on as if they had just arrived.
  void take_deferred_hellos();
  std::string watched() const;
  void step_down(uint64_t newer_term, const std::string& newer);
  void take_over(const std::string& why);
  void watch_loop();
  void on_watch_result(bool ok, const proto::StatusReply& reply, const std::string& error);
  // Back to serving with an empty ring (a gathering nobody came to); deferred hellos go on.
  void serve_fresh(const std::string& why);
  // Closes every peer connection with this error; membership, collectives and syncs start over.
  void reset_run(proto::ErrorCode code, const std::string& why);
  void persist();
  static const char* role_name(Role role);
  // Waiting notices for barriers a second old, and the straggler rule (coord/stalls.h).
  void check_stalls(TimePoint now);
  // Logs a new epoch's ring with who joined and who is gone since the last one logged.
  void log_ring_change();
  // What `pcomm status` shows (loop thread).
  proto::StatusReply status() const;
  void publish_snapshot();
  std::string new_peer_id();

  CoordinatorOptions options_;
  Logger log_;
  net::EventLoop loop_;
  bool dying_ = false;  // a failpoint fired: send nothing more (loop thread)
  net::Socket listener_;
  net::Socket probe_listener_;
  uint16_t probe_port_ = 0;
  int probe_conns_ = 0;  // loop thread
  std::map<uint64_t, uint64_t> conn_of_nonce_;
  std::string address_;
  std::atomic<bool> running_{false};
  Duration heartbeat_interval_;
  Membership membership_;
  Collectives collectives_;
  StateSync state_sync_;
  View last_view_;
  std::vector<std::string> logged_ring_;
  std::map<uint64_t, Conn> conns_;
  std::unique_ptr<RelayRegistry> relays_;
  std::unique_ptr<PathBroker> paths_;
  mutable std::mutex relays_mutex_;
  std::vector<std::string> relay_list_;  // a copy for other threads
  std::map<std::string, uint64_t> conn_of_peer_;
  uint64_t next_conn_id_ = 1;
  std::map<std::string, int> strangers_per_source_;  // connections before hello, by host
  int strangers_ = 0;
  bool trim_due_ = false;  // strangers left: hand freed memory back to the system
  const net::Key pair_master_ = net::random_key();  // this coordinator's root of the pair keys
  net::Key coordinator_key_{};  // derived from the secret once (runs with a secret)
  std::mt19937_64 rng_;
  std::string run_id_;        // this incarnation of the run (Welcome.run_id); loop thread after start
  PeerReports reports_;       // loop thread
  // Failover state, loop thread (coordinator_terms.cpp).
  Role role_ = Role::kServing;
  uint64_t term_ = 0;        // the term this coordinator serves (0: none yet)
  uint64_t known_term_ = 0;  // the highest term seen anywhere (persisted, reported, watched)
  std::string watched_;      // the coordinator watched (peer_of, or the one this stepped down to); watch_mutex_
  TimePoint watched_ok_;     // its last answer
  std::map<std::string, Gathered> gathered_;  // peer id -> its re-registration
  TimePoint gather_since_;  // gathering began (3 windows with nobody: serve an empty ring)
  TimePoint first_rejoin_;
  // Members of the term just formed that have not sent anything since (their Welcome may
  // have gone to a connection they gave up on), and what that formation saw committed.
  std::set<std::string> unconfirmed_;
  std::set<std::pair<uint64_t, uint64_t>> formation_commits_, formation_syncs_;  // the first Rejoin gathered now (the window of decide_term)
  std::vector<std::pair<uint64_t, proto::Hello>> deferred_hellos_;  // hellos that wait for the term
  std::map<std::string, TimePoint> lost_claims_;  // standby: peers of the primary that came to us
  std::vector<std::string> watched_ring_;         // standby: the primary's ring, from its status
  std::thread watcher_;
  mutable std::mutex watch_mutex_;
  std::condition_variable watch_cv_;
  bool watch_stop_ = false;
  std::map<std::pair<uint8_t, uint32_t>, std::vector<std::string>> notified_;  // stall -> missing peers last told
  std::map<std::string, TimePoint> last_not_idle_;  // ring member -> last tick it was in a barrier or busy
  mutable std::mutex snapshot_mutex_;
  Snapshot snapshot_;
};

}  // namespace pcomm::coord
