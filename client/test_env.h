// File: client/test_env.h
//
// Test helpers for the client library's environment variables (test-only,
// header-only).
#ifndef SMOLVM_CLIENT_TEST_ENV_H_
#define SMOLVM_CLIENT_TEST_ENV_H_

#include <stdlib.h>

#include <optional>
#include <string>

#include "client/connection.h"

namespace smolvm::client_testing {

// ScopedEnv sets (or, with nullptr, unsets) an environment variable for its
// lifetime, then restores it. Not thread-safe, as setenv() is not: tests
// that use it must not run other threads that read the environment.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) saved_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (saved_) {
      setenv(name_, saved_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

// NoClientEnv clears every environment variable the client library reads,
// so that a test sees only what it sets (and smolvmctl, which inherits the
// environment, too).
struct NoClientEnv {
  ScopedEnv endpoint{kEndpointEnvVar, nullptr};
  ScopedEnv socket{kSocketEnvVar, nullptr};
  ScopedEnv cert{kTlsCertEnvVar, nullptr};
  ScopedEnv key{kTlsKeyEnvVar, nullptr};
  ScopedEnv ca{kTlsCaEnvVar, nullptr};
};

}  // namespace smolvm::client_testing

#endif  // SMOLVM_CLIENT_TEST_ENV_H_
