#include "client/cli/cli_rules.h"

#include <algorithm>

#include "absl/strings/match.h"

namespace smolvm::cli {

int ExecErrorExitCode(const absl::Status& status) {
  // The agent's start errors: FAILED_PRECONDITION from agents before
  // protocol 3, the errno's code (NOT_FOUND, PERMISSION_DENIED,
  // INVALID_ARGUMENT) since.
  switch (status.code()) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kInvalidArgument:
      break;
    default:
      return kExitExecFailed;
  }
  const absl::string_view message = status.message();
  constexpr absl::string_view kStartError = "exec in guest: ";
  const size_t at = message.find(kStartError);
  if (at == absl::string_view::npos) return kExitExecFailed;
  const absl::string_view start_error = message.substr(at + kStartError.size());
  if (absl::StartsWith(start_error, "exec ") &&
      (absl::EndsWith(start_error, ": No such file or directory") ||
       absl::EndsWith(start_error, ": Not a directory"))) {
    return kExitNotFound;
  }
  return kExitCannotExecute;
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  // d[i][j]: distance of a[0, i) and b[0, j).
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string Suggest(absl::string_view word, const std::vector<std::string>& candidates) {
  if (word.empty()) return "";
  std::string best;
  size_t best_distance = 3;  // Worse than the 2 edits allowed.
  std::vector<std::string> prefixed;
  for (const std::string& candidate : candidates) {
    if (word.size() >= 2 && absl::StartsWith(candidate, word)) prefixed.push_back(candidate);
    const size_t distance = EditDistance(word, candidate);
    if (distance < best_distance && distance < word.size()) {
      best_distance = distance;
      best = candidate;
    }
  }
  if (!best.empty()) return best;
  return prefixed.size() == 1 ? prefixed[0] : "";
}

std::vector<std::string> InsertCommandSeparator(
    std::vector<std::string> args, const std::vector<std::string>& path, int positionals,
    const std::function<bool(const std::string&)>& takes_value) {
  size_t matched = 0;  // Words of `path` seen.
  int seen = 0;        // Positionals seen after the path.
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") return args;
    if (arg.size() > 1 && arg[0] == '-') {
      const bool inline_value = absl::StrContains(arg, '=') ||
                                (arg[1] != '-' && arg.size() > 2);  // "-eA=1", "-abc".
      if (!inline_value && takes_value(arg)) ++i;
      continue;
    }
    if (matched < path.size()) {
      if (arg != path[matched]) return args;
      ++matched;
      continue;
    }
    if (seen < positionals) {
      ++seen;
      continue;
    }
    args.insert(args.begin() + static_cast<std::ptrdiff_t>(i), "--");
    return args;
  }
  return args;
}

}  // namespace smolvm::cli
