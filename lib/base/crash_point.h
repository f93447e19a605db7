// File: crash_point.h
//
// Named points inside multi-step operations where a test can make smolvmd
// die as `kill -9` would (SIGKILL: no destructors, no cleanup), to prove
// that the next start finishes or rolls back what was under way. Inert
// unless the environment variable SMOLVMD_TEST_CRASH_AT names the point when
// the daemon starts; never set in production.
#pragma once

namespace smolvm {

// Dies with SIGKILL if SMOLVMD_TEST_CRASH_AT == `point`.
void CrashPoint(const char* point);

}  // namespace smolvm
