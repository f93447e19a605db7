#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Run once when the protocols change (needs protoc, from protobuf-compiler);
the files it writes are committed. Protobuf seeds are written in text format
below and encoded with `protoc --encode`, so they stay readable here.
"""
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def encode(message, proto, text):
    return subprocess.run(
        ["protoc", "--encode=" + message, "-I", os.path.join(ROOT, "proto"), proto],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


# validation: one selector byte (validation_fuzz.cc), then a request.
VM = "smolvm/v1/vm_service.proto"
SNAP = "smolvm/v1/snapshot_service.proto"
VALIDATION = [
    ("create_full", 0, "smolvm.v1.CreateVmRequest", VM, """
        config {
          vm_id: "web-1" vcpu_count: 4 memory_mib: 2048
          kernel_path: "/var/lib/smolvmd/kernel/vmlinux" initrd_path: "/var/lib/smolvmd/initrd.img"
          rootfs_path: "/srv/images/rootfs.ext4" boot_args: "quiet loglevel=3 panic=-1"
          env { key: "PATH" value: "/usr/bin:/bin" } env { key: "LANG" value: "C.UTF-8" }
          egress { mode: EGRESS_RESTRICTED
                   allow_cidrs: "198.51.100.0/24" allow_cidrs: "203.0.113.7" }
          port_forwards { host_ip: "127.0.0.1" host_port: 18080 guest_port: 80 protocol: "tcp" }
          port_forwards { host_port: 15353 guest_port: 53 protocol: "udp" }
        }
        start: true"""),
    ("create_empty", 0, "smolvm.v1.CreateVmRequest", VM, "config {}"),
    ("create_bad_boot_args", 0, "smolvm.v1.CreateVmRequest", VM,
     'config { vm_id: "a" boot_args: "init=/bin/sh console=ttyS0 \\"x y\\"" }'),
    ("create_bad_paths", 0, "smolvm.v1.CreateVmRequest", VM,
     'config { vm_id: "b-2" kernel_path: "/a/../etc/passwd" rootfs_path: "rel/x" }'),
    ("create_egress_off", 0, "smolvm.v1.CreateVmRequest", VM,
     'config { vm_id: "c" egress { mode: EGRESS_OFF } memory_mib: 16384 vcpu_count: 32 }'),
    ("exec_argv", 1, "smolvm.v1.ExecRequest", VM, """
        vm_id: "web-1" argv: "ls" argv: "-l" env { key: "A_1" value: "x" } cwd: "/root"
        timeout_ms: 5000"""),
    ("exec_command_stdin", 1, "smolvm.v1.ExecRequest", VM,
     'vm_id: "web-1" command: "cat" stdin: "hello\\n" has_stdin: true'),
    ("expose", 2, "smolvm.v1.ExposePortRequest", VM,
     'vm_id: "web-1" '
     'forward { host_ip: "0.0.0.0" host_port: 8080 guest_port: 8080 protocol: "tcp" }'),
    ("unexpose", 3, "smolvm.v1.UnexposePortRequest", VM,
     'vm_id: "web-1" host_ip: "127.0.0.1" host_port: 8080 protocol: "udp"'),
    ("create_snapshot", 4, "smolvm.v1.CreateSnapshotRequest", SNAP,
     'vm_id: "web-1" snapshot_id: "my-checkpoint" resume_source: true'),
    ("fork_snapshot", 4, "smolvm.v1.ForkSnapshotRequest", SNAP,
     'snapshot_id: "my-checkpoint" count: 3 resume_vm: true vm_id_prefix: "clone"'),
]

AGENT = "smolvm/agent/v1/agent.proto"


def frame(text):
    body = encode("smolvm.agent.v1.Frame", AGENT, text)
    return struct.pack(">I", len(body)) + body


# Frames a guest sends (agent_host: selector byte = the operation).
GUEST_FRAMES = {
    "exec_output": frame('exec_output { id: 1 stream: STDOUT data: "hi\\n" }')
                   + frame('exec_output { id: 1 stream: STDERR data: "oops" }')
                   + frame("exec_exit { id: 1 exit_code: 3 }"),
    "exec_start_error": frame('exec_exit { id: 1 start_error: "no such file" }'),
    "download": frame('file_data { id: 1 data: "abc" }') + frame('file_data { id: 1 eof: true }')
                + frame("op_result { id: 1 bytes: 3 mode: 420 }"),
    "result": frame("op_result { id: 1 bytes: 4 guest_time_ns: 1700000000000000000 }"),
    "result_error": frame('op_result { id: 1 error: "read-only file system" }'),
    "hello_then_unknown_id": frame('hello { protocol_version: 1 agent_version: "x" }')
                             + frame("op_result { id: 99 }"),
}
HOST_SEEDS = [
    ("exec", 0, GUEST_FRAMES["exec_output"]),
    ("exec_start_error", 0, GUEST_FRAMES["exec_start_error"]),
    ("download", 1, GUEST_FRAMES["download"]),
    ("upload", 2, GUEST_FRAMES["result"]),
    ("upload_error", 2, GUEST_FRAMES["result_error"]),
    ("set_clock", 3, GUEST_FRAMES["result"] + GUEST_FRAMES["hello_then_unknown_id"]),
    ("add_entropy", 4, GUEST_FRAMES["result_error"]),
    ("greeting_hello", 5,
     frame('hello { protocol_version: 1 agent_version: "0.1.0" agent_pid: 7 }')),
    ("greeting_legacy", 5, b"SMOLVM_READY\n"),
    ("oversized", 0, struct.pack(">I", (1 << 20) + 1)),
    ("truncated", 1, GUEST_FRAMES["download"][:-3]),
]

# Frames a host sends (agent_guest: selector byte = read size / 64).
HOST_FRAMES = (
    frame("hello_request { host_protocol_version: 1 }")
    + frame('exec_start { id: 1 argv: "ls" argv: "/" env { key: "A" value: "b" } cwd: "/"'
            ' timeout_ms: 1000 stdin_follows: true }')
    + frame('exec_stdin { id: 1 data: "input" eof: true }')
    + frame("exec_cancel { id: 1 }")
    + frame('file_write_start { id: 2 path: "/tmp/f" mode: 420 make_parents: true }')
    + frame('file_data { id: 2 data: "content" eof: true }')
    + frame('file_read_start { id: 3 path: "/etc" tar: true }')
    + frame("set_clock { id: 4 unix_time_ns: 1700000000000000000 }")
    + frame('add_entropy { id: 5 seed: "0123456789abcdef" }'))
GUEST_SEEDS = [
    ("all_frames_whole", 255, HOST_FRAMES),
    ("all_frames_split", 0, HOST_FRAMES),
    ("empty_frame", 1, struct.pack(">I", 0)),
    ("corrupt_then_valid", 3, struct.pack(">I", 2) + b"\xff\xff" + HOST_FRAMES),
    ("oversized", 4, struct.pack(">I", 0xffffffff)),
]

GREETING = ('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            '"package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}\n')
CAPS = '{"return": {}}\n'
EVENT = ('{"timestamp": {"seconds": 1700000000, "microseconds": 1}, "event": "STOP"}\n')
# qmp: selector byte (which calls, in turn), then what QEMU sends.
QMP_SEEDS = [
    ("status", 0, GREETING + CAPS + EVENT + '{"return": {"status": "running", "running": true}}\n'),
    ("error", 1, GREETING + CAPS + '{"error": {"class": "GenericError", "desc": "no"}}\n'),
    ("migrate_out", 2, GREETING + CAPS + CAPS * 4
     + '{"return": {"status": "completed"}}\n'),
    ("migrate_failed", 2, GREETING + CAPS + CAPS * 4
     + '{"return": {"status": "failed", "error-desc": "disk full"}}\n'),
    ("migrate_in", 3, GREETING + CAPS + CAPS * 3 + '{"return": {"status": "inmigrate"}}\n'
     + '{"return": {"status": "paused"}}\n'),
    ("odd_shapes", 0, GREETING + CAPS + '{"return": []}\n{"error": "x"}\n[1]\n\r\n  \n{"x"\n'),
]

MANIFEST = """{
  "format_version": 1,
  "snapshot_id": "my-checkpoint",
  "vm_id": "web-1",
  "vmm": "qemu",
  "vmm_version": "QEMU emulator version 7.2.13 (Debian 1:7.2+dfsg-7+deb12u7)",
  "accelerator": "tcg",
  "memory_mib": 512,
  "ram_in_vmstate": false,
  "vmstate_bytes": 412345,
  "mem_bytes": 536870912,
  "disk_bytes": 1073741824%s
}
"""
CHECKSUMS = """,
  "checksums": {
    "vmstate": "xxh3-128:0123456789abcdef0123456789abcdef",
    "mem": "xxh3-128:fedcba9876543210fedcba9876543210",
    "disk": "xxh3-128:00000000000000000000000000000000"
  }"""
MANIFEST_SEEDS = [
    ("v1", MANIFEST % CHECKSUMS),
    ("legacy", MANIFEST % ""),
    ("newer", (MANIFEST % "").replace('"format_version": 1', '"format_version": 2')),
    ("bad_checksum", MANIFEST % CHECKSUMS.replace("xxh3-128:0123", "sha256:0123")),
    ("wrong_types", '{"format_version": "1", "memory_mib": -1, "checksums": []}'),
]

CONFIG_SEEDS = [
    ("tenants", """
[tenants.alice]
uids = [1000, 1001]
tls_subjects = ["CN=alice"]
admin = false
[tenants.alice.quotas]
running_vms = 2
memory_mib = 4096
[tenants."ops team"]
admin = true
"""),
    ("listen", '[listen]\ntcp = "127.0.0.1:7443"\n[tls]\ncert = "/etc/smolvmd/cert.pem"\n'),
    ("bad", '[daemon]\nboot_timeout_seconds = 0\nunknown = 1\n[nope]\n'),
    ("types", '[network]\nenabled = "yes"\negress_deny = [1, 2]\n[ports]\nmin = 1.5\n'
              'max = 1979-05-27T07:32:00Z\n'),
]

# migration_stream: QEMU 7.2 migration streams as a restored VM's save has
# them (lib/snapshot/migration_stream.h): RAM block "ram" of 16 pages
# (migration_stream_fuzz.cc splits it), "pc.bios" and "pc.rom" kept.
def be32(v):
    return struct.pack(">I", v)


def be64(v):
    return struct.pack(">Q", v)


def name(s):
    return bytes([len(s)]) + s.encode()


def stream(records, ignore_shared=True, page_fill=None):
    out = be32(0x5145564D) + be32(3) + b"\x07" + be32(10) + b"pc-q35-7.2"
    if ignore_shared:
        out += b"\x05" + name("configuration/capabilities") + be32(1) + be32(1)
        out += name("x-ignore-shared")
    blocks = [("pc.bios", 4 * 4096), ("ram", 16 * 4096), ("pc.rom", 2 * 4096)]
    out += b"\x01" + be32(2) + name("ram") + be32(0) + be32(4)
    out += be64(sum(n for _, n in blocks) | 0x04)
    addr = 0
    for block, size in blocks:
        out += name(block) + be64(size) + be64(addr)
        addr += size
    out += be64(0x10) + b"\x7e" + be32(2) + b"\x03" + be32(2) + records + be64(0x10)
    out += b"\x7e" + be32(2)
    out += b"\x04" + be32(3) + name("timer") + be32(0) + be32(2) + be64(1) + b"\x7e" + be32(3)
    return out + b"\x00"


PAGE = b"\xab" * 4096
MIGRATION_SEEDS = [
    ("zero_pages", stream(be64(0x02) + name("ram") + b"\x00" + be64(0x1000 | 0x22) + b"\x00"
                          + be64(0x02) + name("pc.rom") + b"\x00")),
    ("full_page", stream(be64(0x3000 | 0x08) + name("ram") + PAGE
                         + be64(0x08) + name("pc.bios") + PAGE)),
    ("no_ignore_shared", stream(b"", ignore_shared=False)),
    ("xbzrle", stream(be64(0x40) + name("ram") + b"\x00\x00\x04")),
]

# dns_message: one input is both a guest's query and an upstream's answer
# to id 0x1234 "example.com IN A" (dns_message_fuzz.cc's question).
def dns_name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\x00"


def dns(flags, questions, answers=(), additional=b"", arcount=0, qid=0x1234):
    out = struct.pack(">HHHHHH", qid, flags, len(questions), len(answers), 0, arcount)
    for n, t in questions:
        out += dns_name(n) + struct.pack(">HH", t, 1)
    for owner, t, ttl, rdata in answers:
        # 0xc00c: a compression pointer to the question's name.
        out += (b"\xc0\x0c" if owner is None else dns_name(owner))
        out += struct.pack(">HHIH", t, 1, ttl, len(rdata)) + rdata
    return out + additional


OPT = b"\x00" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)  # EDNS0, DO set.
DNS_SEEDS = [
    ("query_a", dns(0x0100, [("Example.COM", 1)])),
    ("query_edns_aaaa", dns(0x0110, [("www.example.com", 28)], additional=OPT, arcount=1)),
    ("answer_a", dns(0x8180, [("example.com", 1)],
                     [(None, 1, 300, bytes([192, 0, 2, 1])),
                      (None, 1, 60, bytes([198, 51, 100, 7]))])),
    ("answer_cname", dns(0x8180, [("example.com", 1)],
                         [(None, 5, 3600, dns_name("edge.cdn.net")),
                          ("edge.cdn.net", 28, 20, bytes(16)),
                          ("edge.cdn.net", 1, 20, bytes([203, 0, 113, 9]))])),
    ("answer_nxdomain", dns(0x8183, [("example.com", 1)])),
]


def main():
    for name, selector, message, proto, text in VALIDATION:
        write("validation", name, bytes([selector]) + encode(message, proto, text))
    for name, selector, data in HOST_SEEDS:
        write("agent_host", name, bytes([selector]) + data)
    for name, selector, data in GUEST_SEEDS:
        write("agent_guest", name, bytes([selector]) + data)
    for name, selector, text in QMP_SEEDS:
        write("qmp", name, bytes([selector]) + text.encode())
    for name, text in MANIFEST_SEEDS:
        write("manifest", name + ".json", text)
    with open(os.path.join(ROOT, "systemd", "smolvmd.toml.example"), "rb") as f:
        write("config", "example.toml", f.read())
    for name, text in CONFIG_SEEDS:
        write("config", name + ".toml", text)
    for name, data in MIGRATION_SEEDS:
        write("migration_stream", name, data)
    for name, data in DNS_SEEDS:
        write("dns_message", name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
