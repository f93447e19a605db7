#include "lib/model/mounts.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace smolvm {
namespace {

std::string Shown(const std::string& s) {
  return absl::CHexEscape(s.size() > 200 ? s.substr(0, 200) + "..." : s);
}

// Absolute, no NUL, no "." / ".." component; trailing slashes removed.
absl::Status NormalizeAbsolute(std::string& path, const std::string& field, size_t max) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(field, " \"", Shown(path), "\" ", why));
  };
  if (path.empty() || path[0] != '/') return bad("must be an absolute path");
  if (path.size() > max) return bad(absl::StrCat("is longer than ", max, " characters"));
  if (path.find('\0') != std::string::npos) return bad("contains a NUL byte");
  std::string out;
  for (absl::string_view comp : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (comp == "." || comp == "..") return bad("has a \".\" or \"..\" component");
    absl::StrAppend(&out, "/", comp);
  }
  path = out.empty() ? "/" : out;
  return absl::OkStatus();
}

bool Within(const std::string& a, const std::string& b) {
  return a == b || (absl::StartsWith(a, b) && a[b.size()] == '/');
}

}  // namespace

absl::Status NormalizeMounts(std::vector<Mount>& mounts) {
  if (mounts.size() > kMaxMounts) {
    return absl::InvalidArgumentError(
        absl::StrCat("mounts: at most ", kMaxMounts, " per VM, got ", mounts.size()));
  }
  for (size_t i = 0; i < mounts.size(); ++i) {
    Mount& m = mounts[i];
    const std::string field = absl::StrCat("mounts[", i, "]");
    if (m.host_path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".host_path is empty: name a directory beneath the operator's "
                 "[mounts] allowed_dirs"));
    }
    if (m.guest_path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".guest_path is empty: name where the guest sees it, e.g. /mnt/data"));
    }
    if (auto s = NormalizeAbsolute(m.host_path, field + ".host_path", 4096); !s.ok()) return s;
    if (m.host_path.find(',') != std::string::npos) {
      // QEMU's -fsdev options are comma-separated: a comma in the name
      // could add options (another path=) to the VMM's command line.
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".host_path \"", Shown(m.host_path),
          "\" holds a comma, which QEMU's option syntax cannot carry: rename the directory"));
    }
    if (auto s = NormalizeAbsolute(m.guest_path, field + ".guest_path", kMaxMountGuestPath);
        !s.ok()) {
      return s;
    }
    for (char c : m.guest_path) {
      if (!absl::ascii_isalnum(c) && c != '/' && c != '.' && c != '_' && c != '-' && c != '@' &&
          c != '+') {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".guest_path \"", Shown(m.guest_path),
            "\" may hold only letters, digits and . _ - @ + / (it travels on the kernel "
            "command line)"));
      }
    }
    if (m.guest_path == "/") {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".guest_path must not be / (the guest's root disk)"));
    }
    for (const char* reserved : {"/proc", "/sys", "/dev", "/run", "/.smolvm"}) {
      if (Within(m.guest_path, reserved)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".guest_path \"", m.guest_path, "\" is under ", reserved,
            ", which the guest's init owns: choose another path, e.g. /mnt/data"));
      }
    }
    for (size_t j = 0; j < i; ++j) {
      const std::string& other = mounts[j].guest_path;
      if (Within(m.guest_path, other) || Within(other, m.guest_path)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".guest_path \"", m.guest_path, "\" overlaps mounts[", j, "].guest_path \"",
            other, "\": give each mount its own directory, none inside another"));
      }
    }
  }
  return absl::OkStatus();
}

std::string MountTag(size_t index) { return absl::StrCat("smolvm-m", index); }

std::string MountCmdline(const std::vector<Mount>& mounts) {
  std::string out;
  for (size_t i = 0; i < mounts.size(); ++i) {
    absl::StrAppend(&out, " smolvm.mount=", MountTag(i), ":", mounts[i].guest_path, ":",
                    mounts[i].read_only ? "ro" : "rw");
  }
  return out;
}

std::vector<std::string> UndetachableMounts(const std::vector<Mount>& mounts) {
  std::vector<std::string> out;
  for (const Mount& m : mounts) {
    if (!m.detach_on_snapshot) out.push_back(absl::StrCat(m.guest_path, " (", m.host_path, ")"));
  }
  return out;
}

}  // namespace smolvm
