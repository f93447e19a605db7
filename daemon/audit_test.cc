#include "daemon/audit.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace smolvm::daemon {
namespace {

using ::testing::HasSubstr;

TEST(AuditLineTest, Fields) {
  Caller caller{"alice", false, "uid:1001 gid:1001 pid:42"};
  std::string line = AuditLine(caller, "CreateVm", "vm-1", absl::OkStatus());
  auto json = nlohmann::json::parse(line);
  EXPECT_EQ(json["audit"], "smolvmd");
  EXPECT_EQ(json["method"], "CreateVm");
  EXPECT_EQ(json["identity"], "uid:1001 gid:1001 pid:42");
  EXPECT_EQ(json["tenant"], "alice");
  EXPECT_EQ(json["object"], "vm-1");
  EXPECT_EQ(json["code"], "OK");
  EXPECT_EQ(json["message"], "");
  EXPECT_EQ(line.rfind("{\"audit\":\"smolvmd\",\"method\":", 0), 0u) << line;
}

TEST(AuditLineTest, HostileTextStaysOnOneEscapedLine) {
  Caller caller{"uid:1001", false, "tls:evil\ncn"};
  std::string nasty = std::string("a\nb\x1b[31mred\rc\x7f\xc2\x9b" "2J\xff\xfe end");
  std::string line = AuditLine(caller, "DeleteVm", nasty,
                               absl::NotFoundError("vm \"" + nasty + "\" not found"));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  for (unsigned char c : line) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte " << int(c) << " in " << line;
  }
  EXPECT_THAT(line, HasSubstr("\\n"));
  EXPECT_THAT(line, HasSubstr("\\u001b[31m"));
  EXPECT_THAT(line, HasSubstr("\\r"));
  EXPECT_THAT(line, HasSubstr("\\ufffd"));
  EXPECT_THAT(line, HasSubstr("\\u009b"));  // 8-bit CSI, valid UTF-8.
  EXPECT_THAT(line, HasSubstr("\\u007f"));
  auto json = nlohmann::json::parse(line);  // Still valid JSON.
  EXPECT_EQ(json["code"], "NOT_FOUND");
  EXPECT_EQ(json["identity"], "tls:evil\ncn");
  EXPECT_THAT(json["object"].get<std::string>(), HasSubstr("\x1b[31mred\rc\x7f"));
}

}  // namespace
}  // namespace smolvm::daemon
