// File: temp_dir.h
//
// TempDir: a directory made with mkdtemp and removed, with everything in
// it, when the object goes away (RAII for scratch space).
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/base/file_util.h"

namespace smolvm {

class TempDir {
 public:
  // Makes "<prefix>XXXXXX" (prefix is a path; its directory must exist).
  static absl::StatusOr<TempDir> Create(const std::string& prefix) {
    std::string tmpl = prefix + "XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      return absl::ErrnoToStatus(errno, absl::StrCat("mkdtemp ", tmpl));
    }
    return TempDir(std::move(tmpl));
  }
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir() {
    if (!path_.empty()) RemoveTree(path_).IgnoreError();
  }
  const std::string& path() const { return path_; }
  std::string Join(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace smolvm
