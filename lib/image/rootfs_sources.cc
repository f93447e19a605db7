#include "lib/image/rootfs_sources.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/base/temp_dir.h"
#include "lib/base/unique_fd.h"
#include "nlohmann/json.hpp"

namespace smolvm::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Output kept per stream of a tool; errors quote the last 2000 bytes.
constexpr size_t kToolOutputCap = 256 << 10;
constexpr size_t kErrorTail = 2000;
// The tag the normalized copy of an image gets in our scratch layout.
constexpr char kScratchTag[] = "img";

// A value for an error message: escaped (it may come from a client) and cut.
std::string Shown(absl::string_view value) {
  std::string v(value.substr(0, 200));
  return absl::CHexEscape(value.size() > 200 ? v + "..." : v);
}

// The Debian package that provides each program we run.
std::string PackageOf(const std::string& program) {
  if (program == "cp") return "coreutils";
  if (program == "unshare" || program == "nsenter") return "util-linux";
  return program;  // mmdebstrap, umoci, skopeo, zstd, tar.
}

SubprocessOptions ToolOptions(const BuildContext& ctx) {
  SubprocessOptions options;
  options.timeout = ctx.step_timeout;
  options.max_output_bytes = kToolOutputCap;
  options.cancelled = ctx.cancelled;
  return options;
}

// Runs a tool with ctx's timeout and cancellation. A missing program is
// FAILED_PRECONDITION naming the package to install; a non-zero exit is
// left to the caller, who knows what it means.
absl::StatusOr<SubprocessResult> RunTool(const std::vector<std::string>& argv,
                                         const BuildContext& ctx,
                                         std::vector<std::string> extra_env = {}) {
  if (ctx.IsCancelled()) {
    return absl::CancelledError(absl::StrCat("image build cancelled before ", argv[0]));
  }
  SubprocessOptions options = ToolOptions(ctx);
  options.extra_env = std::move(extra_env);
  auto result = RunSubprocess(argv, options);
  if (absl::IsNotFound(result.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        argv[0], " is not installed on the host: apt-get install ", PackageOf(argv[0])));
  }
  return result;
}

// How a tool failed, with the tail of what it said. umoci's progress lines
// ("• unpacking rootfs ...") are dropped and its error mark ("⨯") removed.
std::string FailureText(const SubprocessResult& r) {
  std::string why = r.term_signal != 0 ? absl::StrCat("was killed by signal ", r.term_signal)
                                       : absl::StrCat("exited with ", r.exit_code);
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(r.stderr_text + r.stdout_text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "\u2022")) continue;
    absl::ConsumePrefix(&line, "\u2a2f");
    lines.emplace_back(absl::StripAsciiWhitespace(line));
  }
  return absl::StrCat(why, ": ", TailOf(absl::StrJoin(lines, "\n"), kErrorTail));
}

bool OutOfSpace(const SubprocessResult& r) {
  return absl::StrContains(r.stderr_text, "no space left on device") ||
         absl::StrContains(r.stderr_text, "No space left on device") ||
         absl::StrContains(r.stderr_text, "disk quota exceeded") ||
         absl::StrContains(r.stderr_text, "Disk quota exceeded");
}

// A failed tool run on input the client gave: INVALID_ARGUMENT, except that
// a full disk is RESOURCE_EXHAUSTED (nothing is wrong with the input then).
absl::Status InputToolError(absl::string_view what, const SubprocessResult& r) {
  if (OutOfSpace(r)) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of disk space: ", FailureText(r)));
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", FailureText(r)));
}

absl::Status HostToolError(absl::string_view what, const SubprocessResult& r) {
  if (OutOfSpace(r)) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of disk space: ", FailureText(r)));
  }
  return absl::InternalError(absl::StrCat(what, " failed: ", FailureText(r)));
}

// Checks that `rootfs_dir` is an existing empty directory.
absl::Status CheckEmptyTarget(const std::string& rootfs_dir) {
  struct stat st;
  if (lstat(rootfs_dir.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rootfs directory ", rootfs_dir));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("rootfs directory ", rootfs_dir, " is not a directory"));
  }
  if (!ListDirNames(rootfs_dir).empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("rootfs directory ", rootfs_dir, " is not empty"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Absolute(const std::string& path) {
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad path \"", Shown(path), "\""));
  return abs.lexically_normal().string();
}

// A scratch directory beside `rootfs_dir` (same filesystem, so the result
// is renamed into place, and on the image store's disk rather than a small
// /tmp), removed with everything in it when the object goes away.
// A scratch dir "<parent>/.<rootfs name>.<purpose>-XXXXXX" beside
// `rootfs_dir` (the same filesystem, so its tree can be renamed into place).
absl::StatusOr<TempDir> ScratchDirBeside(const std::string& rootfs_dir,
                                         absl::string_view purpose) {
  SMOLVM_ASSIGN_OR_RETURN(std::string abs, Absolute(rootfs_dir));
  fs::path p(abs);
  if (!p.has_filename()) p = p.parent_path();
  return TempDir::Create(
      absl::StrCat(p.parent_path().string(), "/.", p.filename().string(), ".", purpose, "-"));
}

// Puts the tree `from` (a directory on the same filesystem, normally) in
// place of the empty directory `rootfs_dir`: one rename, which also gives
// rootfs_dir the owner and mode of the image's root. Falls back to a copy
// when `rootfs_dir` is a mount point or on another filesystem.
absl::Status MoveTreeInto(const std::string& from, const std::string& rootfs_dir,
                          const BuildContext& ctx) {
  if (rename(from.c_str(), rootfs_dir.c_str()) == 0) return absl::OkStatus();
  if (errno != EXDEV && errno != EBUSY) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", from, " to ", rootfs_dir));
  }
  SMOLVM_ASSIGN_OR_RETURN(
      auto r, RunTool({"cp", "-a", "--reflink=auto", "--", from + "/.", rootfs_dir + "/"}, ctx));
  if (r.exit_code != 0) return HostToolError("copying the unpacked rootfs", r);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- Debian

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool ValidSuite(absl::string_view s) {
  if (s.empty() || s.size() > 32 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') return false;
  }
  return true;
}

// Debian Policy 5.6.7: at least two characters, lower case letters, digits
// and + - . , starting with a letter or digit.
bool ValidPackage(absl::string_view p) {
  if (p.size() < 2 || p.size() > 128 || !IsLowerAlnum(p[0])) return false;
  for (char c : p) {
    if (!IsLowerAlnum(c) && c != '+' && c != '-' && c != '.') return false;
  }
  return true;
}

// mmdebstrap variants that yield a system with dpkg and its essential set
// (extract, custom and "-" need the caller to know the package set).
const std::set<std::string>& Variants() {
  static const auto* variants = new std::set<std::string>{
      "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "standard"};
  return *variants;
}

bool ValidMirror(absl::string_view m) {
  if (m.size() > 512) return false;
  if (!absl::StartsWith(m, "http://") && !absl::StartsWith(m, "https://")) return false;
  absl::string_view rest = m.substr(m.find("://") + 3);
  if (rest.empty() || rest[0] == '/') return false;
  for (unsigned char c : m) {
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\'' || c == '\\' || c == '`') return false;
  }
  return true;
}

absl::Status ValidateDebianSource(const DebianSource& source) {
  if (!ValidSuite(source.suite)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad Debian suite \"", Shown(source.suite),
                     "\": expected a codename or suite such as bookworm, trixie or stable "
                     "([a-z][a-z0-9-]{0,31})"));
  }
  for (const auto& p : source.packages) {
    if (!ValidPackage(p)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad Debian package name \"", Shown(p),
                       "\": expected a name such as python3 ([a-z0-9][a-z0-9+.-]+, no version)"));
    }
  }
  if (Variants().count(source.variant) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad Debian variant \"", Shown(source.variant),
                                                   "\": expected one of ",
                                                   absl::StrJoin(Variants(), ", ")));
  }
  if (!source.mirror.empty() && !ValidMirror(source.mirror)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad Debian mirror \"", Shown(source.mirror),
                     "\": expected an http:// or https:// URL without spaces or quotes"));
  }
  return absl::OkStatus();
}

// The .debs kept across builds are hard links (copies across filesystems)
// of the archive files apt used. They are put into the chroot's apt cache
// before apt runs, and new ones are added from there after the essential
// set is downloaded (so even a build that then fails on a bad package name
// keeps them) and after everything is installed. A new file is linked or
// copied under a temporary name and renamed, so a concurrent build never
// sees half a file. mmdebstrap's cleanup then empties the chroot's cache,
// so the image keeps no .debs. The cache dir reaches the hooks in
// SMOLVM_DEB_CACHE, never spliced into shell text.
constexpr char kCacheInHook[] =
    "set -e; a=\"$1/var/cache/apt/archives\"; mkdir -p \"$a/partial\"; "
    "for f in \"$SMOLVM_DEB_CACHE\"/*.deb; do [ -f \"$f\" ] || continue; "
    "ln -f \"$f\" \"$a/\" 2>/dev/null || cp -f \"$f\" \"$a/\"; done";
constexpr char kCacheOutHook[] =
    "set -e; c=\"$SMOLVM_DEB_CACHE\"; "
    "for f in \"$1\"/var/cache/apt/archives/*.deb; do [ -f \"$f\" ] || continue; "
    "b=\"${f##*/}\"; [ -e \"$c/$b\" ] && continue; t=\"$c/.$b.$$.tmp\"; "
    "ln \"$f\" \"$t\" 2>/dev/null || cp \"$f\" \"$t\"; mv -f \"$t\" \"$c/$b\"; done";
// dpkg fsyncs every file it unpacks, which doubles the build time; a
// failed or interrupted build is thrown away anyway, so the build runs with
// force-unsafe-io, set in a file that is removed before the image is done.
constexpr char kUnsafeIoOnHook[] =
    "mkdir -p \"$1/etc/dpkg/dpkg.cfg.d\" && "
    "echo force-unsafe-io > \"$1/etc/dpkg/dpkg.cfg.d/00smolvm-build\"";
constexpr char kUnsafeIoOffHook[] = "rm -f \"$1/etc/dpkg/dpkg.cfg.d/00smolvm-build\"";
// An unknown package is otherwise found only after the essential set is
// installed (half a minute); apt resolves the selection as soon as the
// essential set is extracted. The names (validated: no shell characters)
// arrive in SMOLVM_DEB_PACKAGES.
constexpr char kCheckPackagesHook[] =
    "APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get install --simulate -qq "
    "$SMOLVM_DEB_PACKAGES >/dev/null";
// mmdebstrap copies the host's resolv.conf and hostname into the chroot
// for apt; they must not end up in the image.
constexpr char kForgetHostHook[] = "rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"";

size_t CountDebs(const std::string& dir) {
  size_t n = 0;
  for (const auto& name : ListDirNames(dir)) {
    if (absl::EndsWith(name, ".deb") && name[0] != '.') ++n;
  }
  return n;
}

// The first word after `prefix` in `text`, without surrounding quotes.
std::optional<std::string> WordAfter(const std::string& text, absl::string_view prefix) {
  size_t at = text.find(prefix.data(), 0, prefix.size());
  if (at == std::string::npos) return std::nullopt;
  size_t start = at + prefix.size();
  size_t end = text.find_first_of(" '\n\r\t", start);
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// What a failed mmdebstrap run means, from apt's messages in its stderr.
absl::Status MmdebstrapError(const DebianSource& source, const SubprocessResult& r) {
  const std::string& err = r.stderr_text;
  if (auto pkg = WordAfter(err, "E: Unable to locate package "); pkg.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown Debian package '", Shown(*pkg),
                                                   "' (apt could not find it in ", source.suite,
                                                   ")"));
  }
  if (auto pkg = WordAfter(err, "E: Package '");
      pkg.has_value() && absl::StrContains(err, "has no installation candidate")) {
    return absl::InvalidArgumentError(
        absl::StrCat("Debian package '", Shown(*pkg), "' has no installation candidate in ",
                     source.suite, " (it is virtual, or was removed)"));
  }
  if (absl::StrContains(
          err, absl::StrCat(" ", source.suite, " Release' does not have a Release file"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown Debian suite '", source.suite, "' (",
        source.mirror.empty() ? "deb.debian.org" : source.mirror, " has no Release file for it)"));
  }
  if (absl::StrContains(err, "does not have a Release file")) {
    // An updates or security suite of an otherwise known suite.
    return absl::InvalidArgumentError(absl::StrCat(
        "Debian suite '", source.suite, "' is incomplete on the mirror: ", FailureText(r)));
  }
  if (absl::StrContains(err, "Could not resolve") ||
      absl::StrContains(err, "Temporary failure resolving") ||
      absl::StrContains(err, "Could not connect") || absl::StrContains(err, "Failed to fetch")) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the Debian archive: ", FailureText(r)));
  }
  if (absl::StrContains(err, "Unable to correct problems, you have held broken packages") ||
      absl::StrContains(err, "but it is not installable") ||
      absl::StrContains(err, "but it is not going to be installed")) {
    return absl::InvalidArgumentError(
        absl::StrCat("the Debian packages cannot be installed together in ", source.suite, ": ",
                     FailureText(r)));
  }
  return HostToolError(absl::StrCat("mmdebstrap ", source.suite), r);
}

// ---------------------------------------------------------------- OCI

// Parses JSON from a string; an error names `what`.
absl::StatusOr<json> ParseJson(const std::string& text, absl::string_view what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  return j;
}

// "sha256:<hex>" → "blobs/sha256/<hex>", refusing anything else.
absl::StatusOr<std::string> BlobPath(const json& descriptor, absl::string_view what) {
  if (!descriptor.is_object() || !descriptor.contains("digest") ||
      !descriptor["digest"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no digest"));
  }
  std::string digest = descriptor["digest"].get<std::string>();
  std::vector<std::string> parts = absl::StrSplit(digest, absl::MaxSplits(':', 1));
  bool ok = parts.size() == 2 && !parts[0].empty() && !parts[1].empty();
  for (size_t i = 0; ok && i < 2; ++i) {
    for (char c : parts[i]) ok = ok && (IsLowerAlnum(c));
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has a bad digest \"", Shown(digest), "\""));
  }
  return absl::StrCat("blobs/", parts[0], "/", parts[1]);
}

// The tags ("org.opencontainers.image.ref.name") of an index.json's
// manifests, "" for an untagged one, in order.
absl::StatusOr<std::vector<std::string>> OciTags(const std::string& index_text) {
  SMOLVM_ASSIGN_OR_RETURN(json index, ParseJson(index_text, "index.json"));
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array()) {
    return absl::InvalidArgumentError("index.json has no manifests list");
  }
  std::vector<std::string> tags;
  for (const auto& m : index["manifests"]) {
    std::string tag;
    if (m.is_object() && m.contains("annotations") && m["annotations"].is_object()) {
      const auto& a = m["annotations"];
      if (auto it = a.find("org.opencontainers.image.ref.name"); it != a.end() && it->is_string()) {
        tag = it->get<std::string>();
      }
    }
    tags.push_back(tag);
  }
  return tags;
}

// The RepoTags of each image in a `docker save` manifest.json.
absl::StatusOr<std::vector<std::vector<std::string>>> DockerTags(const std::string& text) {
  SMOLVM_ASSIGN_OR_RETURN(json manifest, ParseJson(text, "manifest.json"));
  if (!manifest.is_array()) return absl::InvalidArgumentError("manifest.json is not a list");
  std::vector<std::vector<std::string>> images;
  for (const auto& image : manifest) {
    std::vector<std::string> tags;
    if (image.is_object() && image.contains("RepoTags") && image["RepoTags"].is_array()) {
      for (const auto& t : image["RepoTags"]) {
        if (t.is_string()) tags.push_back(t.get<std::string>());
      }
    }
    images.push_back(std::move(tags));
  }
  return images;
}

std::string TagList(const std::vector<std::string>& tags) {
  std::vector<std::string> shown;
  for (const auto& t : tags) {
    if (shown.size() == 20) {
      shown.push_back("...");
      break;
    }
    shown.push_back(t.empty() ? "(untagged)" : Shown(t));
  }
  return absl::StrJoin(shown, ", ");
}

bool ValidReference(absl::string_view ref) {
  if (ref.size() > 256) return false;
  for (char c : ref) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != '/' && c != ':' &&
        c != '@' && c != '+') {
      return false;
    }
  }
  return true;
}

// Whether a docker RepoTag (skopeo writes "docker.io/library/x:tag" for
// "x:tag") is what the client called `ref`.
bool DockerTagMatches(const std::string& repo_tag, const std::string& ref) {
  auto normalize = [](std::string r) {
    size_t slash = r.rfind('/');
    if (r.find(':', slash == std::string::npos ? 0 : slash) == std::string::npos) {
      r += ":latest";
    }
    if (absl::StartsWith(r, "docker.io/")) r = r.substr(10);
    if (absl::StartsWith(r, "library/")) r = r.substr(8);
    return r;
  };
  return repo_tag == ref || normalize(repo_tag) == normalize(ref);
}

// Lists the members of a tar (any compression GNU tar detects), as stored.
absl::StatusOr<std::vector<std::string>> TarMembers(const std::string& tarball,
                                                    const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool({"tar", "-tf", tarball}, ctx));
  if (r.exit_code != 0) return InputToolError("not a readable tar archive", r);
  return absl::StrSplit(r.stdout_text, '\n', absl::SkipEmpty());
}

// One small member of a tar, read to memory (never written to disk).
absl::StatusOr<std::string> TarMember(const std::string& tarball, const std::string& member,
                                      const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool({"tar", "-xOf", tarball, "--", member}, ctx));
  if (r.exit_code != 0) return InputToolError(absl::StrCat("reading ", member), r);
  if (r.stdout_text.size() >= kToolOutputCap) {
    return absl::InvalidArgumentError(absl::StrCat(member, " is too large"));
  }
  return r.stdout_text;
}

// The member `name` at the top of the archive as stored ("x" or "./x").
std::optional<std::string> FindMember(const std::vector<std::string>& members,
                                      const std::string& name) {
  for (const auto& m : members) {
    if (m == name || m == "./" + name) return m;
  }
  return std::nullopt;
}

// Picks the image in an OCI index: `reference` if given, else the only one.
// Returns the skopeo source suffix (":tag" or "").
absl::StatusOr<std::string> PickOciImage(const std::vector<std::string>& tags,
                                         const std::string& reference, const std::string& shown) {
  if (tags.empty()) return absl::InvalidArgumentError(absl::StrCat(shown, " holds no image"));
  if (reference.empty()) {
    if (tags.size() == 1) return std::string();
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " holds ", tags.size(), " images: name one of ", TagList(tags)));
  }
  for (const auto& t : tags) {
    if (t == reference) return absl::StrCat(":", reference);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no image \"", Shown(reference), "\" in ", shown, "; it holds ", TagList(tags)));
}

absl::StatusOr<std::string> PickDockerImage(const std::vector<std::vector<std::string>>& images,
                                            const std::string& reference,
                                            const std::string& shown) {
  std::vector<std::string> all;
  for (const auto& tags : images) {
    if (tags.empty()) all.push_back("");
    for (const auto& t : tags) all.push_back(t);
  }
  if (images.empty()) return absl::InvalidArgumentError(absl::StrCat(shown, " holds no image"));
  if (reference.empty()) {
    if (images.size() == 1) return std::string();
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " holds ", images.size(), " images: name one of ", TagList(all)));
  }
  for (size_t i = 0; i < images.size(); ++i) {
    for (const auto& t : images[i]) {
      if (DockerTagMatches(t, reference)) return absl::StrCat(":", t);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no image \"", Shown(reference), "\" in ", shown, "; it holds ", TagList(all)));
}

// Env, WorkingDir and User from the config of the image tagged kScratchTag
// in our scratch layout (written by skopeo, read as untrusted anyway).
absl::StatusOr<ExecDefaults> ReadExecDefaults(const std::string& layout) {
  SMOLVM_ASSIGN_OR_RETURN(std::string index_text, ReadFileToString(layout + "/index.json"));
  SMOLVM_ASSIGN_OR_RETURN(json index, ParseJson(index_text, "index.json"));
  const json* manifest_desc = nullptr;
  if (index.is_object() && index.contains("manifests") && index["manifests"].is_array()) {
    for (const auto& m : index["manifests"]) {
      if (m.is_object() && m.contains("annotations") && m["annotations"].is_object() &&
          m["annotations"].value("org.opencontainers.image.ref.name", "") == kScratchTag) {
        manifest_desc = &m;
      }
    }
  }
  if (manifest_desc == nullptr) return absl::InternalError("converted image has no manifest");
  SMOLVM_ASSIGN_OR_RETURN(std::string manifest_path, BlobPath(*manifest_desc, "image index"));
  SMOLVM_ASSIGN_OR_RETURN(std::string manifest_text,
                          ReadFileToString(JoinPath(layout, manifest_path)));
  SMOLVM_ASSIGN_OR_RETURN(json manifest, ParseJson(manifest_text, "image manifest"));
  if (!manifest.is_object() || !manifest.contains("config")) {
    return absl::InvalidArgumentError("image manifest has no config");
  }
  SMOLVM_ASSIGN_OR_RETURN(std::string config_path, BlobPath(manifest["config"], "image manifest"));
  SMOLVM_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(JoinPath(layout, config_path)));
  SMOLVM_ASSIGN_OR_RETURN(json config, ParseJson(config_text, "image config"));
  ExecDefaults defaults;
  if (!config.is_object() || !config.contains("config") || !config["config"].is_object()) {
    return defaults;  // An image without a runtime config (allowed).
  }
  const json& c = config["config"];
  if (auto it = c.find("Env"); it != c.end() && it->is_array()) {
    for (const auto& e : *it) {
      if (e.is_string()) defaults.env.push_back(e.get<std::string>());
    }
  }
  if (auto it = c.find("WorkingDir"); it != c.end() && it->is_string()) {
    defaults.working_dir = it->get<std::string>();
  }
  if (auto it = c.find("User"); it != c.end() && it->is_string()) {
    defaults.user = it->get<std::string>();
  }
  return defaults;
}

// Unpacks the image tagged kScratchTag in `layout` into `rootfs_dir` with
// umoci: layers in order, whiteouts applied, every path resolved inside the
// root (securejoin: "../x", absolute names and symlinks pointing out of the
// root all land inside it).
absl::Status UmociUnpack(const std::string& layout, const TempDir& scratch,
                         const std::string& rootfs_dir, const BuildContext& ctx) {
  std::string tree = scratch.Join("rootfs");
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool({"umoci", "raw", "unpack", "--image",
                                           absl::StrCat(layout, ":", kScratchTag), tree},
                                          ctx));
  if (r.exit_code != 0) return InputToolError("unpacking the image layers failed", r);
  return MoveTreeInto(tree, rootfs_dir, ctx);
}

enum class Magic { kTar, kCompressed, kBzip2, kUnknown };

// What the first bytes of a file say it is.
absl::StatusOr<Magic> SniffArchive(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  unsigned char b[512] = {};
  ssize_t n = pread(fd.get(), b, sizeof(b), 0);
  if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
  auto starts = [&](std::initializer_list<unsigned char> m) {
    if (static_cast<size_t>(n) < m.size()) return false;
    size_t i = 0;
    for (unsigned char c : m) {
      if (b[i++] != c) return false;
    }
    return true;
  };
  if (starts({0x1f, 0x8b}) || starts({0xfd, '7', 'z', 'X', 'Z', 0x00}) ||
      starts({0x28, 0xb5, 0x2f, 0xfd}) || starts({0x04, 0x22, 0x4d, 0x18})) {
    return Magic::kCompressed;  // gzip, xz, zstd, lz4: zstd reads them all.
  }
  if (starts({'B', 'Z', 'h'})) return Magic::kBzip2;
  if (n == 512 && memcmp(b + 257, "ustar", 5) == 0) return Magic::kTar;
  return Magic::kUnknown;
}

}  // namespace

absl::Status BuildDebianRootfs(const DebianSource& source, const std::string& rootfs_dir,
                               const std::string& cache_dir, const BuildContext& ctx) {
  SMOLVM_RETURN_IF_ERROR(ValidateDebianSource(source));
  SMOLVM_RETURN_IF_ERROR(CheckEmptyTarget(rootfs_dir));
  SMOLVM_ASSIGN_OR_RETURN(std::string root, Absolute(rootfs_dir));
  SMOLVM_ASSIGN_OR_RETURN(std::string cache, Absolute(cache_dir));
  SMOLVM_RETURN_IF_ERROR(MakeDirs(cache, 0755));
  size_t cached_before = CountDebs(cache);

  // A private mount namespace: mmdebstrap's mounts of /dev, /proc and /sys
  // in the chroot vanish with its processes even when it is killed (timeout
  // or cancel), so no caller ever removes a tree with host /dev inside.
  std::vector<std::string> argv = {"unshare",
                                   "--mount",
                                   "--propagation",
                                   "private",
                                   "--",
                                   "mmdebstrap",
                                   "--mode=root",
                                   "--format=directory",
                                   absl::StrCat("--variant=", source.variant),
                                   "--skip=essential/unlink"};
  std::vector<std::pair<absl::string_view, const char*>> hooks = {
      {"setup", kCacheInHook},         {"setup", kUnsafeIoOnHook},
      {"extract", kCacheOutHook},      {"customize", kCacheOutHook},
      {"customize", kUnsafeIoOffHook}, {"customize", kForgetHostHook}};
  if (!source.packages.empty()) {
    hooks.insert(hooks.begin() + 3, {"extract", kCheckPackagesHook});
    argv.push_back(absl::StrCat("--include=", absl::StrJoin(source.packages, ",")));
  }
  for (const auto& [stage, hook] : hooks) {
    argv.push_back(absl::StrCat("--", stage, "-hook=", hook));
  }
  argv.push_back("--");
  argv.push_back(source.suite);
  argv.push_back(root);
  // The downloads run in the network namespace the operator chose.
  if (!ctx.download_netns.empty()) {
    argv.insert(argv.begin(), {"nsenter", absl::StrCat("--net=", ctx.download_netns), "--"});
  }
  // Without a mirror mmdebstrap uses http://deb.debian.org/debian, plus the
  // updates and security suites for a stable release: the archive this
  // host's apt uses too.
  if (!source.mirror.empty()) argv.push_back(source.mirror);

  ctx.Report(absl::StrCat("debian: mmdebstrap ", source.suite, " ", source.variant,
                          source.packages.empty()
                              ? ""
                              : absl::StrCat(" (+", absl::StrJoin(source.packages, " "), ")")));
  // mmdebstrap's own temp files (its gpg home among them, which it leaves
  // behind) go into a scratch dir that goes with this call.
  SMOLVM_ASSIGN_OR_RETURN(TempDir tmp, ScratchDirBeside(rootfs_dir, "tmp"));
  SMOLVM_ASSIGN_OR_RETURN(
      auto r, RunTool(argv, ctx,
                      {absl::StrCat("SMOLVM_DEB_CACHE=", cache),
                       absl::StrCat("SMOLVM_DEB_PACKAGES=", absl::StrJoin(source.packages, " ")),
                       absl::StrCat("TMPDIR=", tmp.path())}));
  if (r.exit_code != 0) return MmdebstrapError(source, r);
  size_t cached_after = CountDebs(cache);
  ctx.Report(absl::StrCat("debian: done, ", cached_after - std::min(cached_after, cached_before),
                          " new .debs cached"));
  return absl::OkStatus();
}

absl::StatusOr<ExecDefaults> UnpackOciRootfs(const OciSource& source, const std::string& rootfs_dir,
                                             const BuildContext& ctx) {
  if (source.path.empty()) return absl::InvalidArgumentError("OCI image path is empty");
  if (!ValidReference(source.reference)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad image reference \"", Shown(source.reference), "\""));
  }
  SMOLVM_ASSIGN_OR_RETURN(std::string path, Absolute(source.path));
  std::string shown = absl::StrCat("\"", Shown(source.path), "\"");
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("OCI image ", shown, " does not exist"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("OCI image ", shown));
  }
  SMOLVM_RETURN_IF_ERROR(CheckEmptyTarget(rootfs_dir));
  SMOLVM_ASSIGN_OR_RETURN(TempDir scratch, ScratchDirBeside(rootfs_dir, "oci"));
  // skopeo's transports split "type:path:ref" at colons: reach the input
  // through a colon-free name.
  std::string src = scratch.Join("src");
  if (symlink(path.c_str(), src.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("symlink ", src));
  }

  std::string skopeo_source;
  if (S_ISDIR(st.st_mode)) {
    if (!PathExists(path + "/oci-layout") || !PathExists(path + "/index.json")) {
      return absl::InvalidArgumentError(
          absl::StrCat(shown, " is not an OCI image layout (it needs oci-layout and index.json)"));
    }
    SMOLVM_ASSIGN_OR_RETURN(std::string index_text,
                            ReadFileToString(path + "/index.json", kToolOutputCap));
    auto tags = OciTags(index_text);
    if (!tags.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(shown, ": ", tags.status().message()));
    }
    SMOLVM_ASSIGN_OR_RETURN(std::string suffix, PickOciImage(*tags, source.reference, shown));
    skopeo_source = absl::StrCat("oci:", src, suffix);
  } else if (S_ISREG(st.st_mode)) {
    ctx.Report("oci: reading archive");
    auto members = TarMembers(src, ctx);
    if (!members.ok()) {
      if (!absl::IsInvalidArgument(members.status())) return members.status();
      return absl::InvalidArgumentError(absl::StrCat(
          shown, " is not an OCI layout or docker save tarball: ", members.status().message()));
    }
    if (auto m = FindMember(*members, "manifest.json"); m.has_value()) {
      SMOLVM_ASSIGN_OR_RETURN(std::string text, TarMember(src, *m, ctx));
      auto images = DockerTags(text);
      if (!images.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(shown, ": ", images.status().message()));
      }
      SMOLVM_ASSIGN_OR_RETURN(std::string suffix,
                              PickDockerImage(*images, source.reference, shown));
      skopeo_source = absl::StrCat("docker-archive:", src, suffix);
    } else if (auto idx = FindMember(*members, "index.json");
               idx.has_value() && FindMember(*members, "oci-layout").has_value()) {
      SMOLVM_ASSIGN_OR_RETURN(std::string text, TarMember(src, *idx, ctx));
      auto tags = OciTags(text);
      if (!tags.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(shown, ": ", tags.status().message()));
      }
      SMOLVM_ASSIGN_OR_RETURN(std::string suffix, PickOciImage(*tags, source.reference, shown));
      skopeo_source = absl::StrCat("oci-archive:", src, suffix);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(shown,
                       " is neither an OCI layout tarball (oci-layout, index.json) nor a docker "
                       "save tarball (manifest.json)"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " is neither a directory nor a regular file"));
  }

  // skopeo normalizes whatever it reads (docker media types, a multi-arch
  // index: the host's architecture) into an OCI layout umoci can unpack.
  // No registry is involved, so no signature policy applies.
  std::string layout = scratch.Join("layout");
  ctx.Report(absl::StrCat("oci: skopeo copy ",
                          source.reference.empty() ? "(only image)" : source.reference));
  SMOLVM_ASSIGN_OR_RETURN(
      auto copied, RunTool({"skopeo", "--insecure-policy", "copy", "--quiet", "--", skopeo_source,
                            absl::StrCat("oci:", layout, ":", kScratchTag)},
                           ctx, {absl::StrCat("TMPDIR=", scratch.path())}));
  if (copied.exit_code != 0) {
    return InputToolError(absl::StrCat("reading the image in ", shown), copied);
  }
  SMOLVM_ASSIGN_OR_RETURN(ExecDefaults defaults, ReadExecDefaults(layout));
  ctx.Report("oci: unpack layers");
  SMOLVM_RETURN_IF_ERROR(UmociUnpack(layout, scratch, rootfs_dir, ctx));
  return defaults;
}

absl::Status CopyDirectoryRootfs(const std::string& source_dir, const std::string& rootfs_dir,
                                 const BuildContext& ctx) {
  std::string shown = absl::StrCat("\"", Shown(source_dir), "\"");
  struct stat st;
  if (lstat(source_dir.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("rootfs directory ", shown, " does not exist"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("rootfs directory ", shown));
  }
  if (S_ISLNK(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " is a symlink: name the directory itself"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(shown, " is not a directory"));
  }
  SMOLVM_RETURN_IF_ERROR(CheckEmptyTarget(rootfs_dir));
  std::error_code ec;
  fs::path src_real = fs::canonical(source_dir, ec);
  fs::path dst_real = ec ? fs::path() : fs::canonical(rootfs_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("realpath: ", ec.message()));
  std::string s = src_real.string(), d = dst_real.string();
  if (d == s || absl::StartsWith(d, s == "/" ? s : s + "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " contains the image being built: it cannot be copied into itself"));
  }
  ctx.Report(absl::StrCat("directory: copy ", source_dir));
  // -a: owners, modes, times, symlinks as symlinks (never followed), hard
  // links within the tree, xattrs, devices; -x: mounts below the directory
  // (a /proc in a chroot) are not descended into.
  SMOLVM_ASSIGN_OR_RETURN(
      auto r, RunTool({"cp", "-a", "-x", "--reflink=auto", "--", s + "/.", d + "/"}, ctx));
  if (r.exit_code != 0) return HostToolError(absl::StrCat("copying ", shown), r);
  return absl::OkStatus();
}

absl::Status UnpackRootfsTarball(const std::string& tarball, const std::string& rootfs_dir,
                                 const BuildContext& ctx) {
  std::string shown = absl::StrCat("\"", Shown(tarball), "\"");
  struct stat st;
  if (stat(tarball.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("rootfs tarball ", shown, " does not exist"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("rootfs tarball ", shown));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(shown, " is not a regular file"));
  }
  SMOLVM_RETURN_IF_ERROR(CheckEmptyTarget(rootfs_dir));
  SMOLVM_ASSIGN_OR_RETURN(std::string path, Absolute(tarball));
  SMOLVM_ASSIGN_OR_RETURN(Magic magic, SniffArchive(path));
  SMOLVM_ASSIGN_OR_RETURN(TempDir scratch, ScratchDirBeside(rootfs_dir, "tar"));

  std::string layer = path;
  if (magic == Magic::kCompressed) {
    ctx.Report("tarball: decompress");
    layer = scratch.Join("layer.tar");
    SMOLVM_ASSIGN_OR_RETURN(auto r,
                            RunTool({"zstd", "-d", "-q", "-f", "-o", layer, "--", path}, ctx));
    if (r.exit_code != 0) return InputToolError(absl::StrCat(shown, " is corrupt"), r);
    SMOLVM_ASSIGN_OR_RETURN(magic, SniffArchive(layer));
    if (magic != Magic::kTar) {
      return absl::InvalidArgumentError(
          absl::StrCat(shown, " does not hold a tar archive once decompressed"));
    }
  } else if (magic == Magic::kBzip2) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " is bzip2-compressed: use an uncompressed, gzip, xz or zstd tarball"));
  } else if (magic != Magic::kTar) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " is not a tar archive (plain, gzip, xz or zstd-compressed)"));
  }

  // The tarball becomes the single layer of a scratch image, so it is
  // unpacked exactly like an OCI layer: nothing lands outside the root.
  ctx.Report("tarball: unpack");
  std::string layout = scratch.Join("layout");
  std::string image = absl::StrCat(layout, ":", kScratchTag);
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"umoci", "init", "--layout", layout},
           {"umoci", "new", "--image", image},
           {"umoci", "raw", "add-layer", "--no-history", "--image", image, layer}}) {
    SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool(argv, ctx));
    if (r.exit_code != 0) {
      return InputToolError(absl::StrCat("umoci ", argv[1], " for ", shown), r);
    }
  }
  if (layer != path) {
    if (unlink(layer.c_str()) != 0) return absl::ErrnoToStatus(errno, "unlink " + layer);
  }
  return UmociUnpack(layout, scratch, rootfs_dir, ctx);
}

std::map<std::string, std::string> EnvMap(const ExecDefaults& defaults) {
  std::map<std::string, std::string> env;
  for (const auto& entry : defaults.env) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}

}  // namespace smolvm::image
