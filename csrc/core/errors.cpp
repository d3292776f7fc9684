// ErrorKind <-> exception type, in one place; see errors.h.
#include "core/errors.h"

namespace pcomm {

void throw_error(ErrorKind kind, const std::string& message) {
  switch (kind) {
    case ErrorKind::kTimeout: throw TimeoutError(message);
    case ErrorKind::kPeerLost: throw PeerLostError(message);
    case ErrorKind::kAborted: throw Aborted(message);
    case ErrorKind::kInvalid: throw InvalidArgument(message);
    case ErrorKind::kProtocol: throw ProtocolError(message);
    case ErrorKind::kCoordinatorLost: throw CoordinatorLostError(message);
    case ErrorKind::kUnauthenticated: throw AuthenticationError(message);
  }
  throw Aborted(message);
}

ErrorKind kind_of(const Error& e) {
  if (dynamic_cast<const TimeoutError*>(&e)) return ErrorKind::kTimeout;
  if (dynamic_cast<const PeerLostError*>(&e) || dynamic_cast<const IoError*>(&e)) return ErrorKind::kPeerLost;
  if (dynamic_cast<const InvalidArgument*>(&e)) return ErrorKind::kInvalid;
  if (dynamic_cast<const ProtocolError*>(&e)) return ErrorKind::kProtocol;
  if (dynamic_cast<const CoordinatorLostError*>(&e)) return ErrorKind::kCoordinatorLost;
  if (dynamic_cast<const AuthenticationError*>(&e)) return ErrorKind::kUnauthenticated;
  return ErrorKind::kAborted;
}

}  // namespace pcomm
