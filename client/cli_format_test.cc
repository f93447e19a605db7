#include "client/cli_format.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace smolvm::cli {
namespace {

TEST(RenderTableTest, AlignsColumnsWithoutTrailingBlanks) {
  EXPECT_EQ(RenderTable({{"ID", "STATUS", "IP"},
                         {"a-long-id", "RUNNING", ""},
                         {"b", "PAUSED", "10.0.0.2"}}),
            "ID          STATUS    IP\n"
            "a-long-id   RUNNING\n"
            "b           PAUSED    10.0.0.2\n");
}

TEST(FormatTest, Bytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(256ull << 20), "256.0 MiB");
  EXPECT_EQ(FormatBytes(2ull << 30), "2.0 GiB");
}

TEST(FormatTest, Timestamp) {
  google::protobuf::Timestamp ts;
  EXPECT_EQ(FormatTimestamp(ts), "-");
  ts.set_seconds(1714564800);  // 2024-05-01T12:00:00Z
  ts.set_nanos(5);
  EXPECT_EQ(FormatTimestamp(ts), "2024-05-01T12:00:00Z");
}

TEST(VmTableTest, Columns) {
  v1::Vm vm;
  vm.set_vm_id("web-1");
  vm.set_status(v1::RUNNING);
  vm.mutable_config()->set_vcpu_count(2);
  vm.mutable_config()->set_memory_mib(512);
  vm.mutable_network()->set_guest_ip("172.16.0.2");
  vm.set_vmm_pid(4242);
  vm.mutable_created_at()->set_seconds(1714564800);
  v1::Vm stopped;
  stopped.set_vm_id("db");
  stopped.set_status(v1::STOPPED);
  EXPECT_EQ(VmTable(std::vector<v1::Vm>{vm, stopped}),
            "ID      STATUS    VCPUS   MEM_MIB   IP           PID    CREATED\n"
            "web-1   RUNNING   2       512       172.16.0.2   4242   "
            "2024-05-01T12:00:00Z\n"
            "db      STOPPED   0       0         -            -      -\n");
}

TEST(SnapshotTableTest, Columns) {
  v1::SnapshotInfo s;
  s.set_snapshot_id("ckpt");
  s.set_vm_id("web-1");
  s.set_size_bytes(3ull << 20);
  s.set_restored(true);
  s.set_restored_vm_id("web-2");
  EXPECT_EQ(SnapshotTable(std::vector<v1::SnapshotInfo>{s}),
            "ID     VM      SIZE      CREATED   RESTORED   RESTORED_VM\n"
            "ckpt   web-1   3.0 MiB   -         yes        web-2\n");
}

TEST(JsonTest, ProtoFieldNamesAndZeroFields) {
  v1::Vm vm;
  vm.set_vm_id("web-1");
  vm.set_vmm_pid(7);
  absl::StatusOr<std::string> json = ToJson(vm);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_NE(json->find("\"vm_id\": \"web-1\""), std::string::npos) << *json;
  EXPECT_NE(json->find("\"vmm_pid\": \"7\""), std::string::npos) << *json;
  EXPECT_NE(json->find("\"status\": \"VM_STATUS_UNSPECIFIED\""),
            std::string::npos)
      << *json;
  EXPECT_EQ(json->find("vmId"), std::string::npos) << *json;
}

TEST(JsonTest, Array) {
  v1::SnapshotInfo a, b;
  a.set_snapshot_id("a");
  b.set_snapshot_id("b");
  absl::StatusOr<std::string> json = ToJsonArray({&a, &b});
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->front(), '[');
  EXPECT_LT(json->find("\"snapshot_id\": \"a\""),
            json->find("\"snapshot_id\": \"b\""));
  absl::StatusOr<std::string> empty = ToJsonArray({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "[]");
}

}  // namespace
}  // namespace smolvm::cli
