// SmolVM::upload_file / download_file / upload_dir / download_dir: file
// transfers over the streaming UploadFile and DownloadFile RPCs
// (proto/smolvm/v1/vm_service.proto). Directories travel as tar streams:
// uploads are made by the host's `tar -c`, started with posix_spawnp (a
// fork/exec that is safe in this multi-threaded process) and connected by a
// pipe, nothing going through a shell; downloads come from the guest, so
// they are unpacked in process by SafeExtractTar (client/safe_extract.h),
// which a thread runs on the read end of a pipe that the download fills.

#include <errno.h>
#include <fcntl.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/safe_extract.h"
#include "client/smolvm.h"
#include "lib/base/unique_fd.h"

extern char** environ;

namespace smolvm {

namespace {

// kChunkSize is the data size of each UploadFile message.
constexpr size_t kChunkSize = 1 << 20;
// kMaxTarStderr bounds the tar error text kept for a message.
constexpr size_t kMaxTarStderr = 4096;

// ReadUpTo reads into `chunk` up to kChunkSize bytes, stopping early only at
// end of input; returns false when nothing was left.
absl::StatusOr<bool> ReadUpTo(int fd, std::string* chunk,
                              absl::string_view what) {
  chunk->resize(kChunkSize);
  size_t got = 0;
  while (got < kChunkSize) {
    ssize_t n = ::read(fd, chunk->data() + got, kChunkSize - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("read ", what));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  chunk->resize(got);
  return got > 0;
}

absl::Status WriteAll(int fd, absl::string_view data, absl::string_view what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("write ", what));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// ScopedSigpipeBlock blocks SIGPIPE in this thread, so that writing to a pipe
// whose reader (the extractor) stopped fails with EPIPE instead of killing the
// process, and discards a SIGPIPE raised meanwhile.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&sigpipe_);
    sigaddset(&sigpipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &sigpipe_, &old_);
  }
  ~ScopedSigpipeBlock() {
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero = {0, 0};
      while (sigtimedwait(&sigpipe_, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t sigpipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

// TarProcess is a running host `tar -c` whose stdout is a pipe to this
// process; its stderr goes to an in-memory file read back for error
// messages.
class TarProcess {
 public:
  // Start runs `tar -c -f - -C dir .`.
  static absl::StatusOr<std::unique_ptr<TarProcess>> Start(
      const std::string& dir) {
    auto tar = std::unique_ptr<TarProcess>(new TarProcess);
    tar->what_ = absl::StrCat("tar -c -C ", dir);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe");
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    tar->stderr_ = UniqueFd(::memfd_create("smolvm-tar-stderr", MFD_CLOEXEC));
    if (!tar->stderr_.valid()) return absl::ErrnoToStatus(errno, "memfd_create");

    std::vector<std::string> args = {"tar", "-c", "-f", "-", "-C", dir, "."};
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    absl::Cleanup destroy = [&actions] {
      posix_spawn_file_actions_destroy(&actions);
    };
    // The pipe ends and the memfd are close-on-exec; dup2 makes inheritable
    // copies on 0-2 only.
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, tar->stderr_.get(), 2);
    if (int err = ::posix_spawnp(&tar->pid_, "tar", &actions, nullptr,
                                 argv.data(), environ);
        err != 0) {
      return absl::ErrnoToStatus(err, absl::StrCat("start ", tar->what_));
    }
    tar->pipe_ = std::move(read_end);
    return tar;
  }

  ~TarProcess() {
    if (pid_ > 0) Kill().IgnoreError();
  }

  // pipe is tar's stdout.
  int pipe() const { return pipe_.get(); }
  const std::string& what() const { return what_; }

  // Wait closes the pipe, waits for tar to exit and returns an error naming its
  // exit status and stderr unless it exited 0. Later calls return the same
  // result.
  absl::Status Wait() {
    pipe_.Reset();
    if (pid_ <= 0) return result_;
    int status = 0;
    pid_t waited;
    while ((waited = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    pid_ = 0;
    if (waited < 0) {
      result_ = absl::ErrnoToStatus(errno, absl::StrCat("wait for ", what_));
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::string how =
          WIFEXITED(status)
              ? absl::StrCat("exited with status ", WEXITSTATUS(status))
              : absl::StrCat("killed by signal ", WTERMSIG(status));
      std::string text = StderrText();
      result_ = absl::InternalError(
          absl::StrCat(what_, ": ", how, text.empty() ? "" : ": ", text));
    }
    return result_;
  }

  // Kill ends tar at once (the transfer failed) and reaps it.
  absl::Status Kill() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
    return Wait();
  }

 private:
  TarProcess() = default;

  std::string StderrText() const {
    std::string text(kMaxTarStderr, '\0');
    ssize_t n = ::pread(stderr_.get(), text.data(), text.size(), 0);
    text.resize(n > 0 ? static_cast<size_t>(n) : 0);
    absl::StripTrailingAsciiWhitespace(&text);
    return text;
  }

  pid_t pid_ = 0;  // 0 once reaped.
  absl::Status result_;
  std::string what_;
  UniqueFd pipe_;
  UniqueFd stderr_;
};

// ChunkSource produces the data of an upload.
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  // Next fills `chunk` with the next at most kChunkSize bytes; false = end.
  virtual absl::StatusOr<bool> Next(std::string* chunk) = 0;
  // Close is called once, after Next returned false (`complete`) or when the
  // upload stops early. An error cancels the upload.
  virtual absl::Status Close(bool complete) = 0;
};

class FileSource : public ChunkSource {
 public:
  FileSource(UniqueFd fd, std::string path)
      : fd_(std::move(fd)), path_(std::move(path)) {}
  absl::StatusOr<bool> Next(std::string* chunk) override {
    return ReadUpTo(fd_.get(), chunk, path_);
  }
  absl::Status Close(bool) override { return absl::OkStatus(); }

 private:
  UniqueFd fd_;
  std::string path_;
};

class TarSource : public ChunkSource {
 public:
  explicit TarSource(std::unique_ptr<TarProcess> tar) : tar_(std::move(tar)) {}
  absl::StatusOr<bool> Next(std::string* chunk) override {
    return ReadUpTo(tar_->pipe(), chunk,
                    absl::StrCat("output of ", tar_->what()));
  }
  absl::Status Close(bool complete) override {
    return complete ? tar_->Wait() : tar_->Kill();
  }

 private:
  std::unique_ptr<TarProcess> tar_;
};

// Upload makes one UploadFile call: `header`, then the chunks of `source`.
// When the source fails, the call is cancelled (never half-committed by a
// WritesDone).
absl::Status Upload(const Connection& connection,
                    const v1::UploadFileHeader& header, ChunkSource& source) {
  const std::string what =
      absl::StrCat("upload to vm ", header.vm_id(), ":", header.path());
  grpc::ClientContext context;
  if (absl::Status s = connection.PrepareContext(&context); !s.ok()) {
    source.Close(/*complete=*/false).IgnoreError();  // Stop tar, if any.
    return s;
  }
  v1::UploadFileResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::UploadFileRequest>> writer =
      connection.vm_stub().UploadFile(&context, &response);

  v1::UploadFileRequest message;
  *message.mutable_header() = header;
  bool stream_ok = writer->Write(message);
  uint64_t sent = 0;
  bool complete = false;
  absl::Status source_status;
  while (stream_ok) {
    absl::StatusOr<bool> more = source.Next(message.mutable_data());
    if (!more.ok()) {
      source_status = more.status();
      break;
    }
    if (!*more) {
      complete = true;
      break;
    }
    sent += message.data().size();
    stream_ok = writer->Write(message);
  }
  absl::Status closed = source.Close(complete);
  if (source_status.ok()) source_status = closed;
  if (!source_status.ok()) {
    context.TryCancel();
    writer->Finish().ok();  // Cancelled; the source's error is the news.
    return source_status;
  }
  if (stream_ok) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return connection.Convert(status);
  if (!stream_ok) {
    return absl::InternalError(absl::StrCat(
        what, ": the stream broke but the daemon reported success"));
  }
  if (!header.tar() && response.bytes_written() != sent) {
    return absl::DataLossError(absl::StrCat(what, ": sent ", sent,
                                            " bytes but the daemon wrote ",
                                            response.bytes_written()));
  }
  return absl::OkStatus();
}

struct DownloadEnd {
  uint32_t mode = 0;
  uint64_t total_bytes = 0;
};

// Download makes one DownloadFile call and passes each chunk of data to
// `sink`; a sink error cancels the call. Checks that the stream ended with
// eof and that total_bytes were received.
absl::StatusOr<DownloadEnd> Download(
    const Connection& connection, const v1::DownloadFileRequest& request,
    absl::FunctionRef<absl::Status(absl::string_view)> sink) {
  const std::string what =
      absl::StrCat("download from vm ", request.vm_id(), ":", request.path());
  grpc::ClientContext context;
  if (absl::Status s = connection.PrepareContext(&context); !s.ok()) return s;
  std::unique_ptr<grpc::ClientReader<v1::DownloadFileResponse>> reader =
      connection.vm_stub().DownloadFile(&context, request);

  v1::DownloadFileResponse response;
  uint64_t received = 0;
  bool eof = false;
  DownloadEnd end;
  absl::Status stop;  // Why reading stopped early.
  while (reader->Read(&response)) {
    if (eof) {
      stop = absl::InternalError(
          absl::StrCat(what, ": the daemon sent more after eof"));
      break;
    }
    if (!response.data().empty()) {
      received += response.data().size();
      stop = sink(response.data());
      if (!stop.ok()) break;
    }
    if (response.eof()) {
      eof = true;
      end.mode = response.mode();
      end.total_bytes = response.total_bytes();
    }
  }
  if (!stop.ok()) {
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    reader->Finish().ok();  // Cancelled; `stop` is the news.
    return stop;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return connection.Convert(status);
  if (!eof) {
    return absl::DataLossError(
        absl::StrCat(what, ": the stream ended before eof"));
  }
  if (received != end.total_bytes) {
    return absl::DataLossError(absl::StrCat(what, ": received ", received,
                                            " bytes of ", end.total_bytes));
  }
  return end;
}

}  // namespace

absl::Status SmolVM::upload_file(const std::string& local_path,
                                 const std::string& guest_path, uint32_t mode,
                                 const std::string& user) {
  if (absl::Status s = CheckStarted("upload to"); !s.ok()) return s;
  UniqueFd fd(::open(local_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", local_path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("stat ", local_path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "upload ", local_path, ": not a regular file",
        S_ISDIR(st.st_mode) ? " (use upload_dir for a directory)" : ""));
  }
  v1::UploadFileHeader header;
  header.set_vm_id(vm_id());
  header.set_path(guest_path);
  header.set_mode(mode);
  header.set_make_parents(true);
  header.set_user(user);
  FileSource source(std::move(fd), local_path);
  return Upload(connection_, header, source);
}

absl::Status SmolVM::download_file(const std::string& guest_path,
                                   const std::string& local_path, const std::string& user) {
  if (absl::Status s = CheckStarted("download from"); !s.ok()) return s;
  namespace fs = std::filesystem;
  // The temporary file lives next to the target so that rename() is atomic.
  const fs::path target(local_path);
  if (target.filename().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("download to ", local_path, ": not a file name"));
  }
  std::string temp_path =
      (target.parent_path() /
       (".smolvm-download-" + target.filename().string() + ".XXXXXX"))
          .string();
  UniqueFd fd(::mkostemp(temp_path.data(), O_CLOEXEC));
  if (!fd.valid()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("create a temporary file for ", local_path));
  }
  bool keep = false;
  absl::Cleanup remove_temp = [&] {
    if (!keep) ::unlink(temp_path.c_str());
  };

  v1::DownloadFileRequest request;
  request.set_vm_id(vm_id());
  request.set_path(guest_path);
  request.set_user(user);
  absl::StatusOr<DownloadEnd> end =
      Download(connection_, request, [&](absl::string_view data) {
        return WriteAll(fd.get(), data, temp_path);
      });
  if (!end.ok()) return end.status();
  const mode_t mode = end->mode != 0 ? (end->mode & 0777) : 0644;
  if (::fchmod(fd.get(), mode) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", temp_path));
  }
  if (::fsync(fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("fsync ", temp_path));
  }
  if (::close(fd.Release()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("close ", temp_path));
  }
  if (::rename(temp_path.c_str(), local_path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", temp_path, " to ", local_path));
  }
  keep = true;
  return absl::OkStatus();
}

absl::Status SmolVM::upload_dir(const std::string& local_dir,
                                const std::string& guest_dir, const std::string& user) {
  if (absl::Status s = CheckStarted("upload to"); !s.ok()) return s;
  std::error_code ec;
  if (!std::filesystem::is_directory(local_dir, ec)) {
    return ec ? absl::ErrnoToStatus(ec.value(), absl::StrCat("upload ", local_dir))
              : absl::InvalidArgumentError(
                    absl::StrCat("upload ", local_dir, ": not a directory"));
  }
  absl::StatusOr<std::unique_ptr<TarProcess>> tar =
      TarProcess::Start(local_dir);
  if (!tar.ok()) return tar.status();
  v1::UploadFileHeader header;
  header.set_vm_id(vm_id());
  header.set_path(guest_dir);
  header.set_tar(true);
  header.set_make_parents(true);
  header.set_user(user);
  TarSource source(*std::move(tar));
  return Upload(connection_, header, source);
}

absl::StatusOr<DirDownload> SmolVM::download_dir(const std::string& guest_dir,
                                                 const std::string& local_dir,
                                                 const std::string& user) {
  if (absl::Status s = CheckStarted("download from"); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::create_directories(local_dir, ec);
  if (ec) {
    return absl::ErrnoToStatus(ec.value(), absl::StrCat("create directory ", local_dir));
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  // The extractor reads the pipe to its end unless it fails; then it closes
  // its end, and the next write here fails with EPIPE.
  absl::StatusOr<TarExtraction> extracted;
  std::thread extractor([&] {
    extracted = SafeExtractTar(read_end.get(), local_dir);
    read_end.Reset();
  });
  // Finish ends the archive (EOF) and waits for the extractor.
  auto finish = [&] {
    write_end.Reset();
    if (extractor.joinable()) extractor.join();
  };
  absl::Cleanup always_finish = finish;

  v1::DownloadFileRequest request;
  request.set_vm_id(vm_id());
  request.set_path(guest_dir);
  request.set_tar(true);
  request.set_user(user);
  absl::StatusOr<DownloadEnd> end;
  {
    ScopedSigpipeBlock no_sigpipe;  // The extractor may stop reading.
    end = Download(connection_, request, [&](absl::string_view data) {
      absl::Status written =
          WriteAll(write_end.get(), data,
                   absl::StrCat("the tar stream into ", local_dir));
      // EPIPE: the extractor stopped early; its own error says why.
      if (!written.ok()) {
        finish();
        return extracted.ok() ? written : extracted.status();
      }
      return written;
    });
  }
  finish();
  // A failed download ends the archive early: a file cut short is dropped
  // by the extractor, and the download's error is the news.
  if (!end.ok()) return end.status();
  if (!extracted.ok()) return extracted.status();
  DirDownload result;
  result.refused = std::move(extracted->refused);
  result.refused_count = extracted->refused_count;
  return result;
}

}  // namespace smolvm
