// File: test_certs.h
//
// TestCerts makes the X.509 material of a mutual-TLS test with the host's
// openssl, in a directory of the test: a CA, a server certificate for
// 127.0.0.1 (subjectAltName IP:127.0.0.1), client certificates signed by
// that CA, and a second, unrelated CA with a client certificate of its own.
// Keys are EC P-256 (fast to generate).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace smolvm::testing {

struct CertPair {
  std::string cert;  // PEM certificate path.
  std::string key;   // PEM private key path.
};

struct TestCerts {
  std::string ca;        // CA certificate (clients verify the server with it,
                         // the server verifies clients with it).
  CertPair server;       // CN=smolvmd, SAN IP:127.0.0.1, signed by `ca`.
  CertPair alice;        // CN=alice, signed by `ca`.
  CertPair bob;          // CN=bob-host, SAN URI:spiffe://test/bob, signed by `ca`.
  CertPair mallory;      // CN=mallory (mapped to no tenant), signed by `ca`.
  CertPair dns_alice;    // CN=dns-only, SAN DNS:alice (neither CN nor URI SAN
                         // maps), signed by `ca`.
  std::string other_ca;  // A second CA.
  CertPair other_alice;  // CN=alice, signed by `other_ca`.

  // Writes everything under `dir` (created if missing).
  static absl::StatusOr<TestCerts> Make(const std::string& dir);
};

}  // namespace smolvm::testing
