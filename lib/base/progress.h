// File: progress.h
//
// What a long operation reports while it runs (a snapshot's copies, a
// fork's clones, a VM's boot), so that a client can show how far it is
// (OperationService). The operation calls Stage when it begins a step and
// SetDone/Advance within it; every method may be called from any thread
// (a fork's clones report from several). The reporter is optional: the
// free functions below do nothing for a null one, so code that reports
// needs no branches.
#pragma once

#include <cstdint>
#include <string_view>

namespace smolvm {

class Progress {
 public:
  virtual ~Progress() = default;
  // Begins a stage: `name` says what is being done ("copying guest
  // memory"), `total` how many `unit`s it takes (0 = not measurable).
  virtual void Stage(std::string_view name, uint64_t total, std::string_view unit) = 0;
  // Units of the current stage done so far (never decreases).
  virtual void SetDone(uint64_t done) = 0;
  virtual void Advance(uint64_t units) = 0;
};

inline void ReportStage(Progress* p, std::string_view name, uint64_t total = 0,
                        std::string_view unit = "") {
  if (p != nullptr) p->Stage(name, total, unit);
}
inline void ReportDone(Progress* p, uint64_t done) {
  if (p != nullptr) p->SetDone(done);
}
inline void ReportAdvance(Progress* p, uint64_t units = 1) {
  if (p != nullptr) p->Advance(units);
}

}  // namespace smolvm
