#include "lib/core/operations.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/model/validation.h"

namespace smolvm::core {

template <typename ChangeFn>
void OperationRegistry::Change(const Key& key, ChangeFn&& change) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ops_.find(key);
  if (it == ops_.end() || it->second.finished) return;
  change(it->second);
  UpdateLocked(it->second);
}

void OperationRegistry::UpdateLocked(OperationState& op) {
  op.updated_at = absl::Now();
  op.version = next_version_++;
  changed_.notify_all();
}

OperationRegistry::Handle::~Handle() {
  if (!finished_) Finish(absl::UnknownError("the call ended without reporting its outcome"));
}

void OperationRegistry::Handle::Stage(std::string_view name, uint64_t total,
                                      std::string_view unit) {
  registry_->Change(key_, [&](OperationState& op) {
    op.stage = std::string(name);
    op.total = total;
    op.unit = std::string(unit);
    op.done = 0;
    ++op.stage_number;
  });
}

void OperationRegistry::Handle::SetDone(uint64_t done) {
  registry_->Change(key_, [&](OperationState& op) {
    op.done = std::max(op.done, op.total == 0 ? done : std::min(done, op.total));
  });
}

void OperationRegistry::Handle::Advance(uint64_t units) {
  registry_->Change(key_, [&](OperationState& op) {
    op.done += units;
    if (op.total != 0) op.done = std::min(op.done, op.total);
  });
}

void OperationRegistry::Handle::Finish(const absl::Status& outcome) {
  if (finished_) return;
  finished_ = true;
  registry_->Change(key_, [&](OperationState& op) {
    op.finished = true;
    op.outcome = outcome;
  });
  std::lock_guard<std::mutex> lock(registry_->mu_);
  registry_->PruneLocked(absl::Now());
}

void OperationRegistry::PruneLocked(absl::Time now) {
  std::vector<std::pair<absl::Time, Key>> finished;
  for (auto it = ops_.begin(); it != ops_.end();) {
    if (it->second.finished && now - it->second.updated_at > keep_finished_) {
      it = ops_.erase(it);
      continue;
    }
    if (it->second.finished) finished.emplace_back(it->second.updated_at, it->first);
    ++it;
  }
  if (finished.size() <= max_finished_) return;
  std::sort(finished.begin(), finished.end());
  for (size_t i = 0; i < finished.size() - max_finished_; ++i) ops_.erase(finished[i].second);
}

absl::StatusOr<std::unique_ptr<OperationRegistry::Handle>> OperationRegistry::Begin(
    const Caller& caller, const std::string& id, std::string kind, std::string target) {
  if (absl::Status s = ValidateOperationId(id); !s.ok()) return s;
  Key key{caller.tenant, id};
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = absl::Now();
  PruneLocked(now);
  auto it = ops_.find(key);
  if (it != ops_.end() && !it->second.finished) {
    return absl::AlreadyExistsError(absl::StrCat(
        "operation \"", id, "\" is still running (", it->second.kind,
        "); give each call its own operation_id"));
  }
  OperationState op;
  op.operation_id = id;
  op.owner = caller.tenant;
  op.kind = std::move(kind);
  op.target = std::move(target);
  op.started_at = now;
  ops_[key] = std::move(op);
  UpdateLocked(ops_[key]);
  return std::unique_ptr<Handle>(new Handle(this, std::move(key)));
}

const OperationState* OperationRegistry::FindLocked(const Caller& caller,
                                                    const std::string& id) const {
  if (auto it = ops_.find(Key{caller.tenant, id}); it != ops_.end()) return &it->second;
  if (!caller.admin) return nullptr;
  for (const auto& [key, op] : ops_) {
    if (key.second == id) return &op;
  }
  return nullptr;
}

namespace {
absl::Status NoSuchOperation(const std::string& id) {
  return absl::NotFoundError(absl::StrCat(
      "no operation \"", id, "\": it was never started with this operation_id by you, or it "
      "finished more than 10 minutes ago"));
}
}  // namespace

absl::StatusOr<OperationState> OperationRegistry::Get(const Caller& caller,
                                                      const std::string& id) {
  if (absl::Status s = ValidateOperationId(id); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  const OperationState* op = FindLocked(caller, id);
  if (op == nullptr) return NoSuchOperation(id);
  return *op;
}

absl::StatusOr<OperationState> OperationRegistry::WaitNewer(const Caller& caller,
                                                            const std::string& id,
                                                            uint64_t after, absl::Time deadline) {
  if (absl::Status s = ValidateOperationId(id); !s.ok()) return s;
  std::unique_lock<std::mutex> lock(mu_);
  const OperationState* op = nullptr;
  changed_.wait_until(lock, absl::ToChronoTime(deadline), [&] {
    op = FindLocked(caller, id);
    return op != nullptr && op->version > after;
  });
  op = FindLocked(caller, id);
  if (op == nullptr) return NoSuchOperation(id);
  return *op;
}

}  // namespace smolvm::core
