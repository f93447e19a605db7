// File: temp_dir.h
//
// TempDir is a test's private scratch directory: created unique under /tmp
// (short, so Unix socket paths inside stay below 108 bytes) and removed with
// everything in it when the object goes away, also when the test fails.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace smolvm_testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "smolvm-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
      return;
    }
    path_ = tmpl;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    EXPECT_FALSE(ec) << "remove " << path_ << ": " << ec.message();
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace smolvm_testing
