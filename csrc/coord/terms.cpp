// The term rule; see terms.h.
#include "coord/terms.h"

#include <algorithm>
#include <set>

namespace pcomm::coord {

TermDecision decide_term(const std::vector<Registration>& registered, TimePoint since, TimePoint now,
                         Duration window) {
  TermDecision d;
  if (registered.empty()) {
    d.reason = "no peer has re-registered";
    return d;
  }
  const Registration* last = &registered.front();
  uint64_t max_epoch = 0;
  std::set<std::string> back;
  for (const auto& r : registered) {
    if (std::make_pair(r.term, r.epoch) > std::make_pair(last->term, last->epoch)) last = &r;
    max_epoch = std::max(max_epoch, r.epoch);
    back.insert(r.peer);
  }
  const std::vector<std::string>& last_ring = last->ring;
  size_t of_last = 0;
  for (const auto& p : last_ring) of_last += back.count(p);
  size_t n = last_ring.size();
  std::string tally = std::to_string(of_last) + " of the last ring's " + std::to_string(n) + " peers are back";
  if (of_last == n) {
    d.form = true;
    d.reason = "all " + std::to_string(n) + " peers of the last ring are back";
  } else if (2 * of_last > n && now - since >= window) {
    d.form = true;
    d.reason = "a majority (" + tally + ") after the gathering window";
  } else if (now - since >= 3 * window) {
    d.form = true;
    d.reason = "fewer than a majority (" + tally + ") after 3 gathering windows: going on with them";
  } else {
    d.reason = "gathering: " + tally;
    return d;
  }
  for (const auto& p : last_ring) {
    if (back.count(p)) d.ring.push_back(p);
  }
  for (const auto& p : back) {  // std::set: by id
    if (std::find(last_ring.begin(), last_ring.end(), p) == last_ring.end()) d.ring.push_back(p);
  }
  d.epoch = max_epoch + 1;
  return d;
}

}  // namespace pcomm::coord
