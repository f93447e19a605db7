# Unit tests of lib/, one binary per module, each beside its code. Included
# from lib/CMakeLists.txt, so paths are relative to lib/. Fast and hermetic:
# temp dirs under /tmp, a socketpair for the fake QMP peer, no QEMU.
function(smolvm_unit_test name source)
  add_executable(${name} ${source})
  target_link_libraries(${name} ${ARGN} GTest::gtest_main GTest::gmock)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 60)
endfunction()

smolvm_unit_test(subprocess_test base/subprocess_test.cc smolvm_base)
smolvm_unit_test(file_util_test base/file_util_test.cc smolvm_base)
smolvm_unit_test(ipv4_test base/ipv4_test.cc smolvm_base)
smolvm_unit_test(validation_test model/validation_test.cc smolvm_base)
smolvm_unit_test(domain_rules_test model/domain_rules_test.cc smolvm_base)
smolvm_unit_test(boot_args_test model/boot_args_test.cc smolvm_base)
smolvm_unit_test(lifetime_test model/lifetime_test.cc smolvm_base)
smolvm_unit_test(mounts_test model/mounts_test.cc smolvm_base)
smolvm_unit_test(host_paths_test image/host_paths_test.cc smolvm_host_paths)
smolvm_unit_test(qemu_argv_test vmm/qemu_argv_test.cc smolvm_vmm)
smolvm_unit_test(qmp_client_test vmm/qmp_client_test.cc smolvm_vmm)
smolvm_unit_test(accelerator_test vmm/accelerator_test.cc smolvm_vmm)
smolvm_unit_test(snapshot_files_test snapshot/snapshot_files_test.cc smolvm_core)
smolvm_unit_test(checksum_test snapshot/checksum_test.cc smolvm_core)
smolvm_unit_test(migration_stream_test snapshot/migration_stream_test.cc smolvm_core)
smolvm_unit_test(vm_stats_test core/vm_stats_test.cc smolvm_core)
smolvm_unit_test(vm_activity_test core/vm_activity_test.cc smolvm_core)
smolvm_unit_test(tenant_directory_test core/tenant_directory_test.cc smolvm_core)
smolvm_unit_test(quota_test core/quota_test.cc smolvm_core)
smolvm_unit_test(operations_test core/operations_test.cc smolvm_core)
smolvm_unit_test(event_journal_test core/event_journal_test.cc smolvm_core)
smolvm_unit_test(agent_client_test agent/agent_client_test.cc smolvm_agent_client)
smolvm_unit_test(console_recorder_test vmm/console_recorder_test.cc smolvm_vmm)
smolvm_unit_test(console_log_reader_test vmm/console_log_reader_test.cc smolvm_vmm)
smolvm_unit_test(vm_cgroups_test vmm/vm_cgroups_test.cc smolvm_vmm)
smolvm_unit_test(vmm_jail_test vmm/vmm_jail_test.cc smolvm_vmm)
# Every operation with a fault injected at each of its steps (tests/fakes).
smolvm_unit_test(vm_manager_test core/vm_manager_test.cc smolvm_fakes)
set_tests_properties(vm_manager_test PROPERTIES TIMEOUT 300)
# Image building with the real tools (mmdebstrap, skopeo, umoci, mkfs.ext4).
smolvm_unit_test(rootfs_sources_test image/rootfs_sources_test.cc smolvm_image_build)
set_tests_properties(rootfs_sources_test PROPERTIES TIMEOUT 600)
smolvm_unit_test(guest_payload_test image/guest_payload_test.cc smolvm_image_build)
# FetchKernel from fake linux-image .debs made with dpkg-deb -b (no network).
smolvm_unit_test(guest_kernel_test image/guest_kernel_test.cc smolvm_image_build)
# ImageStore over a real store and real builds of `minimal` (fake kernel dir).
smolvm_unit_test(image_store_test image/image_store_test.cc smolvm_core)
target_compile_definitions(image_store_test PRIVATE
  SMOLVM_SOURCE_GUEST_DIR="${CMAKE_SOURCE_DIR}/guest")
