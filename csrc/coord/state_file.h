// What a coordinator persists in its state_dir so that a restart never reuses a term:
// the run, its incarnation (run id), the current term, and the last epoch and ring.
// Written atomically (a temporary file, fsync, rename, fsync of the directory) at every
// term and every new ring; read once at start.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pcomm::coord {

struct PersistedState {
  std::string run;
  std::string run_id;
  uint64_t term = 0;
  uint64_t epoch = 0;
  std::vector<std::string> ring;
};

// Nothing there yet: nullopt. A file that does not parse, or belongs to another run,
// throws InvalidArgument naming the file and what to do.
std::optional<PersistedState> load_state(const std::string& dir, const std::string& run);
// Throws IoError when the directory cannot be written.
void save_state(const std::string& dir, const PersistedState& state);

}  // namespace pcomm::coord
