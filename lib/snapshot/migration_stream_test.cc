#include "lib/snapshot/migration_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::snapshot {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

constexpr uint64_t kPage = kMigrationPageBytes;
constexpr uint64_t kRamBytes = 16 * kPage;
constexpr uint32_t kRamSection = 2;

// Builds streams the way QEMU 7.2 writes them (see migration_stream.h).
class StreamWriter {
 public:
  StreamWriter& U8(uint8_t v) {
    data.push_back(static_cast<char>(v));
    return *this;
  }
  StreamWriter& Be32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) U8(static_cast<uint8_t>(v >> s));
    return *this;
  }
  StreamWriter& Be64(uint64_t v) {
    Be32(static_cast<uint32_t>(v >> 32));
    return Be32(static_cast<uint32_t>(v));
  }
  StreamWriter& Bytes(const std::string& s) {
    data += s;
    return *this;
  }
  StreamWriter& Name(const std::string& s) {
    U8(static_cast<uint8_t>(s.size()));
    return Bytes(s);
  }

  // Header and configuration (machine name, capabilities subsection).
  StreamWriter& Header(bool ignore_shared = true) {
    Be32(0x5145564d).Be32(3).U8(0x07).Be32(10).Bytes("pc-q35-7.2");
    if (ignore_shared) {
      U8(0x05).Name("configuration/capabilities").Be32(1).Be32(1).Name("x-ignore-shared");
    }
    return *this;
  }
  StreamWriter& Start(uint32_t id = kRamSection) {
    return U8(0x01).Be32(id).Name("ram").Be32(0).Be32(4);
  }
  StreamWriter& Part(uint32_t id = kRamSection) { return U8(0x02).Be32(id); }
  StreamWriter& End(uint32_t id = kRamSection) { return U8(0x03).Be32(id); }
  StreamWriter& Footer(uint32_t id = kRamSection) { return U8(0x7e).Be32(id); }
  StreamWriter& Eos() { return Be64(0x10); }
  StreamWriter& BlockList(const std::vector<std::pair<std::string, uint64_t>>& blocks) {
    uint64_t total = 0;
    for (const auto& b : blocks) total += b.second;
    Be64(total | 0x04);
    uint64_t addr = 0;
    for (const auto& b : blocks) {
      Name(b.first).Be64(b.second).Be64(addr);
      addr += b.second;
    }
    return *this;
  }
  // A page record; an empty `block` continues the last one.
  StreamWriter& Page(const std::string& block, uint64_t offset, char fill) {
    Record(block, offset, 0x08);
    return Bytes(std::string(kPage, fill));
  }
  StreamWriter& Zero(const std::string& block, uint64_t offset) {
    Record(block, offset, 0x02);
    return U8(0);
  }
  StreamWriter& Record(const std::string& block, uint64_t offset, uint64_t flags) {
    Be64(offset | flags | (block.empty() ? 0x20 : 0));
    if (!block.empty()) Name(block);
    return *this;
  }
  // Device sections after the RAM section, the EOF and a JSON description.
  StreamWriter& Devices() {
    U8(0x04).Be32(3).Name("timer").Be32(0).Be32(2).Be64(12345).Footer(3);
    U8(0x04).Be32(4).Name("cpu_common").Be32(0).Be32(1).Bytes("\x01\x02\x03").Footer(4);
    U8(0x00);
    std::string json = R"({"page_size":4096,"devices":[]})";
    return U8(0x06).Be32(static_cast<uint32_t>(json.size())).Bytes(json);
  }

  std::string data;
};

const std::vector<std::pair<std::string, uint64_t>> kBlocks = {
    {"pc.bios", 4 * kPage}, {"ram", kRamBytes}, {"pc.rom", 2 * kPage}};

// A stream as a restored VM's save has it, and what the split must give:
// the same without the pages of "ram".
std::pair<std::string, std::string> SampleStreams() {
  StreamWriter in, want;
  for (StreamWriter* w : {&in, &want}) w->Header().Start().BlockList(kBlocks).Eos().Footer();
  in.Part().Page("pc.bios", 0, 'b').Zero("", kPage).Page("ram", 0, 'r').Zero("", kPage)
      .Page("", 3 * kPage, 's').Page("", 4 * kPage, 't').Zero("pc.rom", 0)
      .Page("ram", 15 * kPage, 'z').Eos().Footer();
  want.Part().Page("pc.bios", 0, 'b').Zero("", kPage).Zero("pc.rom", 0).Eos().Footer();
  in.Part().Page("", 7 * kPage, 'p').Page("pc.rom", kPage, 'o').Eos().Footer();
  want.Part().Page("pc.rom", kPage, 'o').Eos().Footer();
  in.End().Page("ram", 8 * kPage, 'e').Eos().Footer().Devices();
  want.End().Eos().Footer().Devices();
  return {in.data, want.data};
}

class MigrationStreamTest : public ::testing::Test {
 protected:
  void SetUp() override { ResetMem(); }
  std::string Path(const std::string& name) { return temp_.Join(name); }
  void ResetMem() {
    (void)unlink(Path("mem.bin").c_str());
    int fd = open(Path("mem.bin").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, kRamBytes), 0);
    close(fd);
  }
  void WriteIn(const std::string& data) {
    int fd = open(Path("in.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    close(fd);
  }
  absl::StatusOr<RamSplitStats> Split(const std::string& data, uint64_t ram_bytes = kRamBytes,
                                      const std::string& block = "ram") {
    WriteIn(data);
    return SplitRamBlock(Path("in.bin"), block, ram_bytes, Path("out.bin"), Path("mem.bin"));
  }
  std::string Mem() { return *ReadFileToString(Path("mem.bin"), 1 << 20); }
  // After a failed split: no new stream, and mem.bin all zeros again.
  void ExpectCleanedUp() {
    EXPECT_FALSE(PathExists(Path("out.bin")));
    EXPECT_EQ(Mem(), std::string(kRamBytes, '\0'));
  }

  smolvm_testing::TempDir temp_;
};

TEST_F(MigrationStreamTest, MovesTheBlocksPagesToMemAndKeepsTheRest) {
  auto [in, want] = SampleStreams();
  auto stats = Split(in);
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(*ReadFileToString(Path("out.bin"), 1 << 20), want);
  EXPECT_EQ(stats->pages_written, 6u);
  EXPECT_EQ(stats->zero_pages, 1u);
  EXPECT_EQ(stats->kept_pages, 4u);
  EXPECT_EQ(stats->bytes_in, in.size());
  EXPECT_EQ(stats->bytes_out, want.size());
  std::string mem = Mem();
  ASSERT_EQ(mem.size(), kRamBytes);
  std::string expected(kRamBytes, '\0');
  for (auto [page, fill] : std::vector<std::pair<int, char>>{
           {0, 'r'}, {3, 's'}, {4, 't'}, {7, 'p'}, {8, 'e'}, {15, 'z'}}) {
    expected.replace(page * kPage, kPage, std::string(kPage, fill));
  }
  EXPECT_EQ(mem, expected);
  // Zero pages stay holes: mem.bin is sparse.
  auto allocated = AllocatedBytes(Path("mem.bin"));
  ASSERT_TRUE(allocated.ok());
  EXPECT_LE(*allocated, 8 * kPage);
}

TEST_F(MigrationStreamTest, ALaterZeroPageClearsAnEarlierFullOne) {
  StreamWriter w;
  w.Header().Start().BlockList(kBlocks).Eos().Footer();
  w.Part().Page("ram", 2 * kPage, 'x').Page("", 3 * kPage, 'y').Eos().Footer();
  w.End().Zero("ram", 2 * kPage).Eos().Footer().Devices();
  ASSERT_THAT(Split(w.data).status(), IsOk());
  std::string expected(kRamBytes, '\0');
  expected.replace(3 * kPage, kPage, std::string(kPage, 'y'));
  EXPECT_EQ(Mem(), expected);
}

// Adjacent pages are written in runs of up to 1 MiB: more than one run.
TEST_F(MigrationStreamTest, LongRunsOfAdjacentPages) {
  constexpr uint64_t kPages = 600;
  int fd = open(Path("big.bin").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, kPages * kPage), 0);
  close(fd);
  StreamWriter w;
  w.Header().Start().BlockList({{"ram", kPages * kPage}}).Eos().Footer().Part();
  std::string expected;
  for (uint64_t i = 0; i < kPages; ++i) {
    const char fill = static_cast<char>('A' + i % 50);
    w.Page(i == 0 ? "ram" : "", i * kPage, fill);
    expected += std::string(kPage, fill);
  }
  w.Eos().Footer().End().Eos().Footer().Devices();
  WriteIn(w.data);
  auto stats = SplitRamBlock(Path("in.bin"), "ram", kPages * kPage, Path("out.bin"),
                             Path("big.bin"));
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(stats->pages_written, kPages);
  EXPECT_EQ(*ReadFileToString(Path("big.bin"), 4 << 20), expected);
}

// Cut at every byte of the first and last 300 of the RAM section, and at
// every 61st in between.
TEST_F(MigrationStreamTest, TruncationsAreErrorsAndCleanUp) {
  auto [in, want] = SampleStreams();
  // The tail after the RAM section is copied, not parsed: cut before it.
  const size_t ram_end = in.find(std::string("\x04\x00\x00\x00\x03", 5));
  ASSERT_NE(ram_end, std::string::npos);
  for (size_t len = 0; len <= ram_end; len += (len < 300 || ram_end - len < 300 ? 1 : 61)) {
    SCOPED_TRACE(len);
    ResetMem();
    auto stats = Split(in.substr(0, len));
    EXPECT_THAT(stats.status(), StatusIs(absl::StatusCode::kDataLoss));
    ExpectCleanedUp();
  }
}

TEST_F(MigrationStreamTest, RejectsCompressedXbzrleHookAndMultifdRecords) {
  for (uint64_t flags : {0x01u, 0x40u, 0x80u, 0x100u, 0x200u, 0x08u | 0x02u, 0x04u | 0x20u}) {
    SCOPED_TRACE(flags);
    ResetMem();
    StreamWriter w;
    w.Header().Start().BlockList(kBlocks).Eos().Footer();
    w.Part().Page("ram", 0, 'a').Record("", kPage, flags).Bytes(std::string(kPage, 'q'));
    EXPECT_FALSE(Split(w.data).ok());
    ExpectCleanedUp();
  }
  StreamWriter w;
  w.Header().Start().BlockList(kBlocks).Eos().Footer();
  w.End().Record("ram", 0, 0x40).Bytes(std::string(64, 'q'));
  EXPECT_THAT(Split(w.data).status(), StatusIs(absl::StatusCode::kUnimplemented));
}

TEST_F(MigrationStreamTest, RejectsPagesBeyondTheirBlock) {
  for (auto [block, offset] : std::vector<std::pair<std::string, uint64_t>>{
           {"ram", kRamBytes}, {"ram", ~uint64_t{0} << 12}, {"pc.rom", 2 * kPage}}) {
    SCOPED_TRACE(block);
    ResetMem();
    StreamWriter w;
    w.Header().Start().BlockList(kBlocks).Eos().Footer();
    w.End().Page(block, offset, 'a').Eos().Footer().Devices();
    EXPECT_THAT(Split(w.data).status(), StatusIs(absl::StatusCode::kDataLoss));
    ExpectCleanedUp();
  }
}

TEST_F(MigrationStreamTest, RejectsStreamsItCannotSplit) {
  auto stream = [](auto edit) {
    StreamWriter w;
    edit(w);
    return w.data;
  };
  struct Case {
    const char* name;
    std::string data;
    absl::StatusCode code;
  };
  std::vector<Case> cases = {
      {"bad magic", "QEVX\0\0\0\3", absl::StatusCode::kDataLoss},
      {"no x-ignore-shared", stream([](StreamWriter& w) {
         w.Header(false).Start().BlockList(kBlocks).Eos().Footer().End().Eos().Footer().Devices();
       }), absl::StatusCode::kUnimplemented},
      {"block not listed", stream([](StreamWriter& w) {
         w.Header().Start().BlockList({{"pc.ram", kRamBytes}}).Eos().Footer();
       }), absl::StatusCode::kNotFound},
      {"block of another size", stream([](StreamWriter& w) {
         w.Header().Start().BlockList({{"ram", 2 * kRamBytes}}).Eos().Footer();
       }), absl::StatusCode::kInvalidArgument},
      {"continue without a block", stream([](StreamWriter& w) {
         w.Header().Start().BlockList(kBlocks).Eos().Footer().End().Page("", 0, 'a');
       }), absl::StatusCode::kDataLoss},
      {"page of an unlisted block", stream([](StreamWriter& w) {
         w.Header().Start().BlockList(kBlocks).Eos().Footer().End().Page("vga.vram", 0, 'a');
       }), absl::StatusCode::kDataLoss},
      {"another section first", stream([](StreamWriter& w) {
         w.Header().U8(0x01).Be32(1).Name("block").Be32(0).Be32(1);
       }), absl::StatusCode::kUnimplemented},
      {"device section before ram ends", stream([](StreamWriter& w) {
         w.Header().Start().BlockList(kBlocks).Eos().Footer().Devices();
       }), absl::StatusCode::kUnimplemented},
      {"missing footer", stream([](StreamWriter& w) {
         w.Header().Start().BlockList(kBlocks).Eos().End().Eos().Footer().Devices();
       }), absl::StatusCode::kDataLoss},
      {"blocks overrun the total", stream([](StreamWriter& w) {
         w.Header().Start().Be64(kRamBytes | 0x04).Name("ram").Be64(2 * kRamBytes).Be64(0);
       }), absl::StatusCode::kDataLoss},
      {"block listed twice", stream([](StreamWriter& w) {
         w.Header().Start().BlockList({{"ram", kRamBytes}, {"ram", kRamBytes}});
       }), absl::StatusCode::kDataLoss},
      {"no block list", stream([](StreamWriter& w) {
         w.Header().Start().Page("ram", 0, 'a');
       }), absl::StatusCode::kDataLoss},
      {"nothing after ram", stream([](StreamWriter& w) {
         w.Header().Start().BlockList(kBlocks).Eos().Footer().End().Eos().Footer();
       }), absl::StatusCode::kDataLoss},
      {"unknown subsection", stream([](StreamWriter& w) {
         w.Header().U8(0x05).Name("configuration/new").Be32(1).Start();
       }), absl::StatusCode::kUnimplemented},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ResetMem();
    EXPECT_THAT(Split(c.data).status(), StatusIs(c.code));
    ExpectCleanedUp();
  }
}

TEST_F(MigrationStreamTest, RejectsBadArguments) {
  auto [in, want] = SampleStreams();
  EXPECT_THAT(Split(in, kRamBytes + 1).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Split(in, 0).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Split(in, kRamBytes, "").status(), StatusIs(absl::StatusCode::kInvalidArgument));
  // mem.bin of another size than the RAM.
  EXPECT_THAT(Split(in, 2 * kRamBytes).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SplitRamBlock(Path("missing"), "ram", kRamBytes, Path("out.bin"), Path("mem.bin"))
                  .status(),
              StatusIs(absl::StatusCode::kNotFound));
}

// Every single-byte corruption of a valid stream: an error or a split,
// never a crash (the sanitizers and the fuzz target check the rest), and a
// failure always cleans up.
TEST_F(MigrationStreamTest, SurvivesEveryByteFlip) {
  auto [in, want] = SampleStreams();
  for (size_t i = 0; i < in.size(); i += (i < 200 ? 1 : 97)) {
    std::string bad = in;
    bad[i] = static_cast<char>(bad[i] ^ 0xa5);
    ResetMem();
    auto stats = Split(bad);
    if (!stats.ok()) ExpectCleanedUp();
  }
}

}  // namespace
}  // namespace smolvm::snapshot
