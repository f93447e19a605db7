// Fuzz target: the configuration file. The input is the text of a
// smolvmd.toml; ApplyConfigText (daemon/config_file.cc, toml++) applies it to
// the defaults, and a file it accepts then goes through CheckConfig
// (daemon/config.cc), as at startup. The [listen]/[tls] settings are cleared
// first: CheckConfig would read the files they name, and the fuzzer must not
// read arbitrary paths (a FIFO or /dev/stdin would block).
#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/config.h"
#include "daemon/config_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // ApplyConfigFile reads at most 1 MiB; the fuzzer's inputs are far smaller.
  const std::string text(reinterpret_cast<const char*>(data), size);
  smolvm::daemon::DaemonConfig config;
  if (!smolvm::daemon::ApplyConfigText(text, "/fuzz/smolvmd.toml", config).ok()) return 0;
  config.listen_tcp.clear();
  config.tls_cert.clear();
  config.tls_key.clear();
  config.tls_client_ca.clear();
  (void)smolvm::daemon::CheckConfig(config);
  return 0;
}
