#include "tests/e2e/test_certs.h"

#include <filesystem>
#include <fstream>

#include "tests/e2e/process.h"

namespace smolvm::testing {
namespace {

// A key and a self-signed CA certificate.
absl::Status MakeCa(const std::string& dir, const std::string& name, const std::string& cn) {
  std::string error;
  if (!RunOk({"openssl",
              "req",
              "-x509",
              "-newkey",
              "ec",
              "-pkeyopt",
              "ec_paramgen_curve:P-256",
              "-nodes",
              "-keyout",
              dir + "/" + name + ".key",
              "-out",
              dir + "/" + name + ".pem",
              "-days",
              "2",
              "-subj",
              "/CN=" + cn,
              "-addext",
              "basicConstraints=critical,CA:TRUE",
              "-addext",
              "keyUsage=critical,keyCertSign,cRLSign"},
             &error)) {
    return absl::InternalError(error);
  }
  return absl::OkStatus();
}

// A key and a certificate for `cn` signed by CA `ca`, with the extensions
// in `ext` (an openssl extension section body).
absl::StatusOr<CertPair> MakeLeaf(const std::string& dir, const std::string& ca,
                                  const std::string& name, const std::string& cn,
                                  const std::string& ext) {
  CertPair pair{dir + "/" + name + ".pem", dir + "/" + name + ".key"};
  const std::string csr = dir + "/" + name + ".csr";
  const std::string ext_file = dir + "/" + name + ".ext";
  std::ofstream(ext_file) << ext;
  std::string error;
  if (!RunOk({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", pair.key, "-out", csr, "-subj", "/CN=" + cn},
             &error) ||
      !RunOk({"openssl", "x509", "-req", "-in", csr, "-CA", dir + "/" + ca + ".pem", "-CAkey",
              dir + "/" + ca + ".key", "-CAcreateserial", "-out", pair.cert, "-days", "2",
              "-extfile", ext_file},
             &error)) {
    return absl::InternalError(error);
  }
  return pair;
}

}  // namespace

absl::StatusOr<TestCerts> TestCerts::Make(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  TestCerts c;
  if (auto s = MakeCa(dir, "ca", "smolvm test CA"); !s.ok()) return s;
  if (auto s = MakeCa(dir, "other-ca", "another CA"); !s.ok()) return s;
  c.ca = dir + "/ca.pem";
  c.other_ca = dir + "/other-ca.pem";
  const std::string client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
  struct Leaf {
    CertPair* out;
    const char* ca;
    const char* name;
    const char* cn;
    std::string ext;
  };
  std::vector<Leaf> leaves = {
      {&c.server, "ca", "server", "smolvmd",
       "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"},
      {&c.alice, "ca", "alice", "alice", client},
      {&c.bob, "ca", "bob", "bob-host", client + "subjectAltName=URI:spiffe://test/bob\n"},
      {&c.mallory, "ca", "mallory", "mallory", client},
      {&c.dns_alice, "ca", "dns-alice", "dns-only", client + "subjectAltName=DNS:alice\n"},
      {&c.other_alice, "other-ca", "other-alice", "alice", client},
  };
  for (const Leaf& leaf : leaves) {
    auto pair = MakeLeaf(dir, leaf.ca, leaf.name, leaf.cn, leaf.ext);
    if (!pair.ok()) return pair.status();
    *leaf.out = *pair;
  }
  return c;
}

}  // namespace smolvm::testing
