// The coordinator's state file; see state_file.h. Format (text, one field per line):
//   pcomm coordinator state 1
//   run <hex of the run name>
//   run_id <16 hex digits>
//   term <n>
//   epoch <n>
//   ring <id>,<id>,...
#include "coord/state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/errors.h"

namespace pcomm::coord {

namespace {

constexpr const char* kHeader = "pcomm coordinator state 1";
constexpr const char* kFile = "coordinator.state";

std::string to_hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string from_hex(const std::string& s) {
  if (s.size() % 2) throw InvalidArgument("odd hex");
  std::string out;
  for (size_t i = 0; i < s.size(); i += 2) out += static_cast<char>(std::stoi(s.substr(i, 2), nullptr, 16));
  return out;
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) throw IoError("cannot open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw IoError("cannot fsync " + path + ": " + std::strerror(errno));
}

}  // namespace

std::optional<PersistedState> load_state(const std::string& dir, const std::string& run) {
  std::string path = dir + "/" + kFile;
  std::ifstream in(path);
  if (!in) return std::nullopt;
  auto bad = [&](const std::string& why) {
    return InvalidArgument("the coordinator state file " + path + " is unreadable (" + why +
                           "); move it away to start this coordinator without it");
  };
  std::string line;
  if (!std::getline(in, line) || line != kHeader) throw bad("unknown header");
  PersistedState s;
  bool seen[5] = {};
  while (std::getline(in, line)) {
    auto space = line.find(' ');
    std::string key = line.substr(0, space), value = space == std::string::npos ? "" : line.substr(space + 1);
    try {
      if (key == "run") {
        s.run = from_hex(value);
        seen[0] = true;
      } else if (key == "run_id") {
        s.run_id = value;
        seen[1] = true;
      } else if (key == "term") {
        s.term = std::stoull(value);
        seen[2] = true;
      } else if (key == "epoch") {
        s.epoch = std::stoull(value);
        seen[3] = true;
      } else if (key == "ring") {
        std::stringstream ids(value);
        std::string id;
        while (std::getline(ids, id, ',')) {
          if (!id.empty()) s.ring.push_back(id);
        }
        seen[4] = true;
      }
    } catch (const std::exception&) {
      throw bad("bad value of " + key);
    }
  }
  for (bool b : seen) {
    if (!b) throw bad("a field is missing");
  }
  if (s.run != run) {
    throw InvalidArgument("the state directory " + dir + " belongs to run '" + s.run + "', not '" + run +
                          "': give each run its own state_dir");
  }
  return s;
}

void save_state(const std::string& dir, const PersistedState& state) {
  std::string path = dir + "/" + kFile, tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw IoError("cannot write " + tmp + ": " + std::strerror(errno));
    out << kHeader << "\nrun " << to_hex(state.run) << "\nrun_id " << state.run_id << "\nterm " << state.term
        << "\nepoch " << state.epoch << "\nring ";
    for (size_t i = 0; i < state.ring.size(); ++i) out << (i ? "," : "") << state.ring[i];
    out << "\n";
    out.flush();
    if (!out) throw IoError("cannot write " + tmp);
  }
  fsync_path(tmp, O_RDONLY);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw IoError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

}  // namespace pcomm::coord
