// smolvm_load: the load benchmark (see bench/load/load_runner.h). Prints a
// report, optionally writes it as JSON, and exits 0 only if no call failed,
// the daemon's fds and RSS did not grow and nothing was left behind.
//
//   smolvm_load [--socket PATH] [--clients N] [--duration S] [--warmup S]
//               [--rounds R] [--max-clones N] [--max-snapshots N] [--fork-count N]
//               [--memory-mib M] [--mix list_vms=15,exec=28,...] [--seed N]
//               [--daemon-pid PID] [--prefix ID] [--json FILE]
//
// Without --socket the daemon is found like every client finds it
// ($SMOLVMD_ENDPOINT, $SMOLVMD_SOCKET, the default socket). bench/run.sh
// load runs it against a private daemon. SIGINT / SIGTERM stop the run
// early; it still deletes everything it made (a second signal kills it).
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/load/load_runner.h"

namespace {

std::atomic<bool> g_interrupted{false};

void OnSignal(int sig) {
  g_interrupted.store(true);
  signal(sig, SIG_DFL);  // A second one ends the process.
}

}  // namespace

int main(int argc, char** argv) {
  smolvm::load::LoadOptions o;
  CLI::App app{
      "smolvm_load: concurrent clients mixing reads, Exec and VM/snapshot churn "
      "against smolvmd; reports throughput, latency, errors and the daemon's "
      "RSS/fd growth"};
  std::string socket, mix, json_path;
  double duration_s = 60, warmup_s = 20;
  int pid = 0;
  app.add_option("--socket", socket, "the daemon's Unix socket (default: as every client)");
  app.add_option("--clients", o.clients, "concurrent clients")->capture_default_str();
  app.add_option("--duration", duration_s, "measured seconds")->capture_default_str();
  app.add_option("--rounds", o.rounds,
                 "measured rounds, each ending with a cleanup and a usage sample")
      ->capture_default_str();
  app.add_option("--warmup", warmup_s, "warmup seconds (not measured; usage sampled after it)")
      ->capture_default_str();
  app.add_option("--max-clones", o.max_clones, "live clones at most, besides the base VM")
      ->capture_default_str();
  app.add_option("--max-snapshots", o.max_snapshots, "snapshots of clones at most")
      ->capture_default_str();
  app.add_option("--fork-count", o.fork_count, "clones per ForkSnapshot")->capture_default_str();
  app.add_option("--memory-mib", o.memory_mib, "the base VM's memory")->capture_default_str();
  app.add_option("--mix", mix,
                 "weights, e.g. exec=40,fork=0 (others keep their default: " +
                     smolvm::load::MixToString(o.mix) + ")");
  app.add_option("--seed", o.seed, "seeds the clients' choices")->capture_default_str();
  app.add_option("--daemon-pid", pid, "the daemon's pid (default: found from the socket)");
  app.add_option("--prefix", o.id_prefix, "id prefix of every object (default: load-<random>)");
  app.add_option("--rss-tolerance-mib", o.rss_tolerance_mib)->capture_default_str();
  app.add_option("--rss-tolerance-fraction", o.rss_tolerance_fraction)->capture_default_str();
  app.add_option("--json", json_path, "also write the report as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  o.client.socket_path = socket;
  // A call that hangs becomes a DEADLINE_EXCEEDED error, not a stuck run.
  o.client.timeout = absl::Minutes(3);
  o.duration = absl::Seconds(duration_s);
  o.warmup = absl::Seconds(warmup_s);
  o.daemon_pid = pid;
  if (!mix.empty()) {
    if (auto s = smolvm::load::ParseMix(mix, &o.mix); !s.ok()) {
      std::fprintf(stderr, "smolvm_load: --mix: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  o.interrupted = &g_interrupted;
  o.progress = [](const std::string& line) {
    std::fprintf(stderr, "smolvm_load: %s\n", line.c_str());
  };
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  auto report = smolvm::load::RunLoad(o);
  if (!report.ok()) {
    std::fprintf(stderr, "smolvm_load: %s\n", report.status().ToString().c_str());
    return 1;
  }
  std::fputs(report->ToText().c_str(), stdout);
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << report->ToJson().dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "smolvm_load: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return report->ok() ? 0 : 1;
}
