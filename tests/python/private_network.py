"""Run a command in a private network namespace whose one way out is a bridge to the proxy.

    unshare -rn python3 private_network.py BRIDGE_SOCKET -- COMMAND [ARGS...]

Run under `unshare -rn` (a new user and network namespace): the namespace has only a loopback
interface, which this script brings up. It listens on 127.0.0.1 inside, forwards every connection
to the Unix socket BRIDGE_SOCKET (a path on the shared filesystem, served by the test outside,
which relays to the daemon), and runs COMMAND with ANTHROPIC_BASE_URL set to that listener. So the
command can reach the proxy and nothing else: not the internet, not even the host's loopback.

Exits with the command's status; refuses to run it if the namespace has any interface but `lo`.
"""

import fcntl
import os
import socket
import struct
import subprocess
import sys
import threading

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener: socket.socket, bridge: str) -> None:
    while True:
        conn, _ = listener.accept()
        out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        out.connect(bridge)
        threading.Thread(target=pipe, args=(conn, out), daemon=True).start()
        threading.Thread(target=pipe, args=(out, conn), daemon=True).start()


def main() -> int:
    bridge, sep, *command = sys.argv[1:]
    if sep != "--" or not command:
        print(__doc__, file=sys.stderr)
        return 2
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        print(f"not a private network namespace: interfaces {interfaces}", file=sys.stderr)
        return 2
    bring_up_loopback()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=serve, args=(listener, bridge), daemon=True).start()
    env = dict(os.environ, ANTHROPIC_BASE_URL=f"http://127.0.0.1:{listener.getsockname()[1]}")
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
