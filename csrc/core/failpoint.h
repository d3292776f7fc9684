// Failpoints: deliberate faults at moments a test cannot reach by timing, such as a
// coordinator that dies after telling only some peers that a sync committed. Off unless
// the environment variable PCOMM_FAILPOINT is NAME:N, which makes the N-th hit of the
// failpoint NAME fire (counting from 1; read once, at the first hit). Each call site says
// what firing means there. For tests (tests/test_failover.py); never set in a real run.
#pragma once

namespace pcomm::core {

// Counts a hit of `name`; true for the one hit that fires.
bool failpoint(const char* name);

}  // namespace pcomm::core
