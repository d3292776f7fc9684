// LinkKeyring: the data-link keys the coordinator issued to this peer (proto/key_messages.h),
// for the last few epochs. The side that opens a link proves the newest key it holds for
// the pair; the side that accepts looks the client's PSK identity up here. An identity
// from an epoch this peer has not heard of yet is "not yet" (the opener may be ahead of
// our topology: the handshake waits for the keys); one from an epoch too old, or a pair
// the coordinator never keyed, is refused.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "net/run_keys.h"
#include "net/tls_link.h"
#include "proto/key_messages.h"

namespace pcomm::peer {

// How many epochs of keys a peer keeps (links opened in an older epoch stay open: their
// handshake is long done).
inline constexpr size_t kKeptKeyEpochs = 16;
// An opener may be ahead of this peer's topology, but not by more epochs than this.
inline constexpr uint64_t kMaxEpochsAhead = 4;

class LinkKeyring {
 public:
  struct DialKey {
    std::string identity;
    net::Key key;
  };
  void add(const proto::LinkKeys& keys);  // any thread
  // The key to open a link to `remote` with, and the identity naming it.
  std::optional<DialKey> for_dial(const std::string& self_id, const std::string& remote) const;
  net::KeyAnswer lookup(const std::string& identity) const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::map<uint64_t, std::map<std::string, net::Key>> epochs_;
};

}  // namespace pcomm::peer
