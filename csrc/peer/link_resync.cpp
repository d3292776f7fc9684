// Epoch markers on a pool's links; see link_resync.h.
#include "peer/link_resync.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "core/errors.h"
#include "proto/wire.h"

namespace pcomm::peer {

namespace {
constexpr size_t kMarkerSize = 32;
using Marker = std::array<uint8_t, kMarkerSize>;

Marker marker(char kind, uint64_t epoch, uint64_t pool) {
  Marker m{};
  static_assert(proto::kResyncPrefixSize == 15, "a marker is 15 prefix bytes, a kind, epoch and pool");
  std::memcpy(m.data(), proto::kResyncPrefix, proto::kResyncPrefixSize);
  m[15] = static_cast<uint8_t>(kind);
  for (int i = 0; i < 8; ++i) {
    m[16 + i] = static_cast<uint8_t>(epoch >> (8 * i));
    m[24 + i] = static_cast<uint8_t>(pool >> (8 * i));
  }
  return m;
}

}  // namespace

struct Resync::Stream {
  net::Link* link;
  std::shared_ptr<Pool> pool;
  size_t index = 0;
  int marks_sent = 0;
  Marker mark, done;
  std::vector<uint8_t> out;  // a marker being sent
  size_t out_pos = 0;
  TimePoint last_mark{};
  bool seen_peer = false;    // the other side's MARK (or DONE) arrived
  bool done_queued = false;
  bool peer_done = false;
  std::vector<uint8_t> window;  // received bytes not yet ruled out as a marker's start

  bool sending() const { return out_pos < out.size(); }
  bool finished() const { return done_queued && !sending() && peer_done; }
  void queue(const Marker& m) {
    out.assign(m.begin(), m.end());
    out_pos = 0;
  }
};

namespace {
using Stream = Resync::Stream;

// Finds `m` in the window; drops everything up to its end and returns true.
bool take(std::vector<uint8_t>& window, const Marker& m) {
  auto at = std::search(window.begin(), window.end(), m.begin(), m.end());
  if (at == window.end()) return false;
  window.erase(window.begin(), at + kMarkerSize);
  return true;
}

void receive(Stream& s) {
  uint8_t buf[64 * 1024];
  while (!s.peer_done) {
    size_t n = s.link->recv_some(buf, sizeof buf);
    if (n == 0) return;
    s.window.insert(s.window.end(), buf, buf + n);
    // The other side sends MARKs, then one DONE, then (later) the next epoch's data.
    while (!s.peer_done) {
      auto at_done = std::search(s.window.begin(), s.window.end(), s.done.begin(), s.done.end());
      if (at_done != s.window.end()) {
        s.peer_done = s.seen_peer = true;
        auto after = at_done + kMarkerSize;
        s.link->unread(&*after, static_cast<size_t>(s.window.end() - after));
        s.window.clear();
        return;
      }
      if (!take(s.window, s.mark)) break;
      s.seen_peer = true;
    }
    if (s.window.size() >= kMarkerSize) s.window.erase(s.window.begin(), s.window.end() - (kMarkerSize - 1));
  }
}

// Which streams were not done and where each stood, for the timeout's message.
std::string describe(const std::vector<Stream*>& streams) {
  std::string out;
  for (const Stream* sp : streams) {
    const Stream& s = *sp;
    if (s.finished()) continue;
    if (!out.empty()) out += "; ";
    out += "peer " + s.pool->peer + " (" + net::link_kind_name(s.pool->kind) + ", link " +
           std::to_string(s.index + 1) + " of " + std::to_string(s.pool->links.size()) + "): " +
           std::to_string(s.marks_sent) + " marks sent, " +
           (s.peer_done ? "its DONE seen" : s.seen_peer ? "its MARK seen, no DONE" : "nothing heard") +
           (s.sending() ? ", our marker stuck in the send buffer" : "");
  }
  return out;
}

// Moves what can move now on one stream: markers out, bytes in.
void pump(Stream& s, TimePoint now) {
  for (int round = 0; round < 2; ++round) {
    receive(s);
    if (!s.sending()) {
      if (s.seen_peer && !s.done_queued) {
        s.queue(s.done);
        s.done_queued = true;
      } else if (!s.seen_peer && now - s.last_mark >= kMarkRepeat) {
        s.queue(s.mark);
        s.last_mark = now;
        ++s.marks_sent;
      }
    }
    while (s.sending()) {
      iovec iov{s.out.data() + s.out_pos, s.out.size() - s.out_pos};
      size_t n = s.link->send_some(&iov, 1);
      if (n == 0) break;
      s.out_pos += n;
    }
  }
}
}  // namespace

Resync::Resync(uint64_t epoch) : epoch_(epoch) {}
Resync::~Resync() = default;

void Resync::run(const std::vector<std::shared_ptr<Pool>>& pools, TimePoint deadline, const net::Cancel& cancel) {
  std::vector<Stream*> streams;
  for (const auto& p : pools) {
    for (size_t i = 0; i < p->links.size(); ++i) {
      auto& slot = streams_[p->links[i]];
      if (!slot) {  // a link this epoch has not seen yet
        slot = std::make_unique<Stream>();
        slot->link = p->links[i].get();
        slot->pool = p;
        slot->index = i;
        slot->mark = marker('M', epoch_, p->id);
        slot->done = marker('D', epoch_, p->id);
      }
      streams.push_back(slot.get());
    }
  }
  for (;;) {
    auto now = Clock::now();
    TimePoint wake_by = deadline;
    std::vector<net::LinkInterest> interests;
    for (Stream* s : streams) {
      pump(*s, now);
      if (s->finished()) continue;
      interests.push_back({s->link, s->sending(), !s->peer_done});
      // Repeat the MARK on time, but not while the last one is still stuck in a full send
      // buffer (that wake-up time has passed: it would make this loop spin).
      if (!s->seen_peer && !s->sending()) wake_by = std::min(wake_by, s->last_mark + kMarkRepeat);
    }
    if (interests.empty()) return;
    try {
      net::wait_links(interests, deadline, wake_by, &cancel, "link resynchronisation");
    } catch (const TimeoutError&) {
      std::vector<std::shared_ptr<Pool>> stuck;
      for (Stream* s : streams) {
        if (!s->finished() && std::find(stuck.begin(), stuck.end(), s->pool) == stuck.end()) stuck.push_back(s->pool);
      }
      throw ResyncTimeout("link resynchronisation timed out: " + describe(streams), std::move(stuck));
    }
  }
}

}  // namespace pcomm::peer
