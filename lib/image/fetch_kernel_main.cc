// smolvm-fetch-kernel DEST_DIR
//
// Fetches Debian's cloud kernel into DEST_DIR (lib/image/guest_kernel.h
// FetchKernel) for shell scripts: progress lines and errors on stderr,
// exit 0 when DEST_DIR holds the kernel (also when it already did).
//
// Environment:
//   SMOLVM_KERNEL_META  meta package to resolve (default linux-image-cloud-amd64)
//   SMOLVM_KERNEL_DEB   path to a local linux-image-*.deb to use instead of apt
//                       (offline builds); idempotency then keys on that .deb.
//
// SIGINT/SIGTERM/SIGHUP stop the running program, remove the scratch dir and
// exit 130.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "lib/image/build_context.h"
#include "lib/image/guest_kernel.h"

namespace {

constexpr char kProg[] = "smolvm-fetch-kernel";

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

std::string Env(const char* name) {
  const char* v = getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || argv[1][0] == '\0') {
    fprintf(stderr, "%s: error: usage: %s DEST_DIR\n", kProg, kProg);
    return 2;
  }
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);

  smolvm::image::KernelFetchOptions options;
  options.dest_dir = argv[1];
  options.deb_path = Env("SMOLVM_KERNEL_DEB");
  if (std::string meta = Env("SMOLVM_KERNEL_META"); !meta.empty()) options.meta_package = meta;

  smolvm::image::BuildContext ctx;
  ctx.progress = [](const std::string& step, uint64_t) {
    absl::string_view line = step;
    absl::ConsumePrefix(&line, "kernel: ");
    fprintf(stderr, "%s: %.*s\n", kProg, static_cast<int>(line.size()), line.data());
  };
  ctx.cancelled = [] { return g_stop.load(); };

  auto info = smolvm::image::FetchKernel(options, ctx);
  if (!info.ok()) {
    fprintf(stderr, "%s: error: %.*s\n", kProg, static_cast<int>(info.status().message().size()),
            info.status().message().data());
    return g_stop.load() ? 130 : 1;
  }
  return 0;
}
