#include "lib/snapshot/migration_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"
#include "lib/base/unique_fd.h"

namespace smolvm::snapshot {
namespace {

// migration/savevm.c
constexpr uint32_t kFileMagic = 0x5145564d;  // QEMU_VM_FILE_MAGIC "QEVM"
constexpr uint32_t kFileVersion = 3;         // QEMU_VM_FILE_VERSION
constexpr uint8_t kSectionStart = 0x01;      // QEMU_VM_SECTION_START
constexpr uint8_t kSectionPart = 0x02;       // QEMU_VM_SECTION_PART
constexpr uint8_t kSectionEnd = 0x03;        // QEMU_VM_SECTION_END
constexpr uint8_t kSubsection = 0x05;        // QEMU_VM_SUBSECTION
constexpr uint8_t kConfiguration = 0x07;     // QEMU_VM_CONFIGURATION
constexpr uint8_t kSectionFooter = 0x7e;     // QEMU_VM_SECTION_FOOTER
// migration/ram.c
constexpr uint64_t kFlagZero = 0x02;      // RAM_SAVE_FLAG_ZERO
constexpr uint64_t kFlagMemSize = 0x04;   // RAM_SAVE_FLAG_MEM_SIZE
constexpr uint64_t kFlagPage = 0x08;      // RAM_SAVE_FLAG_PAGE
constexpr uint64_t kFlagEos = 0x10;       // RAM_SAVE_FLAG_EOS
constexpr uint64_t kFlagContinue = 0x20;  // RAM_SAVE_FLAG_CONTINUE
constexpr uint32_t kRamSectionVersion = 4;  // register_savevm_live("ram", 0, 4, ...)
constexpr uint64_t kPage = kMigrationPageBytes;
constexpr uint64_t kFlagMask = kPage - 1;  // ~TARGET_PAGE_MASK

// Limits far above what QEMU writes, so hostile input cannot make this
// allocate or loop much.
constexpr size_t kMaxBlocks = 1024;
constexpr uint32_t kMaxCapabilities = 256;
constexpr uint32_t kMaxMachineName = 256;
constexpr uint64_t kMaxRamBytes = uint64_t{1} << 40;
constexpr size_t kReadBuffer = size_t{1} << 20;
constexpr size_t kMinReadBuffer = 2 * kPage;  // A page record fits.
constexpr size_t kWriteBuffer = size_t{1} << 20;
constexpr size_t kMaxRun = size_t{1} << 20;  // Adjacent pages per pwrite.

absl::Status Truncated(uint64_t offset) {
  return absl::DataLossError(
      absl::StrCat("migration stream truncated at byte ", offset));
}

// Buffered, bounds-checked reads of the input. Every byte consumed is also
// appended to `record` (the current record, kept or dropped by the parser)
// unless read with ReadInto.
class Reader {
 public:
  // `buffer_bytes` (>= one page and its header) bounds each read.
  Reader(int fd, size_t buffer_bytes) : fd_(fd), buf_(buffer_bytes) {}

  uint64_t offset() const { return consumed_; }
  std::string record;

  absl::StatusOr<uint8_t> U8() {
    SMOLVM_RETURN_IF_ERROR(Fill(1));
    return Take(1)[0];
  }
  absl::StatusOr<uint32_t> Be32() {
    SMOLVM_RETURN_IF_ERROR(Fill(4));
    const uint8_t* p = Take(4);
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  }
  absl::StatusOr<uint64_t> Be64() {
    SMOLVM_ASSIGN_OR_RETURN(uint64_t hi, Be32());
    SMOLVM_ASSIGN_OR_RETURN(uint64_t lo, Be32());
    return (hi << 32) | lo;
  }
  // A u8-length-prefixed string (idstrs, names); empty is malformed.
  absl::StatusOr<std::string> Name(const char* what) {
    SMOLVM_ASSIGN_OR_RETURN(uint8_t len, U8());
    if (len == 0) {
      return absl::DataLossError(absl::StrCat("migration stream: empty ", what, " at byte ",
                                              consumed_ - 1));
    }
    return Text(len);
  }
  absl::StatusOr<std::string> Text(size_t n) {
    SMOLVM_RETURN_IF_ERROR(Fill(n));
    const uint8_t* p = Take(n);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  absl::Status Skip(size_t n) { return Text(n).status(); }
  // `n` bytes into `dst`, not added to `record`.
  absl::Status ReadInto(uint8_t* dst, size_t n) {
    SMOLVM_RETURN_IF_ERROR(Fill(n));
    std::memcpy(dst, buf_.data() + pos_, n);
    pos_ += n;
    consumed_ += n;
    return absl::OkStatus();
  }
  // What is buffered and not consumed yet (for the verbatim tail).
  std::string_view Buffered() const {
    return {reinterpret_cast<const char*>(buf_.data() + pos_), end_ - pos_};
  }

 private:
  // At least `n` (<= the buffer) bytes buffered, or DATA_LOSS at EOF.
  absl::Status Fill(size_t n) {
    if (end_ - pos_ >= n) return absl::OkStatus();
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
    while (end_ < n) {
      ssize_t got = read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::ErrnoToStatus(errno, "read the migration stream");
      if (got == 0) return Truncated(consumed_ + end_);
      end_ += static_cast<size_t>(got);
    }
    return absl::OkStatus();
  }
  const uint8_t* Take(size_t n) {
    const uint8_t* p = buf_.data() + pos_;
    record.append(reinterpret_cast<const char*>(p), n);
    pos_ += n;
    consumed_ += n;
    return p;
  }

  int fd_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
  size_t end_ = 0;
  uint64_t consumed_ = 0;
};

absl::Status WriteAll(int fd, const char* data, size_t n, const char* what) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return absl::ErrnoToStatus(errno, absl::StrCat("write ", what));
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, const uint8_t* data, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = pwrite(fd, data, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return absl::ErrnoToStatus(errno, "write guest RAM to mem.bin");
    data += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

// Buffered writes of the new stream.
class Writer {
 public:
  explicit Writer(int fd) : fd_(fd) { buf_.reserve(kWriteBuffer); }
  uint64_t written() const { return written_; }
  absl::Status Write(std::string_view data) {
    written_ += data.size();
    if (buf_.size() + data.size() > kWriteBuffer) {
      SMOLVM_RETURN_IF_ERROR(Flush());
      if (data.size() >= kWriteBuffer) {
        return WriteAll(fd_, data.data(), data.size(), "the new migration stream");
      }
    }
    buf_.append(data);
    return absl::OkStatus();
  }
  absl::Status Flush() {
    SMOLVM_RETURN_IF_ERROR(WriteAll(fd_, buf_.data(), buf_.size(), "the new migration stream"));
    buf_.clear();
    return absl::OkStatus();
  }

 private:
  int fd_;
  std::string buf_;
  uint64_t written_ = 0;
};

// Pages of the split block, written to mem.bin in runs of adjacent pages.
class MemWriter {
 public:
  MemWriter(int fd, uint64_t ram_bytes) : fd_(fd), written_(ram_bytes / kPage, false) {}

  // Reads a page at `offset` from `in` straight into the current run.
  absl::Status Page(Reader& in, uint64_t offset) {
    if (run_len_ == 0 || offset != run_start_ + run_len_ || run_len_ == kMaxRun) {
      SMOLVM_RETURN_IF_ERROR(Flush());
      run_start_ = offset;
    }
    if (run_.size() < run_len_ + kPage) run_.resize(run_len_ + kPage);  // Grows to kMaxRun.
    SMOLVM_RETURN_IF_ERROR(in.ReadInto(run_.data() + run_len_, kPage));
    run_len_ += kPage;
    written_[offset / kPage] = true;
    return absl::OkStatus();
  }
  // A page QEMU found to be all `fill` bytes (always 0 in 7.2's streams).
  absl::Status Fill(uint64_t offset, uint8_t fill) {
    const bool was_written = written_[offset / kPage];
    if (fill == 0 && !was_written) return absl::OkStatus();  // Already a hole.
    SMOLVM_RETURN_IF_ERROR(Flush());
    if (fill == 0 &&
        fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(kPage)) == 0) {
      written_[offset / kPage] = false;
      return absl::OkStatus();
    }
    std::vector<uint8_t> page(kPage, fill);
    SMOLVM_RETURN_IF_ERROR(PwriteAll(fd_, page.data(), kPage, offset));
    written_[offset / kPage] = true;
    return absl::OkStatus();
  }
  absl::Status Flush() {
    if (run_len_ > 0) SMOLVM_RETURN_IF_ERROR(PwriteAll(fd_, run_.data(), run_len_, run_start_));
    run_len_ = 0;
    return absl::OkStatus();
  }

 private:
  int fd_;
  std::vector<bool> written_;
  std::vector<uint8_t> run_;
  uint64_t run_start_ = 0;
  size_t run_len_ = 0;
};

class Splitter {
 public:
  Splitter(int in_fd, size_t read_buffer, int out_fd, int mem_fd, const std::string& block_id,
           uint64_t ram_bytes)
      : in_(in_fd, read_buffer),
        read_buffer_(read_buffer),
        out_(out_fd),
        mem_(mem_fd, ram_bytes),
        in_fd_(in_fd),
        block_id_(block_id),
        ram_bytes_(ram_bytes) {}

  absl::StatusOr<RamSplitStats> Run() {
    SMOLVM_RETURN_IF_ERROR(Header());
    while (!ram_done_) SMOLVM_RETURN_IF_ERROR(Section());
    SMOLVM_RETURN_IF_ERROR(mem_.Flush());
    SMOLVM_RETURN_IF_ERROR(CopyRest());
    SMOLVM_RETURN_IF_ERROR(out_.Flush());
    stats_.bytes_out = out_.written();
    return stats_;
  }

 private:
  absl::Status Malformed(const std::string& what) const {
    return absl::DataLossError(
        absl::StrCat("migration stream: ", what, " (byte ", in_.offset(), ")"));
  }
  absl::Status Unsupported(const std::string& what) const {
    return absl::UnimplementedError(
        absl::StrCat("migration stream: ", what, " (byte ", in_.offset(), ")"));
  }
  // Copies what was read since the last Keep/Drop to the new stream.
  absl::Status Keep() {
    SMOLVM_RETURN_IF_ERROR(out_.Write(in_.record));
    in_.record.clear();
    return absl::OkStatus();
  }
  void Drop() { in_.record.clear(); }

  // File header and QEMU_VM_CONFIGURATION (qemu_savevm_state_header,
  // vmstate_configuration and its subsections).
  absl::Status Header() {
    SMOLVM_ASSIGN_OR_RETURN(uint32_t magic, in_.Be32());
    if (magic != kFileMagic) return Malformed("not a QEMU migration stream (bad magic)");
    SMOLVM_ASSIGN_OR_RETURN(uint32_t version, in_.Be32());
    if (version != kFileVersion) {
      return Unsupported(absl::StrCat("stream version ", version, ", expected 3"));
    }
    SMOLVM_ASSIGN_OR_RETURN(uint8_t type, in_.U8());
    if (type != kConfiguration) return Unsupported("no configuration section");
    SMOLVM_ASSIGN_OR_RETURN(uint32_t name_len, in_.Be32());
    if (name_len == 0 || name_len > kMaxMachineName) {
      return Malformed(absl::StrCat("machine name of ", name_len, " bytes"));
    }
    SMOLVM_RETURN_IF_ERROR(in_.Skip(name_len));
    bool ignore_shared = false;
    // Subsections follow while the next byte says so; the first section
    // comes next, so its type byte is read here.
    while (true) {
      SMOLVM_ASSIGN_OR_RETURN(type, in_.U8());
      if (type != kSubsection) break;
      SMOLVM_ASSIGN_OR_RETURN(std::string name, in_.Name("subsection name"));
      SMOLVM_RETURN_IF_ERROR(in_.Be32().status());  // Subsection version.
      if (name == "configuration/capabilities") {
        SMOLVM_ASSIGN_OR_RETURN(uint32_t count, in_.Be32());
        if (count > kMaxCapabilities) return Malformed(absl::StrCat(count, " capabilities"));
        for (uint32_t i = 0; i < count; ++i) {
          SMOLVM_ASSIGN_OR_RETURN(std::string cap, in_.Name("capability"));
          if (cap == "x-ignore-shared") ignore_shared = true;
        }
      } else if (name == "configuration/target-page-bits") {
        SMOLVM_ASSIGN_OR_RETURN(uint32_t bits, in_.Be32());
        if (bits != 12) return Unsupported(absl::StrCat("target page bits ", bits));
      } else if (name == "configuration/uuid") {
        SMOLVM_RETURN_IF_ERROR(in_.Skip(16));
      } else {
        return Unsupported(absl::StrCat("configuration subsection \"", name, "\""));
      }
    }
    if (!ignore_shared) {
      // Without it the block list has no addresses, and the stream would
      // not load with the restore's x-ignore-shared.
      return Unsupported("saved without the x-ignore-shared capability");
    }
    // Kept with the first section's header, which starts with `type`.
    pending_type_ = type;
    return absl::OkStatus();
  }

  // One section up to and including its footer. Only the "ram" section
  // may come before the end of "ram" (anything else would need parsing).
  absl::Status Section() {
    uint8_t type;
    if (pending_type_ >= 0) {
      type = static_cast<uint8_t>(pending_type_);
      pending_type_ = -1;
    } else {
      SMOLVM_ASSIGN_OR_RETURN(type, in_.U8());
    }
    SMOLVM_ASSIGN_OR_RETURN(uint32_t id, in_.Be32());
    if (type == kSectionStart) {
      SMOLVM_ASSIGN_OR_RETURN(std::string idstr, in_.Name("section idstr"));
      SMOLVM_ASSIGN_OR_RETURN(uint32_t instance, in_.Be32());
      SMOLVM_ASSIGN_OR_RETURN(uint32_t version, in_.Be32());
      if (idstr != "ram") {
        return Unsupported(absl::StrCat("section \"", idstr, "\" before the RAM section ends"));
      }
      if (ram_started_) return Malformed("a second RAM section");
      if (instance != 0 || version != kRamSectionVersion) {
        return Unsupported(absl::StrCat("RAM section instance ", instance, " version ",
                                        version));
      }
      ram_started_ = true;
      ram_section_id_ = id;
    } else if (type == kSectionPart || type == kSectionEnd) {
      if (!ram_started_ || id != ram_section_id_) {
        return Unsupported(absl::StrCat("section ", id, " before the RAM section ends"));
      }
    } else {
      return Unsupported(absl::StrCat("section type ", type, " before the RAM section ends"));
    }
    SMOLVM_RETURN_IF_ERROR(Keep());
    SMOLVM_RETURN_IF_ERROR(RamRecords(/*setup=*/type == kSectionStart));
    SMOLVM_ASSIGN_OR_RETURN(uint8_t footer, in_.U8());
    SMOLVM_ASSIGN_OR_RETURN(uint32_t footer_id, in_.Be32());
    if (footer != kSectionFooter || footer_id != id) {
      return Malformed(absl::StrCat("section ", id, " has no footer"));
    }
    SMOLVM_RETURN_IF_ERROR(Keep());
    if (type == kSectionEnd) ram_done_ = true;
    return absl::OkStatus();
  }

  // The RAM block list (ram_save_setup; read as ram_load_precopy does).
  absl::Status BlockList(uint64_t total) {
    while (total > 0) {
      if (blocks_.size() == kMaxBlocks) return Malformed("too many RAM blocks");
      SMOLVM_ASSIGN_OR_RETURN(std::string idstr, in_.Name("RAM block idstr"));
      SMOLVM_ASSIGN_OR_RETURN(uint64_t length, in_.Be64());
      SMOLVM_RETURN_IF_ERROR(in_.Be64().status());  // mr->addr (x-ignore-shared).
      if (length > total) {
        return Malformed(absl::StrCat("RAM block \"", idstr, "\" overruns the total"));
      }
      if (!blocks_.emplace(idstr, length).second) {
        return Malformed(absl::StrCat("RAM block \"", idstr, "\" listed twice"));
      }
      total -= length;
    }
    auto it = blocks_.find(block_id_);
    if (it == blocks_.end()) {
      return absl::NotFoundError(
          absl::StrCat("migration stream: no RAM block \"", block_id_, "\""));
    }
    if (it->second != ram_bytes_) {
      return absl::InvalidArgumentError(
          absl::StrCat("migration stream: RAM block \"", block_id_, "\" has ", it->second,
                       " bytes, expected ", ram_bytes_));
    }
    return absl::OkStatus();
  }

  // Records up to EOS; the kept ones (and EOS) go to the new stream.
  absl::Status RamRecords(bool setup) {
    bool first = true;
    while (true) {
      SMOLVM_ASSIGN_OR_RETURN(uint64_t word, in_.Be64());
      const uint64_t flags = word & kFlagMask;
      const uint64_t addr = word & ~kFlagMask;
      const uint64_t kind = flags & ~kFlagContinue;
      if (kind == kFlagEos && flags == kFlagEos) {
        if (setup && first) return Malformed("RAM setup without a block list");
        return Keep();
      }
      if (kind == kFlagMemSize && flags == kFlagMemSize) {
        if (!setup || !first) return Malformed("RAM block list outside the setup");
        first = false;
        SMOLVM_RETURN_IF_ERROR(BlockList(addr));
        SMOLVM_RETURN_IF_ERROR(Keep());
        continue;
      }
      if (setup && first) return Malformed("RAM setup without a block list");
      first = false;
      if (kind != kFlagZero && kind != kFlagPage) {
        return Unsupported(absl::StrCat("RAM record flags 0x", absl::Hex(flags),
                                        " (compression, XBZRLE, RDMA or multifd)"));
      }
      if (!(flags & kFlagContinue)) {
        SMOLVM_ASSIGN_OR_RETURN(std::string idstr, in_.Name("RAM block idstr"));
        auto it = blocks_.find(idstr);
        if (it == blocks_.end()) {
          return Malformed(absl::StrCat("page of unlisted RAM block \"", idstr, "\""));
        }
        block_ = &*it;
      } else if (block_ == nullptr) {
        return Malformed("first page record continues no block");
      }
      if (addr >= block_->second) {
        return Malformed(absl::StrCat("page at ", addr, " beyond RAM block \"", block_->first,
                                      "\" of ", block_->second, " bytes"));
      }
      const bool split = block_->first == block_id_;
      if (kind == kFlagZero) {
        SMOLVM_ASSIGN_OR_RETURN(uint8_t fill, in_.U8());
        if (split) {
          Drop();
          SMOLVM_RETURN_IF_ERROR(mem_.Fill(addr, fill));
          ++stats_.zero_pages;
          continue;
        }
      } else if (split) {
        Drop();
        SMOLVM_RETURN_IF_ERROR(mem_.Page(in_, addr));
        ++stats_.pages_written;
        continue;
      } else {
        SMOLVM_RETURN_IF_ERROR(in_.Skip(kPage));
      }
      ++stats_.kept_pages;
      SMOLVM_RETURN_IF_ERROR(Keep());
    }
  }

  // Everything after the RAM section (device sections, EOF, the JSON
  // description), byte for byte.
  absl::Status CopyRest() {
    SMOLVM_RETURN_IF_ERROR(out_.Write(in_.Buffered()));
    SMOLVM_RETURN_IF_ERROR(out_.Flush());
    uint64_t total = in_.offset() + in_.Buffered().size();
    std::vector<char> buf(read_buffer_);
    while (true) {
      ssize_t got = read(in_fd_, buf.data(), buf.size());
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::ErrnoToStatus(errno, "read the migration stream");
      if (got == 0) break;
      SMOLVM_RETURN_IF_ERROR(out_.Write(std::string_view(buf.data(), got)));
      total += static_cast<uint64_t>(got);
    }
    if (total == in_.offset()) return Malformed("stream ends after the RAM section");
    stats_.bytes_in = total;
    return absl::OkStatus();
  }

  Reader in_;
  const size_t read_buffer_;
  Writer out_;
  MemWriter mem_;
  int in_fd_;
  const std::string& block_id_;
  const uint64_t ram_bytes_;
  std::map<std::string, uint64_t> blocks_;
  const std::pair<const std::string, uint64_t>* block_ = nullptr;
  int pending_type_ = -1;
  bool ram_started_ = false;
  bool ram_done_ = false;
  uint32_t ram_section_id_ = 0;
  RamSplitStats stats_;
};

}  // namespace

absl::StatusOr<RamSplitStats> SplitRamBlockFds(int in_fd, const std::string& ram_block_id,
                                               uint64_t ram_bytes, int out_fd, int mem_fd) {
  if (ram_block_id.empty() || ram_block_id.size() > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("split guest RAM: bad RAM block id \"", ram_block_id, "\""));
  }
  if (ram_bytes == 0 || ram_bytes % kPage != 0 || ram_bytes > kMaxRamBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("split guest RAM: RAM size ", ram_bytes, " is not a positive multiple of ",
                     kPage, " up to ", kMaxRamBytes));
  }
  // Large reads for large streams; small inputs (tests, fuzzing) get a
  // small buffer.
  size_t read_buffer = kReadBuffer;
  struct stat st;
  if (fstat(in_fd, &st) == 0 && S_ISREG(st.st_mode)) {
    read_buffer = std::clamp<uint64_t>(static_cast<uint64_t>(st.st_size), kMinReadBuffer,
                                       kReadBuffer);
  }
  Splitter splitter(in_fd, read_buffer, out_fd, mem_fd, ram_block_id, ram_bytes);
  return splitter.Run();
}

absl::StatusOr<RamSplitStats> SplitRamBlock(const std::string& vmstate_in,
                                            const std::string& ram_block_id,
                                            uint64_t ram_bytes,
                                            const std::string& vmstate_out,
                                            const std::string& mem_out) {
  UniqueFd in(open(vmstate_in.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", vmstate_in));
  UniqueFd mem(open(mem_out.c_str(), O_WRONLY | O_CLOEXEC));
  if (!mem.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", mem_out));
  struct stat st;
  if (fstat(mem.get(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("stat ", mem_out));
  }
  if (static_cast<uint64_t>(st.st_size) != ram_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("split guest RAM: ", mem_out, " has ",
                                                   st.st_size, " bytes, expected ", ram_bytes));
  }
  UniqueFd out(open(vmstate_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("create ", vmstate_out));
  auto stats = SplitRamBlockFds(in.get(), ram_block_id, ram_bytes, out.get(), mem.get());
  if (!stats.ok()) {
    // Back to what the caller had: no new stream, mem.bin all holes.
    (void)unlink(vmstate_out.c_str());
    if (ftruncate(mem.get(), 0) != 0 ||
        ftruncate(mem.get(), static_cast<off_t>(ram_bytes)) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("reset ", mem_out, " after: ",
                                                     stats.status().message()));
    }
  }
  return stats;
}

}  // namespace smolvm::snapshot
