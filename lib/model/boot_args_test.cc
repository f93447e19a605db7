#include "lib/model/boot_args.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

TEST(BootArgsTest, AllowedParametersPass) {
  for (const char* ok : {"",
                         "   ",
                         "quiet",
                         "loglevel=0",
                         "loglevel=7",
                         "panic=-1",
                         "panic=0",
                         "panic=3600",
                         "mitigations=off",
                         "mitigations=auto",
                         "nokaslr",
                         "random.trust_cpu=on",
                         "random.trust_cpu=off",
                         "transparent_hugepage=never",
                         "transparent_hugepage=madvise",
                         "tsc=reliable",
                         "clocksource=kvm-clock",
                         "clocksource=tsc",
                         "printk.devkmsg=ratelimit",
                         "ipv6.disable=1",
                         "init_on_alloc=0",
                         "init_on_free=1",
                         "quiet loglevel=3\tnokaslr  mitigations=off"}) {
    EXPECT_THAT(ValidateTenantBootArgs(ok), IsOk()) << ok;
  }
}

TEST(BootArgsTest, ParametersOffTheListAreRefusedByName) {
  for (const std::string bad :
       {"init=/bin/sh", "rdinit=/bin/sh", "root=/dev/vdb", "rootfstype=tmpfs", "rootflags=noexec",
        "ro", "rw", "console=ttyS1", "earlyprintk=serial", "smolvm.net=10.200.0.9/24,10.200.0.1,-",
        "smolvm.heartbeat=1", "smolvm.rootwait=0", "virtio_blk.queue_depth=1", "debug", "--",
        "mem=64M", "Quiet"}) {
    auto s = ValidateTenantBootArgs("quiet " + bad);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied, bad)) << bad;
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied, "admins may pass any"));
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied, "loglevel=0..7, panic=-1..3600"));
  }
}

TEST(BootArgsTest, BadValuesAreRefused) {
  for (const char* bad :
       {"loglevel=8", "loglevel=", "loglevel", "loglevel=-1", "loglevel=0x3", "panic=3601",
        "panic=-2", "mitigations=auto,nosmt", "tsc=unstable", "ipv6.disable=2", "quiet=1",
        "nokaslr=yes", "clocksource=jiffies", "init_on_free=on"}) {
    EXPECT_THAT(ValidateTenantBootArgs(bad),
                StatusIs(absl::StatusCode::kPermissionDenied, "boot_args"))
        << bad;
  }
  EXPECT_THAT(ValidateTenantBootArgs("loglevel=9"),
              StatusIs(absl::StatusCode::kPermissionDenied, "must be loglevel=0..7"));
}

TEST(BootArgsTest, QuotesAndOddBytesCannotSmuggleParameters) {
  for (const std::string& bad : std::vector<std::string>{
           "panic=\"5 init=/bin/sh\"", "\"init=/bin/sh\"", "mitigations=\"off\"",
           "quiet\ninit=/bin/sh", "quiet\rinit=/bin/sh", std::string("quiet\0init=/x", 13),
           "clocksource=tsc;reboot", "printk.devkmsg=on$(x)", "loglevel=\xc3\xa9"}) {
    EXPECT_THAT(ValidateTenantBootArgs(bad),
                StatusIs(absl::StatusCode::kPermissionDenied, "boot_args"))
        << bad;
  }
  // The refused text is escaped in the message.
  EXPECT_THAT(ValidateTenantBootArgs("quiet\ninit=/bin/sh"),
              StatusIs(absl::StatusCode::kPermissionDenied, "quiet\\ninit"));
}

TEST(BootArgsTest, TheAllowListIsDocumented) {
  std::string list = TenantBootArgsAllowList();
  for (const char* p :
       {"quiet", "loglevel=0..7", "panic=-1..3600", "mitigations=off|auto", "nokaslr",
        "random.trust_cpu=on|off", "tsc=reliable", "printk.devkmsg=on|off|ratelimit",
        "ipv6.disable=0|1", "init_on_alloc=0|1", "init_on_free=0|1"}) {
    EXPECT_THAT(list, ::testing::HasSubstr(p));
  }
}

}  // namespace
}  // namespace smolvm
