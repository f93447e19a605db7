// File: client/smolvm.h
// -----------------------------------------------------------------------------
//
// The smolvmd client SDK: `SmolVM` (one microVM) and `SmolVMManager` (listing
// and looking things up). They mirror the flows of the SmolVM Python SDK one
// to one, and that is why the method names are lower case (`start()`,
// `snapshot()`, `close()`, `from_snapshot()`, `list_snapshots()`) rather than
// Google-style CamelCase: code and docs written against the Python SDK read
// the same in C++.
//
//   smolvm::SmolVM vm;                          // default image, nothing sent
//   if (absl::Status s = vm.start(); !s.ok()) ...   // CreateVm(start=true)
//   absl::StatusOr<smolvm::v1::SnapshotInfo> snap = vm.snapshot("ckpt");
//   vm.close().IgnoreError();                   // DeleteVm; snapshots stay
//
//   absl::StatusOr<smolvm::SmolVM> clone =
//       smolvm::SmolVM::from_snapshot("ckpt");  // RestoreSnapshot
//
//   absl::StatusOr<smolvm::CommandResult> r =
//       vm.run("python3 -c 'print(6 * 7)'");    // Exec, shell form
//   if (r.ok() && r->ok()) std::cout << r->output();   // "42"
//   vm.upload_file("model.bin", "/root/model.bin");    // UploadFile
//   vm.download_file("/root/out.csv", "out.csv");      // DownloadFile
//
//   smolvm::v1::VMConfig config;                // a host directory in the guest
//   smolvm::v1::Mount* m = config.add_mounts(); // (VMConfig.mounts, virtio-9p)
//   m->set_host_path("/srv/smolvm/share/out");  // beneath [mounts] allowed_dirs
//   m->set_guest_path("/out");
//   m->set_detach_on_snapshot(true);            // else snapshots are refused
//   smolvm::SmolVM with_mount(config);
//
// The classes are thin: each method is one RPC to smolvmd (client/connection.h)
// plus conversion of the result; all validation and state rules live in the
// daemon, whose errors come back unchanged as absl::Status (same code, same
// message; see proto/smolvm/v1/*.proto and client/status.h). Calls block until
// the daemon answers or the per-call deadline (ClientOptions::timeout, default
// 10 minutes) passes; boots return once the guest is ready. Exceptions: `run()`
// / `exec()` (see RunOptions::timeout for their deadline) and the file
// transfers, which stream (one RPC each, the deadline covers the transfer).
//
// Messages are the generated smolvm.v1 types (`smolvm::v1::VMConfig`,
// `smolvm::v1::Vm`, `smolvm::v1::SnapshotInfo`, ...).

#ifndef SMOLVM_CLIENT_SMOLVM_H_
#define SMOLVM_CLIENT_SMOLVM_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/connection.h"
#include "client/operation_watch.h"
#include "smolvm/v1/event_service.pb.h"
#include "smolvm/v1/filesystem_service.pb.h"
#include "smolvm/v1/process_service.pb.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/types.pb.h"
#include "smolvm/v1/vm_service.pb.h"

namespace smolvm {

// RunOptions are the optional parts of a command run in the guest by
// `SmolVM::run()` / `SmolVM::exec()` (ExecRequest).
struct RunOptions {
  // Added to the VM's environment (VMConfig.env); these win on conflicts.
  std::map<std::string, std::string> env;
  // Working directory in the guest; "" = /root (another user's: its home).
  std::string cwd;
  // The guest user to run as: a name from the guest's /etc/passwd or a
  // uid; "" = root. USER, LOGNAME and HOME follow it (`env` still wins).
  std::string user;
  // The command's whole stdin (at most 16 MiB); nullopt = /dev/null. An
  // empty string is an empty stdin (EOF at once), not /dev/null.
  std::optional<std::string> stdin_data;
  // Limit on the command's run time, enforced in the guest: at expiry its
  // whole process group is killed and the result has `timed_out`. Rounded up
  // to whole milliseconds, at most 2^32-1 ms. Zero (or infinite) = no limit.
  //
  // It also sets the RPC deadline, which (unlike other calls) is NOT simply
  // ClientOptions::timeout, so that a long command is never cut off by the
  // client: with a limit, the deadline is
  // max(ClientOptions::timeout, timeout + 60 s) (none if
  // ClientOptions::timeout is infinite); without a limit there is no
  // deadline, the call lasts as long as the command.
  absl::Duration timeout = absl::ZeroDuration();
};

// ForkVmOptions are the optional parts of `SmolVM::fork()` (ForkVmRequest).
struct ForkVmOptions {
  std::string snapshot_id;   // "" = "<vm_id>-fork-<unix ms>"
  std::string vm_id_prefix;  // children are <prefix>-<n>; "" = the snapshot id
  bool paused = false;       // leave the children PAUSED instead of RUNNING
  std::map<std::string, std::string> labels;  // the snapshot's labels
};

// ExecSessionOptions are the interactive parts of `SmolVM::exec_session()`
// (ExecStreamStart).
struct ExecSessionOptions {
  // Run on a pseudo-terminal in the guest (all output is then stdout).
  bool tty = false;
  // With tty: the terminal's initial size; 0 = 24 rows / 80 columns.
  uint32_t rows = 0;
  uint32_t cols = 0;
  // With tty: TERM; "" = "xterm-256color" (RunOptions::env wins).
  std::string term;
};

// ExecExit is how a command ended (ExecResult).
struct ExecExit {
  // The command's exit status; meaningful when `signal == 0` and
  // `!timed_out`.
  int exit_code = 0;
  // The signal that ended the command, or 0.
  int signal = 0;
  // The command ran past RunOptions::timeout and was killed.
  bool timed_out = false;

  // ok is true when the command exited by itself with status 0.
  bool ok() const { return exit_code == 0 && signal == 0 && !timed_out; }
};

// CommandResult is the outcome of `SmolVM::run()`: how the command ended and
// everything it wrote. As in the Python SDK, a command that fails (non-zero
// `exit_code`, a signal, a timeout) is a result, not an error: `run()` returns
// an OK StatusOr holding it, and the caller checks `ok()` / `exit_code`. A
// non-OK status means the command could not be run or its result could not be
// delivered (no such VM, VM not RUNNING, daemon unreachable, ...).
struct CommandResult {
  // The command's exit status (0 = success); meaningful when `signal == 0`
  // and `!timed_out`.
  int exit_code = 0;
  // The signal that ended the command, or 0.
  int signal = 0;
  // The command ran past RunOptions::timeout and was killed.
  bool timed_out = false;
  // Everything the command wrote to stdout / stderr (bytes, not necessarily
  // UTF-8). Named *_text because `stdout` / `stderr` are C macros.
  std::string stdout_text;
  std::string stderr_text;

  // ok is true when the command exited by itself with status 0 (the Python
  // SDK's `result.ok`).
  bool ok() const { return exit_code == 0 && signal == 0 && !timed_out; }
  // output is stdout without leading and trailing whitespace (the Python
  // SDK's `result.output`).
  std::string output() const;
};

// DirDownload is what `SmolVM::download_dir()` left out. The download
// succeeded; these entries of the guest's archive were skipped as unsafe or
// impossible to write (see download_dir).
struct DirDownload {
  // The first 1000 refused entries, in archive order, each as
  // "<path in the archive>: <reason>". The text comes from the guest: escape
  // it before printing it to a terminal.
  std::vector<std::string> refused;
  // Every refused entry counted (refused.size() or more).
  uint64_t refused_count = 0;
};

// ExecStream names the output stream of a chunk passed to an exec() callback.
enum class ExecStream { kStdout, kStderr };

// ExecOutputCallback receives a command's output as it arrives: one call per
// chunk, in the order the guest produced them (chunk boundaries are
// arbitrary). `data` is only valid during the call.
using ExecOutputCallback =
    std::function<void(ExecStream stream, absl::string_view data)>;

// SmolVM is a handle on one microVM managed by smolvmd.
//
// A SmolVM made by the constructor refers to no VM until `start()` creates one.
// `from_snapshot()` and `attach()` return handles on VMs that already exist.
//
// Lifetime: the destructor does NOT delete the VM, and does not stop it. A VM
// lives in the daemon until `close()` (DeleteVm) is called, like the Python
// SDK's `vm.close()`; a handle dropped without `close()` leaves the VM to the
// daemon (smolvmctl can still see and delete it).
//
// Cached state: `info()` / `status()` are the last Vm the daemon returned
// (from CreateVm, StartVm, StopVm, PauseVm, ResumeVm, GetVm, ExposePort,
// UnexposePort or RestoreSnapshot); `snapshot()` records the state the daemon
// documents (PAUSED, or RUNNING with resume_source). Call `refresh()` to
// re-read it. A failed call leaves the cache as it was.
//
// Before `start()` (and after `close()`) the methods that need a VM return
// FAILED_PRECONDITION without contacting the daemon.
//
// Thread-safety: not thread-safe; use one SmolVM from one thread at a time
// (independent SmolVM objects may be used concurrently). Movable, not
// copyable; a moved-from SmolVM may only be destroyed or assigned to.
class DirWatch;
class ProcessConnection;
class ConsoleStream;
class StatsWatch;
class ExecSession;

class SmolVM {
 public:
  // Prepares a VM with `config` (empty fields = daemon defaults; empty vm_id =
  // generated by the daemon). Sends nothing; `start()` creates the VM.
  explicit SmolVM(v1::VMConfig config = {}, ClientOptions options = {});

  SmolVM(SmolVM&&) noexcept;
  SmolVM& operator=(SmolVM&&) noexcept;
  SmolVM(const SmolVM&) = delete;
  SmolVM& operator=(const SmolVM&) = delete;
  // Does not delete or stop the VM; see the class comment.
  ~SmolVM();

  // start boots the VM and returns once the guest is ready (RUNNING).
  // The first call creates the VM: CreateVm(config, start=true). Later calls
  // (after `stop()`, or on a VM from `attach()`) cold-boot it: StartVm, which
  // the daemon allows from CREATED, STOPPED or ERROR. On failure no VM id is
  // recorded by a first call; if the daemon kept the VM (e.g. in ERROR after a
  // boot timeout, with a caller-chosen vm_id), `attach()` to it or delete it.
  // `on_progress` (optional; here and on the other long calls) sees the
  // call's stages as the daemon reports them, on a thread of its own
  // (client/operation_watch.h).
  absl::Status start(const ProgressCallback& on_progress = {});

  // snapshot checkpoints the VM (CreateSnapshot) into `snapshot_id` ("" = a
  // generated id). The VM is left PAUSED unless `resume_source`, in which case
  // it keeps RUNNING. Requires a RUNNING or PAUSED VM.
  // `labels` tag the snapshot (list_snapshots filters by them).
  absl::StatusOr<v1::SnapshotInfo> snapshot(const std::string& snapshot_id,
                                            bool resume_source = false,
                                            const ProgressCallback& on_progress = {},
                                            const std::map<std::string, std::string>& labels = {});

  // fork snapshots this RUNNING (or PAUSED) VM and restores `count` (1-128)
  // children from it in one call (ForkVm). The VM stays as it was; the
  // snapshot is kept (ForkVmResult::snapshot_id) so more children can be
  // forked from it later, and deleted like any other. Children inherit the
  // VM's files and processes, then diverge; each has its own identity.
  struct ForkVmResult;
  absl::StatusOr<ForkVmResult> fork(uint32_t count, const ForkVmOptions& options = {},
                                    const ProgressCallback& on_progress = {});

  // stop ends the VM's VMM process (StopVm); the disk is kept and `start()`
  // cold-boots it again. Requires RUNNING or PAUSED.
  absl::Status stop();
  // pause stops the vCPUs of a RUNNING VM (PauseVm).
  absl::Status pause();
  // resume continues a PAUSED VM (ResumeVm).
  absl::Status resume();

  // close deletes the VM and its disk (DeleteVm), stopping it first if
  // needed; its snapshots are kept. Idempotent: a VM the daemon no longer
  // knows (NOT_FOUND) counts as closed, later calls are no-ops, and closing a
  // never-started SmolVM sends nothing. After a successful close the handle
  // is spent: `vm_id()` still names the deleted VM, `status()` is
  // VM_STATUS_UNSPECIFIED, and other methods return FAILED_PRECONDITION.
  absl::Status close();

  // refresh re-reads the VM from the daemon (GetVm), updates `info()` and
  // returns it.
  absl::StatusOr<v1::Vm> refresh();

  // from_snapshot restores a VM from `snapshot_id` (RestoreSnapshot) and
  // returns a handle on it: RUNNING when `resume_vm`, else PAUSED. With an
  // empty `vm_id` the VM takes the snapshot's own identity (refused with
  // FAILED_PRECONDITION while that VM is RUNNING or PAUSED); another id makes
  // an independent clone.
  static absl::StatusOr<SmolVM> from_snapshot(const std::string& snapshot_id,
                                              bool resume_vm = true,
                                              const std::string& vm_id = "",
                                              ClientOptions options = {},
                                              const ProgressCallback& on_progress = {});

  // from_pool claims a ready VM from warm pool `pool_id` (PoolService.ClaimVm;
  // see SmolVMManager::create_pool) and returns a handle on it, RUNNING with
  // its own identity and its clock stepped. `vm_id` picks one of the pool's
  // ready members ("" = any). When the pool has none ready the daemon
  // restores one on demand; `from_pool` (if given) says which happened.
  static absl::StatusOr<SmolVM> from_pool(const std::string& pool_id,
                                          const std::string& vm_id = "",
                                          ClientOptions options = {},
                                          bool* from_pool = nullptr);

  // --- Networking -----------------------------------------------------------

  // expose_port makes the guest's `guest_port` reachable on the host at
  // `host_ip`:`host_port` (ExposePort); "" = 127.0.0.1. `protocol` is "tcp"
  // or "udp". ALREADY_EXISTS if the host port is taken. The forward is kept
  // across daemon restarts and removed with the VM; `info()` is updated (its
  // network().port_forwards() lists the forwards in place).
  absl::Status expose_port(uint32_t host_port, uint32_t guest_port,
                           const std::string& host_ip = "",
                           const std::string& protocol = "tcp");
  // update_network_policy replaces the VM's egress policy (in any state;
  // for a running VM in force when it returns, also for what the guest
  // sends on connections already open) and updates `info()`; kept across
  // restarts and in snapshots.
  absl::Status update_network_policy(const v1::EgressPolicy& egress);
  // set_lifetime replaces the VM's lifetime policy (SetLifetime; an empty
  // one clears it; max_lifetime counts from now) and updates `info()`.
  absl::Status set_lifetime(const v1::Lifetime& lifetime);
  // unexpose_port removes the forward on `host_ip`:`host_port` / `protocol`
  // (UnexposePort) and updates `info()`.
  absl::Status unexpose_port(uint32_t host_port,
                             const std::string& host_ip = "",
                             const std::string& protocol = "tcp");

  // --- Commands (Exec; the VM must be RUNNING) ------------------------------

  // run runs `command` with /bin/sh -c in the guest (the Python SDK's
  // `vm.run("python3 -c ...")`), waits for it to end and returns its exit
  // status and output, buffered in memory (use `exec()` for large or
  // unbounded output). A failing command is a result, not an error (see
  // CommandResult); the deadline is described at RunOptions::timeout.
  absl::StatusOr<CommandResult> run(const std::string& command,
                                    const RunOptions& options = {});
  // run with an argv runs argv[0] (looked up in the guest's PATH) with those
  // arguments, without a shell.
  absl::StatusOr<CommandResult> run(const std::vector<std::string>& argv,
                                    const RunOptions& options = {});
  // Makes `vm.run({"ls", "-l"})` the argv form (without it, the braced list
  // would be ambiguous with the std::string overload).
  absl::StatusOr<CommandResult> run(std::initializer_list<std::string> argv,
                                    const RunOptions& options = {});

  // exec is the streaming form of `run()` (argv form; use
  // {"/bin/sh", "-c", command} for a shell): `on_output` is called with each
  // chunk of stdout / stderr as the daemon delivers it, on the calling
  // thread, and exec returns how the command ended. An empty `on_output`
  // discards the output. `run()` is exec() with a callback that buffers.
  absl::StatusOr<ExecExit> exec(const std::vector<std::string>& argv,
                                const RunOptions& options,
                                const ExecOutputCallback& on_output);

  // exec_session starts `argv` (use {"/bin/sh", "-c", command} for a shell
  // command) as an interactive command (ExecStream): stdin is streamed with
  // ExecSession::write_stdin / close_stdin, signals and terminal resizes are
  // sent as they happen, output is read with next(). `options`' env, cwd,
  // user and timeout apply as for exec(); its stdin_data must be unset
  // (INVALID_ARGUMENT). The call has no deadline (it lasts as long as the
  // session); destroying the session (or cancel()) kills the command.
  absl::StatusOr<std::unique_ptr<ExecSession>> exec_session(
      const std::vector<std::string>& argv, const RunOptions& options = {},
      const ExecSessionOptions& session = {});

  // --- Files (UploadFile / DownloadFile; the VM must be RUNNING) ------------
  //
  // Each is one streaming RPC whose deadline (ClientOptions::timeout) covers
  // the whole transfer. Data moves in 1 MiB chunks and is never held in
  // memory as a whole.

  // upload_file copies the local regular file `local_path` to the absolute
  // `guest_path`, replacing it; the guest sees it atomically (temp file,
  // fsync, rename). `mode` is its permission bits; 0 = 0644 (the local
  // file's mode is not copied). Missing parent directories are created.
  // `user` (here and in the other file calls): the guest user whose
  // permissions apply and who owns what is written; "" = root.
  absl::Status upload_file(const std::string& local_path,
                           const std::string& guest_path, uint32_t mode = 0,
                           const std::string& user = "");

  // download_file copies the guest file `guest_path` to `local_path`. The
  // data goes to a temporary file next to `local_path` that is renamed over
  // it only when the whole file arrived (size checked), so `local_path` is
  // either untouched or complete. It gets the guest file's permission bits
  // (0644 if the daemon reports none).
  absl::Status download_file(const std::string& guest_path,
                             const std::string& local_path, const std::string& user = "");

  // upload_dir copies the contents of the local directory `local_dir` into
  // the guest directory `guest_dir` (created with its parents if missing;
  // files already there are kept unless overwritten). Runs the host's `tar
  // -c` (found in PATH) and streams its output as UploadFile's tar mode, where
  // the guest extracts it. Symlinks are copied as symlinks; owners and modes
  // as tar keeps them. If tar fails the upload is cancelled before the guest
  // extracts anything. Not atomic in the guest: a failed extraction can
  // leave some files.
  absl::Status upload_dir(const std::string& local_dir,
                          const std::string& guest_dir, const std::string& user = "");

  // download_dir copies the contents of the guest directory `guest_dir` into
  // `local_dir` (created with its parents if missing; existing files are
  // kept unless an entry replaces them), streaming DownloadFile's tar mode
  // into an in-process extractor that treats the archive as hostile
  // (client/safe_extract.h): files get the caller as owner and their
  // permission bits without setuid, setgid and sticky; nothing is written
  // through a symlink or outside `local_dir`. Device nodes, FIFOs, sockets,
  // absolute paths, `..` components, symlinks leaving `local_dir` and hard
  // links to anything but a regular file inside it are refused: skipped and
  // listed in the result, the rest extracted. Each file appears complete or
  // not at all; the directory as a whole is not atomic: on failure some
  // files may have been written.
  absl::StatusOr<DirDownload> download_dir(const std::string& guest_dir,
                                           const std::string& local_dir,
                                           const std::string& user = "");

  // --- Guest file system (FilesystemService; the VM must be RUNNING) -------
  //
  // Paths are absolute or relative to `user`'s home; "" user = root. Errors
  // carry the guest's meaning (NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
  // ...; see filesystem_service.proto) and name the path.

  // stat_path describes `path` itself (a symlink is not followed).
  absl::StatusOr<v1::FileEntry> stat_path(const std::string& path,
                                          const std::string& user = "");
  // list_dir lists what is under the directory `path`, `depth` (1-32)
  // levels down, breadth-first and sorted; `truncated` past 10,000 entries.
  absl::StatusOr<v1::ListDirResponse> list_dir(const std::string& path, uint32_t depth = 1,
                                               const std::string& user = "");
  // make_dir makes the directory `path` (`mode` 0 = 0755); with `parents`
  // the missing ones above it too, and an existing directory is fine
  // (`created` false).
  absl::StatusOr<v1::MakeDirResponse> make_dir(const std::string& path, bool parents = false,
                                               uint32_t mode = 0, const std::string& user = "");
  // remove_path removes a file, symlink or empty directory; with
  // `recursive` a whole tree (links inside are removed, not followed).
  absl::Status remove_path(const std::string& path, bool recursive = false,
                           const std::string& user = "");
  // rename_path moves `path` to `new_path`; an existing destination is
  // ALREADY_EXISTS unless `overwrite`. Returns the moved object.
  absl::StatusOr<v1::FileEntry> rename_path(const std::string& path, const std::string& new_path,
                                            bool overwrite = false, const std::string& user = "");
  // watch_dir starts watching the directory `path` (with `recursive`, every
  // directory below it too) and returns once the watch is in place in the
  // guest: every change after the return is reported by DirWatch::next().
  // The watch has no deadline; it ends with cancel() or the DirWatch.
  absl::StatusOr<std::unique_ptr<DirWatch>> watch_dir(const std::string& path,
                                                      bool recursive = false,
                                                      const std::string& user = "");

  // --- The guest console (StreamConsole; the VM must be RUNNING or PAUSED) --
  //
  // console streams the serial console as the daemon keeps it: first the
  // last `tail_bytes` (nullopt: all that is kept), then with `follow` what
  // the guest writes next, until the VM stops or ConsoleStream::cancel().
  absl::StatusOr<std::unique_ptr<ConsoleStream>> console(
      bool follow, std::optional<uint64_t> tail_bytes = std::nullopt);

  // --- Resource use (GetVmStats / WatchVmStats; RUNNING or PAUSED) ---------
  absl::StatusOr<v1::VmStats> stats();
  // watch_stats reports the stats every `interval` (1 s - 1 h) until the VM
  // stops or StatsWatch::cancel().
  absl::StatusOr<std::unique_ptr<StatsWatch>> watch_stats(absl::Duration interval);

  // --- Background processes (ProcessService; the VM must be RUNNING) -------
  //
  // A process runs in the guest whether or not a client is attached: it
  // outlives this handle, this client and a daemon restart. Its output is
  // kept in the guest (the last 256 KiB) for any client to attach to.

  // start_process starts `argv` (or, in the string form, `command` under
  // /bin/sh -c) in the background with `options`' env, cwd and user (its
  // stdin_data and timeout must be unset: a background process has no stdin
  // and no limit; INVALID_ARGUMENT otherwise) and returns once it runs.
  absl::StatusOr<v1::ProcessInfo> start_process(const std::vector<std::string>& argv,
                                                const RunOptions& options = {});
  absl::StatusOr<v1::ProcessInfo> start_process(const std::string& command,
                                                const RunOptions& options = {});
  absl::StatusOr<v1::ProcessInfo> start_process(std::initializer_list<std::string> argv,
                                                const RunOptions& options = {});
  // list_processes returns the tracked processes (running and exited).
  absl::StatusOr<std::vector<v1::ProcessInfo>> list_processes();
  // signal_process sends `signal` (1-64) to a running process, or with
  // `group` to its process group. NOT_FOUND if it is not running.
  absl::StatusOr<v1::ProcessInfo> signal_process(uint32_t pid, int signal = 15,
                                                 bool group = false);
  // connect_process attaches to a process's output: first up to
  // `tail_bytes` of what it wrote before, then what it writes, then its
  // exit. The connection has no deadline; cancelling it (or destroying it)
  // detaches without touching the process.
  absl::StatusOr<std::unique_ptr<ProcessConnection>> connect_process(uint32_t pid,
                                                                     uint32_t tail_bytes = 0);
  // wait_process waits until the process has exited (DEADLINE_EXCEEDED
  // after `timeout`; infinite = no limit) and returns it.
  absl::StatusOr<v1::ProcessInfo> wait_process(
      uint32_t pid, absl::Duration timeout = absl::InfiniteDuration());

  // attach returns a handle on the existing VM `vm_id` (GetVm).
  static absl::StatusOr<SmolVM> attach(const std::string& vm_id,
                                       ClientOptions options = {});

  // vm_id is the VM's id; "" before `start()`.
  const std::string& vm_id() const { return info_.vm_id(); }
  // status is the last known status (see the class comment).
  v1::VmStatus status() const { return info_.status(); }
  // info is the last Vm returned by the daemon (empty before `start()`).
  const v1::Vm& info() const { return info_; }
  // config is the configuration given to the constructor, or, for handles
  // from `from_snapshot()` / `attach()`, the daemon's resolved configuration.
  const v1::VMConfig& config() const { return config_; }

 private:
  // Returns OK if the handle refers to a live VM, else FAILED_PRECONDITION
  // naming `operation`.
  absl::Status CheckStarted(absl::string_view operation) const;
  struct ExistingVmTag {};
  // Makes a handle on a VM the daemon returned over `connection`.
  SmolVM(ExistingVmTag, v1::Vm vm, Connection connection);

  // Completes `request` (argv or command already set) with the VM id and
  // `options`; FAILED_PRECONDITION before start(), INVALID_ARGUMENT for a
  // bad timeout. Shared by Exec and ExecStream.
  absl::Status FillExecRequest(const RunOptions& options, v1::ExecRequest* request) const;
  // The one Exec implementation: sends `request` (argv or command already
  // set) completed with the VM id and `options`, reports output to
  // `on_output` and returns the exit (client/smolvm_exec.cc).
  absl::StatusOr<ExecExit> StreamExec(v1::ExecRequest request,
                                      const RunOptions& options,
                                      const ExecOutputCallback& on_output);
  absl::StatusOr<CommandResult> RunRequest(v1::ExecRequest request,
                                           const RunOptions& options);

  Connection connection_;
  v1::VMConfig config_;
  v1::Vm info_;
  bool closed_ = false;
};

// DirWatch is a running WatchDir call (`SmolVM::watch_dir()`). Destroying it
// cancels the watch.
class DirWatch {
 public:
  virtual ~DirWatch() = default;
  // next blocks until the next change; after the end of the watch it returns
  // why it ended (CANCELLED after cancel(); the VM's end; a lost daemon).
  virtual absl::StatusOr<v1::WatchDirEvent> next() = 0;
  // cancel ends the watch; a next() blocked in another thread returns.
  // Thread-safe, idempotent.
  virtual void cancel() = 0;
};

// ConsoleStream is a running StreamConsole call (`SmolVM::console()`).
// Destroying it cancels the call.
class ConsoleStream {
 public:
  virtual ~ConsoleStream() = default;
  // next blocks until the next chunk of console output; at the end it
  // returns why (CANCELLED when the stream ended: the tail was sent, or
  // the VM stopped, or cancel()).
  virtual absl::StatusOr<std::string> next() = 0;
  // Thread-safe, idempotent; a next() blocked in another thread returns.
  virtual void cancel() = 0;
};

// StatsWatch is a running WatchVmStats call (`SmolVM::watch_stats()`).
class StatsWatch {
 public:
  virtual ~StatsWatch() = default;
  // The next report; at the end why (CANCELLED: the VM stopped, cancel()).
  virtual absl::StatusOr<v1::VmStats> next() = 0;
  virtual void cancel() = 0;  // Thread-safe, idempotent.
};

// EventStream is a running WatchEvents call
// (`SmolVMManager::watch_events()`). Destroying it cancels the call.
class EventStream {
 public:
  virtual ~EventStream() = default;
  // next blocks until the next event; at the end it returns why (CANCELLED
  // when the stream ended: without follow, after the last kept event; or
  // after cancel(); OUT_OF_RANGE when the events after the requested id
  // were dropped by the daemon's retention).
  virtual absl::StatusOr<v1::Event> next() = 0;
  virtual void cancel() = 0;  // Thread-safe, idempotent.
};

// What SmolVMManager::watch_events reads (WatchEventsRequest).
struct EventWatchOptions {
  // The last event already handled; 0 = from the oldest the daemon keeps.
  int64_t after_event_id = 0;
  // Keep the stream open for new events (until cancel()).
  bool follow = false;
  // Only events of this VM / snapshot ("" = any), of these kinds (none = all).
  std::string vm_id;
  std::string snapshot_id;
  std::vector<v1::EventKind> kinds;
};

// ProcessConnection is a running ConnectProcess call
// (`SmolVM::connect_process()`). Destroying it detaches.
class ProcessConnection {
 public:
  virtual ~ProcessConnection() = default;
  // next blocks until the next output chunk or the exit (a response whose
  // `exit` is set, the last); after it, or after cancel(), the status the
  // call ended with (CANCELLED after cancel()).
  virtual absl::StatusOr<v1::ConnectProcessResponse> next() = 0;
  // cancel detaches; a next() blocked in another thread returns.
  // Thread-safe, idempotent.
  virtual void cancel() = 0;
};

// ExecSession is a running ExecStream call (`SmolVM::exec_session()`).
// Destroying it before the exit cancels the call, which kills the command.
//
// Thread-safety: next() may be called from one thread while the writers
// (write_stdin, close_stdin, signal, resize) are called from another; the
// writers serialize among themselves (a signal waits behind stdin the
// command has not taken). cancel() is callable from any thread.
//
// Read the output while writing stdin: output nobody reads holds the
// command back (and, past a few MiB, the VM's other guest calls, as with
// exec()), so a command that answers its input would never take more of it
// and write_stdin would wait for good.
class ExecSession {
 public:
  virtual ~ExecSession() = default;
  // next blocks until the next output chunk or the exit (a response whose
  // `exit` is set, the last); after it, the status the call ended with
  // (CANCELLED after cancel() or a clean end).
  virtual absl::StatusOr<v1::ExecResponse> next() = 0;
  // write_stdin sends data to the command's stdin (split into 1 MiB
  // messages). It blocks while the daemon holds back (the command is not
  // reading). FAILED_PRECONDITION after close_stdin(); the call's status if
  // it ended.
  virtual absl::Status write_stdin(absl::string_view data) = 0;
  // close_stdin ends stdin (with a tty: sends the terminal's ^D once).
  // Idempotent.
  virtual absl::Status close_stdin() = 0;
  // signal sends `signal` (1-64) to the command's process group (with a
  // tty: the terminal's foreground process group).
  virtual absl::Status signal(int signal) = 0;
  // resize sets the terminal's size (tty only; the guest's foreground
  // process group gets SIGWINCH).
  virtual absl::Status resize(uint32_t rows, uint32_t cols) = 0;
  // cancel ends the call (and kills the command); a next() blocked in
  // another thread returns. Thread-safe, idempotent.
  virtual void cancel() = 0;
};

// ForkOutcome is what became of one clone of `SmolVMManager::fork_snapshot()`.
struct ForkOutcome {
  // The clone's id (set whether or not it succeeded).
  std::string vm_id;
  // The clone as the daemon returned it, or why it failed (the daemon's
  // error_code and error_message as an absl::Status).
  absl::StatusOr<v1::Vm> vm;

  bool ok() const { return vm.ok(); }
};

// What `SmolVM::fork()` made: the snapshot and one outcome per child.
struct SmolVM::ForkVmResult {
  std::string snapshot_id;
  std::vector<ForkOutcome> children;
};

// ListFilter narrows `SmolVMManager::list_vms()` / `list_snapshots()`: every
// set part must match.
struct ListFilter {
  // Every one of these labels (VMConfig.labels; a snapshot's own labels).
  std::map<std::string, std::string> labels;
  // Any of these statuses (VMs only); empty = any.
  std::vector<v1::VmStatus> statuses;
  // The image as given at create time ("minimal" also matches
  // "minimal:latest") or its digest; "" = any.
  std::string image;
};

// SmolVMManager lists and looks up VMs and snapshots, deletes snapshots, and
// forks VMs from a snapshot.
//
// Construction sends nothing. Each method is one RPC, except that the list
// methods follow next_page_token until the last page and return everything.
//
// Thread-safety: thread-safe (it keeps no state besides the gRPC channel).
// Movable, not copyable.
class SmolVMManager {
 public:
  explicit SmolVMManager(ClientOptions options = {});

  // list_snapshots returns all snapshots ordered by snapshot_id, or only
  // those taken from `vm_id` when non-empty.
  absl::StatusOr<std::vector<v1::SnapshotInfo>> list_snapshots(
      const std::string& vm_id = "", const ListFilter& filter = {}) const;
  // get_snapshot returns snapshot `id`; NOT_FOUND if there is none.
  absl::StatusOr<v1::SnapshotInfo> get_snapshot(const std::string& id) const;
  // delete_snapshot removes snapshot `id` (DeleteSnapshot); NOT_FOUND if
  // there is none.
  absl::Status delete_snapshot(const std::string& id) const;
  // verify_snapshot reads every file of snapshot `id` and compares it with
  // the checksum recorded when it was taken (VerifySnapshot). DATA_LOSS,
  // naming the first bad file, if one differs; a snapshot taken before
  // checksums existed comes back with legacy() set and ok() false.
  absl::StatusOr<v1::VerifySnapshotResponse> verify_snapshot(
      const std::string& id) const;
  // list_vms returns all VMs ordered by vm_id.
  absl::StatusOr<std::vector<v1::Vm>> list_vms(const ListFilter& filter = {}) const;
  // get_vm returns VM `id`; NOT_FOUND if there is none.
  absl::StatusOr<v1::Vm> get_vm(const std::string& id) const;

  // fork_snapshot restores `count` (1-128) independent clones of
  // `snapshot_id` in one call (ForkSnapshot), each with a fresh identity
  // (vm_id, TAP, IP, MAC), RUNNING when `resume_vm`, else PAUSED. They are
  // named <vm_id_prefix>-<n> ("" = <snapshot_id>-fork). The call fails only
  // for a bad request (no such snapshot, count out of range, ...); otherwise
  // it returns one outcome per clone, in the daemon's order, each OK or with
  // its own error. Attach to a clone with `SmolVM::attach(outcome.vm_id)`.
  absl::StatusOr<std::vector<ForkOutcome>> fork_snapshot(
      const std::string& snapshot_id, uint32_t count, bool resume_vm = true,
      const std::string& vm_id_prefix = "", const ProgressCallback& on_progress = {}) const;

  // get_operation returns the state of operation `id` (OperationService): a
  // call made with that operation_id, running or recently finished.
  absl::StatusOr<v1::Operation> get_operation(const std::string& id) const;

  // --- Events (EventService) ----------------------------------------------

  // watch_events streams the caller's events (an admin's: every tenant's)
  // after `options.after_event_id`, oldest first (WatchEvents). Remember
  // the last event_id handled and pass it again to resume, also after a
  // daemon restart.
  absl::StatusOr<std::unique_ptr<EventStream>> watch_events(
      const EventWatchOptions& options = {}) const;

  // --- Warm pools (PoolService) -------------------------------------------

  // create_pool keeps `size` (1-64) clones of the caller's snapshot
  // `snapshot_id` restored and paused, ready for `SmolVM::from_pool(pool_id)`
  // to claim in milliseconds; it returns at once and the pool fills in the
  // background (see v1::Pool::ready_vm_ids).
  absl::StatusOr<v1::Pool> create_pool(const std::string& pool_id,
                                       const std::string& snapshot_id,
                                       uint32_t size) const;
  absl::StatusOr<v1::Pool> get_pool(const std::string& pool_id) const;
  // wait_for_pool polls the pool (GetPool, every 200 ms) until all `size`
  // members are ready and returns it then; DEADLINE_EXCEEDED (with the
  // pool's last refill error, if any) when `timeout` passes first.
  // `on_progress` sees the fill as an Operation of kind "CreatePool": done
  // of total "members" ready.
  absl::StatusOr<v1::Pool> wait_for_pool(const std::string& pool_id, absl::Duration timeout,
                                         const ProgressCallback& on_progress = {}) const;
  absl::StatusOr<std::vector<v1::Pool>> list_pools() const;
  // delete_pool removes the pool and its unclaimed members; claimed VMs stay.
  absl::Status delete_pool(const std::string& pool_id) const;

  // --- Images (ImageService) ----------------------------------------------

  // What build_image returns: the image and, when the request asked for a
  // warm start (BuildImageRequest.warm), its snapshot, ready for
  // SmolVM::from_snapshot and fork_snapshot.
  struct BuiltImage {
    v1::Image image;
    std::optional<v1::SnapshotInfo> warm_snapshot;
  };
  // build_image builds and names an image (BuildImage) and returns it once
  // done; `on_progress` (may be empty) sees each progress event. Builds are
  // long (a Debian image takes a minute or more the first time); the
  // deadline is ClientOptions::timeout. When it passes the daemon stops the
  // build and registers nothing.
  absl::StatusOr<BuiltImage> build_image(
      const v1::BuildImageRequest& request,
      const std::function<void(const v1::BuildProgress&)>& on_progress = {}) const;
  // list_images returns the images this caller can use, oldest first.
  absl::StatusOr<std::vector<v1::Image>> list_images() const;
  // get_image returns the image a name ("debian-python", "x:v2") or digest
  // names; NOT_FOUND if none.
  absl::StatusOr<v1::Image> get_image(const std::string& image) const;
  // delete_image removes a name (and the image with its last name), or by
  // digest the image; FAILED_PRECONDITION naming its users while VMs or
  // snapshots use it. Returns whether the image itself was deleted.
  absl::StatusOr<bool> delete_image(const std::string& image) const;
  // tag_image adds the name `name` to an image.
  absl::StatusOr<v1::Image> tag_image(const std::string& image, const std::string& name) const;

  // connection gives access to the underlying RPCs.
  const Connection& connection() const { return connection_; }

 private:
  Connection connection_;
};

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_SMOLVM_H_
