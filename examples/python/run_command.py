#!/usr/bin/python3
"""run_command: the SmolVM SDK's command and file flow, in Python.

    with SmolVM() as vm:                       # started here, closed at the end
        vm.run("python3 -c 'print(6 * 7)'")    # buffered: CommandResult
        vm.exec([...], on_output=print_chunk)  # streamed as produced
        vm.upload_file(...); vm.download_file(...)

Boots a VM from the daemon's default image, runs a command (a failing
command is a result, not an error), streams another, copies a file in and
back out, and deletes the VM.

Usage: run_command.py [COMMAND]   (default "uname -a", run by /bin/sh -c)
"""

import os
import sys
import tempfile

from smolvm import SmolVM, SmolVMError


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "uname -a"
    try:
        with SmolVM() as vm:
            print(f"vm {vm.vm_id} is {vm.status}", flush=True)

            result = vm.run(command, timeout=30, env={"GREETING": "hello"})
            print(f"$ {command}\n{result.stdout}{result.stderr}exit_code {result.exit_code}"
                  + (" (timed out)" if result.timed_out else ""), flush=True)

            def print_chunk(stream: str, data: bytes) -> None:
                out = sys.stdout if stream == "stdout" else sys.stderr
                out.write(data.decode(errors="replace"))
                out.flush()
            vm.exec(["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 1; done"],
                    on_output=print_chunk)

            with tempfile.TemporaryDirectory() as tmp:
                local_in, local_out = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.txt")
                with open(local_in, "w") as f:
                    f.write("some data\n")
                vm.upload_file(local_in, "/root/in.txt")
                vm.run("tr a-z A-Z < /root/in.txt > /root/out.txt")
                vm.download_file("/root/out.txt", local_out)
                with open(local_out) as f:
                    print(f"downloaded: {f.read()}", end="")
    except SmolVMError as e:  # The with block closed the VM.
        print(f"run_command: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
