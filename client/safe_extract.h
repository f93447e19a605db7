// File: client/safe_extract.h
//
// SafeExtractTar unpacks a tar stream that came from a guest (DownloadFile's
// tar mode, see SmolVM::download_dir) into a host directory, treating every
// entry as hostile. It reads the stream with libarchive and writes with
// *at() calls relative to descriptors of directories opened one component at
// a time with O_NOFOLLOW, so nothing is ever written through a symlink.
//
// What is extracted, and how:
// - Regular files: written to a temporary name in their directory, then
//   renamed over the entry's name (a file is complete or absent; an
//   existing file or symlink there is replaced, not written through).
// - Directories (created with missing parents; their modes and times are
//   applied at the end, deepest first). The target directory itself keeps
//   its mode.
// - Symlinks whose target is relative and stays inside the directory: only
//   leading `..` components, no more of them than the link's depth (so a
//   link resolves inside even through other such links).
// - Hard links to a regular file already inside the directory.
// Permission bits are kept without setuid, setgid and sticky (mode & 0777,
// not masked by the umask); modification times are kept; owners never (the
// files belong to the caller).
//
// Refused (reported, skipped; the rest goes on): device nodes, FIFOs,
// sockets, absolute paths, paths with a `..` component, paths that go
// through a symlink or a non-directory, symlinks that leave the directory,
// hard links to anything else, and an entry that would replace a directory.
#ifndef SMOLVM_CLIENT_SAFE_EXTRACT_H_
#define SMOLVM_CLIENT_SAFE_EXTRACT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace smolvm {

// kMaxListedRefusals bounds TarExtraction::refused (a hostile stream can
// hold millions of refused entries).
inline constexpr size_t kMaxListedRefusals = 1000;

// TarExtraction is what SafeExtractTar did besides extracting.
struct TarExtraction {
  // refused lists the first kMaxListedRefusals refused entries, in archive
  // order, each as "<entry path>: <reason>". The paths are the guest's bytes:
  // escape them before showing them on a terminal.
  std::vector<std::string> refused;
  // refused_count counts every refused entry (refused.size() or more).
  uint64_t refused_count = 0;
};

// SafeExtractTar extracts the uncompressed tar stream read from `input_fd`
// into the existing directory `dir` (existing files are kept unless an entry
// replaces them). On success the input has been read to its end (bytes
// after the archive's end are discarded) so a writer on a pipe never sees
// EPIPE. Errors: DATA_LOSS for a malformed or truncated archive; the errno's
// code for a host failure (no space, I/O error, `dir` not usable). On error
// the entries extracted so far stay (a partial file never does).
// Does not close `input_fd`.
absl::StatusOr<TarExtraction> SafeExtractTar(int input_fd,
                                             const std::string& dir);

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_SAFE_EXTRACT_H_
