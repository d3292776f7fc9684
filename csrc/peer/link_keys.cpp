// LinkKeyring; see link_keys.h.
#include "peer/link_keys.h"

#include <cstring>

namespace pcomm::peer {

void LinkKeyring::add(const proto::LinkKeys& keys) {
  std::map<std::string, net::Key> pairs;
  for (size_t i = 0; i < keys.peers.size(); ++i) {
    net::Key k{};
    std::memcpy(k.data(), keys.keys[i].data(), k.size());
    pairs[keys.peers[i]] = k;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  epochs_[keys.epoch] = std::move(pairs);
  while (epochs_.size() > kKeptKeyEpochs) epochs_.erase(epochs_.begin());
}

std::optional<LinkKeyring::DialKey> LinkKeyring::for_dial(const std::string& self_id, const std::string& remote) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = epochs_.rbegin(); it != epochs_.rend(); ++it) {
    auto k = it->second.find(remote);
    if (k != it->second.end()) return DialKey{net::pair_identity(it->first, self_id), k->second};
  }
  return std::nullopt;
}

net::KeyAnswer LinkKeyring::lookup(const std::string& identity) const {
  uint64_t epoch = 0;
  std::string from;
  if (!net::parse_pair_identity(identity, &epoch, &from)) {
    return net::KeyAnswer::unknown("not a data-link key (a client of another kind, or another run's)");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!epochs_.empty() && epoch > epochs_.rbegin()->first + kMaxEpochsAhead) {
    return net::KeyAnswer::unknown("epoch " + std::to_string(epoch) + " is far ahead of this peer's");
  }
  if (epochs_.empty() || epoch > epochs_.rbegin()->first) return net::KeyAnswer::not_yet();
  auto e = epochs_.find(epoch);
  if (e == epochs_.end()) {
    return net::KeyAnswer::unknown("no link keys of epoch " + std::to_string(epoch) + " here (expired or never issued)");
  }
  auto k = e->second.find(from);
  if (k == e->second.end()) {
    return net::KeyAnswer::unknown("the coordinator issued no link key for peer " + from + " in epoch " +
                                   std::to_string(epoch));
  }
  return net::KeyAnswer::of(k->second);
}

void LinkKeyring::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  epochs_.clear();
}

}  // namespace pcomm::peer
