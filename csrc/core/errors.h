// pcomm's typed errors. Every failure the core reports is one of these; the bindings map
// each type to one Python exception in pcomm.errors at a single boundary
// (bindings/register_errors.cpp). docs/errors.md describes when each is raised.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace pcomm {

// One kind per failure, from the socket up to Python: each kind is exactly one exception
// type below (throw_error), the value the wire carries for it (proto::Outcome shares
// this numbering, with 0 for success), and what kind_of finds in a caught Error. An I/O
// error on a data link is kPeerLost: the peer at its other end is lost to this op.
enum class ErrorKind : uint8_t {
  kTimeout = 1,
  kPeerLost = 2,
  kAborted = 3,
  kInvalid = 4,
  kProtocol = 5,
  kCoordinatorLost = 7,  // local only: never sent on the wire
  kUnauthenticated = 8,  // local only: the other side refused this one's credentials
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A socket or system call failed (connection refused, reset, address in use...).
class IoError : public Error {
 public:
  using Error::Error;
};

// A blocking call ran past its deadline.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// A peer this operation depended on died, froze or was cut off; or this peer itself was
// dropped from the run by the coordinator.
class PeerLostError : public Error {
 public:
  using Error::Error;
};

// The coordinator closed the connection, died or stopped answering heartbeats.
class CoordinatorLostError : public Error {
 public:
  using Error::Error;
};

// Bytes on a socket broke the wire protocol (bad magic, version, length, or content).
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// The caller passed something unusable; the message says what to fix.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// The other side refused to talk: this side lacks the run's secret (or holds another
// run's), or a data link's key was not issued to it.
class AuthenticationError : public Error {
 public:
  using Error::Error;
};

// The operation was aborted everywhere because some participant failed.
class Aborted : public Error {
 public:
  using Error::Error;
};

// A wait was interrupted by the caller's interrupt check (Ctrl-C in Python). The
// bindings turn it back into the pending Python exception.
class Interrupted : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throw_error(ErrorKind kind, const std::string& message);
ErrorKind kind_of(const Error& error);

}  // namespace pcomm

// PCOMM_CHECK(cond, ExceptionType, message): throws when an invariant is violated and
// names the violated condition, so a failure report points at the broken assumption.
#define PCOMM_CHECK(cond, Type, msg)                                                 \
  do {                                                                               \
    if (!(cond)) throw Type(std::string(msg) + " [violated: " #cond "]");            \
  } while (0)
