// File: migration_stream.h
//
// Splits guest RAM out of a QEMU 7.2 migration stream (vmstate.bin).
//
// A restored VM maps its snapshot's mem.bin privately (share=off), so when
// it is snapshotted again QEMU's x-ignore-shared no longer skips its RAM
// block and every page travels in the stream; restoring that stream loads
// every page (seconds for GiBs). SplitRamBlock turns such a stream into
// what a cold-booted VM's snapshot has: the pages of one RAM block go to
// mem.bin at their offsets, and a new stream keeps everything else — the
// header, the configuration, the "ram" section's block list (with the
// addresses x-ignore-shared adds), the pages of the other, small RAM blocks
// (firmware, option ROMs, ACPI tables), every end-of-section marker and all
// device sections byte for byte. Restoring the result (mem.bin share=off +
// -incoming) is the gen-1 restore.
//
// The stream format (QEMU 7.2, migration/savevm.c and migration/ram.c):
//   be32 0x5145564d "QEVM", be32 3; QEMU_VM_CONFIGURATION (7): be32 len,
//   machine name, subsections (5: u8 len, name, be32 version, fields);
//   then sections: START (1) / FULL (4): be32 section id, u8 len, idstr,
//   be32 instance, be32 version; PART (2) / END (3): be32 section id; each
//   followed by its data and a footer (0x7e, be32 section id). The "ram"
//   section's data is records, each a be64 of page offset | flags:
//   MEM_SIZE 0x04 (setup: the total, then per block u8 len, idstr, be64
//   length, be64 address), ZERO 0x02 (+ u8 fill), PAGE 0x08 (+ 4096
//   bytes), EOS 0x10 (end of the section's records); CONTINUE 0x20 says
//   "same block as the last record", otherwise u8 len + block idstr follow.
//   The iterable "ram" section ends (END) before any device section, so
//   everything after it is copied without being parsed.
//
// Anything else — compressed or XBZRLE pages, RDMA hooks, multifd, other
// iterable sections before "ram" ends, a target page size other than 4 KiB,
// a stream saved without x-ignore-shared, offsets beyond a block, truncated
// records — is an error: the caller keeps the stream as it is.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace smolvm::snapshot {

// The guest page size of the streams this splits (x86: TARGET_PAGE_BITS 12).
inline constexpr uint64_t kMigrationPageBytes = 4096;

struct RamSplitStats {
  uint64_t pages_written = 0;  // Full pages of the block written to mem.bin.
  uint64_t zero_pages = 0;     // Zero pages of the block (holes in mem.bin).
  uint64_t kept_pages = 0;     // Page records of other blocks kept in the stream.
  uint64_t bytes_in = 0;       // Size of the input stream.
  uint64_t bytes_out = 0;      // Size of the new stream.
};

// Reads the migration stream `vmstate_in`; writes the pages of RAM block
// `ram_block_id` (whose length must be `ram_bytes`) into `mem_out` at their
// offsets and the rest of the stream to `vmstate_out` (created, or
// truncated). `mem_out` must exist, be `ram_bytes` long and read as zeros
// (a sparse file): zero pages stay holes. Neither output is fsynced (the
// snapshot's PublishDir syncs every file).
//
// On error `vmstate_out` is removed and `mem_out` is put back to a sparse
// file of zeros; the input is never modified. INVALID_ARGUMENT for bad
// arguments, DATA_LOSS for a malformed or truncated stream, UNIMPLEMENTED
// for a well-formed stream this does not handle, an errno status for I/O.
absl::StatusOr<RamSplitStats> SplitRamBlock(const std::string& vmstate_in,
                                            const std::string& ram_block_id,
                                            uint64_t ram_bytes,
                                            const std::string& vmstate_out,
                                            const std::string& mem_out);

// The same on open descriptors: reads `in_fd` from its current position to
// its end, appends to `out_fd`, pwrites pages to `mem_fd` (which must read
// as `ram_bytes` zeros). On error the outputs hold partial data: cleaning up
// is the caller's (SplitRamBlock does it).
absl::StatusOr<RamSplitStats> SplitRamBlockFds(int in_fd, const std::string& ram_block_id,
                                               uint64_t ram_bytes, int out_fd, int mem_fd);

}  // namespace smolvm::snapshot
