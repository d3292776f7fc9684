// Communicator: one peer of a run. It keeps a connection to the coordinator (hello,
// heartbeats both ways, topology updates) and composes the parts that reach other
// peers: RemotePeers (a pool of links per remote peer and the path choice: direct,
// punched, relayed), PathAgent (this side of punching and relaying), DataPlane (ops and
// each epoch's link preparation), StateSession (shared state).
//
// One local port: the data listener and the coordinator connection share it (and the
// probe and every punched connection of a pool), so the endpoint the coordinator
// observes is the NAT mapping other peers must reach (remote_peer.h).
//
// Threads: the caller's thread runs the public methods, which post work to this peer's
// EventLoop thread and wait on a condition variable with a deadline; everything that
// touches sockets runs on the loop thread. State shared between the two is under mutex_.
// Any failure of the coordinator link (closed, silent past the heartbeat timeout, an
// Error frame) is recorded once and every current and later wait raises it, until
// connect() starts over as a new peer.
//
// Lock order: a CollectiveOp's mutex may be held while taking mutex_ (an op frees its
// tag on completion), never the reverse: code holding mutex_ copies the ops it needs
// and calls into them after releasing it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <utility>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "net/event_loop.h"
#include "net/frame_conn.h"
#include "peer/activity.h"
#include "peer/collective_op.h"
#include "peer/data_plane.h"
#include "peer/link_resync.h"
#include "peer/path_agent.h"
#include "peer/link_keys.h"
#include "peer/remote_peer.h"
#include "peer/state_session.h"
#include "proto/messages.h"
#include "proto/term_messages.h"
#include "proto/waiting_messages.h"

namespace pcomm::peer {

// Commits remembered for a coordinator that replaces a lost one (Rejoin.committed and
// Rejoin.state_committed; at most proto::kMaxRejoinOps).
inline constexpr size_t kCommitsKept = 32;

struct CommunicatorOptions {
  std::string coordinator;  // "host:port"
  // Failover (communicator_failover.cpp): more coordinators to try ("host:port", e.g. a
  // standby), how long to keep trying after the coordinator is lost before failing with
  // CoordinatorLostError (zero: fail at once), and an optional lookup of the run's newest
  // coordinator (the DHT record; "" when none), tried after the addresses.
  std::vector<std::string> more_coordinators;
  Duration coordinator_grace = std::chrono::seconds(30);
  std::function<std::string()> find_coordinator;
  std::string run = "default";
  uint32_t connections_per_peer = 4;
  Duration timeout = std::chrono::seconds(30);
  std::string data_listen = "0.0.0.0:0";  // where this peer accepts data links
  // The run secret: empty for a run without one (loopback only). With it, the coordinator
  // link is TLS keyed by it, and every data link TLS keyed by the coordinator's pair keys.
  std::string secret;
};

struct SyncResult {
  uint32_t tensors_received = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t revision = 0;
  uint64_t content_hash = 0;
};

class Communicator {
 public:
  explicit Communicator(CommunicatorOptions options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // Blocking calls; each waits at most `timeout` and throws a pcomm error type.
  void connect(Duration timeout);
  void update_topology(Duration timeout);
  void close();
  // Starts an all-reduce (announces it to the coordinator) and returns its handle.
  // Throws InvalidArgument when the tag is already in flight on this peer.
  std::shared_ptr<CollectiveOp> all_reduce(const AllReduceRequest& request);
  // Brings the tensors to the content chosen among the peers (see coord/state_sync.h).
  // On failure the tensors are untouched; on success every participant holds the same
  // bytes and the returned revision.
  SyncResult sync_shared_state(const std::vector<StateTensor>& tensors, uint64_t revision,
                               proto::SyncStrategy strategy, Duration timeout);

  int world_size() const;
  int rank() const;
  uint64_t epoch() const;
  std::string peer_id() const;
  // This incarnation of the run (drawn by its coordinator; "" before connect()).
  std::string run_id() const;
  // The coordinator's term this peer follows (0 before connect()), and its address.
  uint64_t term() const;
  std::string coordinator() const;
  // The application's progress counter (DiLoCo: the outer step), shown by `pcomm status`.
  void set_step(uint64_t step);
  std::vector<std::string> peers() const;
  uint32_t pending_peers() const;
  bool connected() const;
  std::string data_address() const;
  // The current pools to this peer's ring neighbours (comm.links()).
  std::vector<LinkInfo> links() const;
  Duration default_timeout() const { return options_.timeout; }
  // Called every 100 ms by connect(), update_topology() and sync_shared_state() while they
  // wait (never with a lock held); returning true makes the wait throw Interrupted.
  void set_interrupt_check(std::function<bool()> check) { interrupt_check_ = std::move(check); }

 private:
  // kReconnecting: the coordinator was lost; links, peer id and state are kept while
  // the reconnect thread looks for a coordinator (communicator_failover.cpp).
  enum class State { kIdle, kJoining, kActive, kReconnecting, kFailed, kClosed };
  // The reconnect thread's current attempt, as the loop thread sees it.
  enum class Attempt { kNone, kWaiting, kWelcomed, kEnded };

  // Loop thread.
  void on_coordinator_frame(uint16_t type, const uint8_t* payload, size_t size);
  void on_coordinator_closed(const std::string& reason);
  // Loop thread: the coordinator link ended. An accepted peer starts reconnecting (within
  // coordinator_grace); a reconnect attempt moves on; anyone else fails.
  void lose_coordinator(const std::string& reason);
  // Closes the coordinator connection (if any) without reacting to its end; loop thread.
  void drop_coordinator_link(const char* why);
  // Installs a new coordinator connection (loop thread); `first` is its first frame.
  void install_coordinator(std::shared_ptr<net::Link> link, std::vector<uint8_t> first);
  // The reconnect thread: tries the addresses until one welcomes this peer back.
  void reconnect_loop();
  bool try_rejoin(const std::string& address, TimePoint until);
  proto::Rejoin rejoin_message() const;  // mutex_ held
  // Caller thread, mutex_ held: while reconnecting, waits (within deadline) until active.
  void await_reconnected(std::unique_lock<std::mutex>& lock, const Deadline& deadline, const char* what);
  // The addresses to try, in order: the current one, then the others given.
  std::vector<std::string> coordinator_addresses() const;
  void on_topology(const proto::Topology& topology);
  void on_data_accept();
  // A connection another peer opened to us (accepted, punched or relayed): its first
  // frame says what it is for (LinkHello: a pool; FetchHello: a state fetch).
  void on_inbound_link(std::shared_ptr<net::Link> link);
  void route_link_hello(const proto::LinkHello& hello, const std::shared_ptr<net::FramedConnection>& conn);
  void on_observe(const proto::Observe& observe);
  // Caller thread: throws Interrupted when the interrupt check fires (Ctrl-C).
  void check_interrupt(const char* what);
  // The link to the coordinator, authenticated when the run has a secret (caller thread).
  std::shared_ptr<net::Link> coordinator_link(net::Socket socket, const Deadline& deadline, const std::string& address);
  // One join attempt of connect(), starting with the attempt-th address.
  void connect_once(const Deadline& deadline, Duration timeout, size_t attempt);
  // Driver side of a data link: TLS with the pair's newest key (data-plane thread).
  std::shared_ptr<net::Link> secure_link(std::shared_ptr<net::Link> link, const std::string& peer, TimePoint deadline,
                                         const net::Cancel* cancel);
  // New link keys: inbound handshakes that waited for them go on (loop thread).
  void on_link_keys(const proto::LinkKeys& keys);
  // One epoch's link preparation: what its tasks on the data-plane thread share.
  struct Preparation {
    uint64_t epoch = 0;
    proto::RingMember self;
    std::string left, right;
    std::shared_ptr<net::Cancel> cancel;
    std::shared_ptr<Resync> resync;
  };
  // Data-plane thread: this epoch's pools to both neighbours, re-synchronised. `first`:
  // the epoch's first run (a relayed pool may try an upgrade only then).
  void prepare_links(const std::shared_ptr<Preparation>& prep, bool first);
  // Loop thread: a neighbour's pool was replaced after this epoch's links were reported
  // ready (the driver opened a new one): re-synchronise it and report again.
  void on_pool_replaced(const std::string& peer);
  void heartbeat_tick(uint64_t session);
  // This peer's PeerReport to the coordinator (loop thread; accepted peers only).
  void send_report(TimePoint now);
  void fail(ErrorKind kind, const std::string& message);
  void teardown_links();
  void on_coll_go(const proto::CollGo& go);
  void on_waiting(const proto::Waiting& waiting);
  void on_coll_result(const proto::CollOutcome& result);
  void on_state_plan(const proto::StatePlan& plan);
  void on_state_result(const proto::StateOutcome& result);
  void route_fetch_hello(const proto::FetchHello& hello, const std::shared_ptr<net::FramedConnection>& conn);
  void send_state_report(uint64_t call, uint64_t sync_id, proto::Outcome outcome, const std::string& message);
  void send_coll_report(uint32_t tag, uint64_t call, uint64_t op_id, proto::Outcome outcome, const std::string& message);
  // Ends every op in flight with this error (coordinator lost, closed...).
  void fail_ops(ErrorKind kind, const std::string& message);

  // Caller thread.
  void wait_until(std::unique_lock<std::mutex>& lock, const Deadline& deadline, const char* what,
                  const std::function<bool()>& done);
  [[noreturn]] void raise_failure() const;
  std::string log_context() const;

  CommunicatorOptions options_;
  std::function<bool()> interrupt_check_;
  Logger log_;
  net::EventLoop loop_;
  bool loop_started_ = false;

  // Loop-thread state.
  std::shared_ptr<net::FramedConnection> coord_;
  net::Socket data_listener_;
  std::shared_ptr<std::atomic<int>> handshakes_ = std::make_shared<std::atomic<int>>(0);  // inbound, before hello
  std::shared_ptr<net::Cancel> prepare_cancel_;  // the current epoch's link preparation (under mutex_)
  std::shared_ptr<Preparation> preparation_;     // loop thread
  TimePoint last_heard_;
  TimePoint last_report_;
  Duration heartbeat_timeout_{};
  uint64_t session_ = 0;  // bumps on every connect(), so stale timers stop
  bool welcomed_ = false;  // the current coordinator connection got its Welcome (loop thread);
                           // nothing but the first frame goes out before it

  // Shared state, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  State state_ = State::kIdle;
  ErrorKind fail_kind_ = ErrorKind::kCoordinatorLost;  // meaningful in kFailed
  std::string fail_message_;
  std::string peer_id_;
  std::string run_id_;
  uint64_t term_ = 0;
  std::string coordinator_address_;  // the coordinator followed now (or last)
  uint64_t losses_ = 0;              // coordinator losses so far: a wait in progress is aborted by one
  TimePoint lost_since_;
  std::string lost_reason_;
  Attempt attempt_ = Attempt::kNone;
  std::string attempt_error_;
  std::deque<std::pair<uint64_t, uint64_t>> committed_;  // (term, op id) of the last commits
  std::deque<std::pair<uint64_t, uint64_t>> state_committed_;  // (term, sync id) of the last synced
  uint64_t state_revision_ = 0;  // of the last committed sync
  uint64_t state_hash_ = 0;
  std::thread reconnect_thread_;
  Activity activity_;
  std::string data_address_;
  uint64_t epoch_ = 0;
  uint64_t ready_epoch_ = 0;
  std::vector<std::string> ring_;
  int rank_ = -1;
  uint32_t pending_peers_ = 0;
  uint64_t topo_seq_ = 0;
  uint64_t topo_done_seq_ = 0;
  std::string topo_waiting_;  // the coordinator's Waiting notice for call topo_seq_
  std::shared_ptr<LinkSet> links_;  // data links of epoch_ once built (used by collectives)
  std::map<uint32_t, std::shared_ptr<CollectiveOp>> ops_;  // in flight, by tag
  uint64_t next_call_ = 1;
  std::shared_ptr<StateSession> state_session_;  // the sync_shared_state call in progress
  std::unique_ptr<DataPlane> data_plane_;
  std::unique_ptr<PathAgent> agent_;
  std::unique_ptr<RemotePeers> remotes_;
  std::shared_ptr<LinkKeyring> keyring_ = std::make_shared<LinkKeyring>();
  std::vector<std::weak_ptr<net::FramedConnection>> inbound_tls_;  // loop thread: handshakes in progress
  proto::RingMember self_member_;  // as the last topology described this peer
  std::vector<std::string> neighbours_;  // left, right (for links())

  mutable std::mutex log_mutex_;  // guards log_context_ only, so logging never takes mutex_
  std::string log_context_ = "peer - epoch 0";
  void update_log_context(const std::string& peer_id, uint64_t epoch);
};

}  // namespace pcomm::peer
