"""Programs that only return, attached where bindwatch's probes attach: the
floor under `bench/hooks`' program times. The kernel's statistics time a
program's run from just before its code to just after it, so such a
program's time a run is what the statistics and the call cost any program
on that hook, and bindwatch's time above it is its own work.

Loaded with the bpf() syscall itself (no toolchain, no library), x86-64
only, as root; the links go when `Noops.close()` closes their descriptors.
"""
import ctypes, fcntl, os, pathlib, struct

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF, _SYS_PERF_EVENT_OPEN = 321, 298
_PROG_LOAD, _LINK_CREATE = 5, 28
_TRACEPOINT, _CGROUP_SOCK, _SOCK_OPS, _CGROUP_SOCK_ADDR = 5, 9, 13, 18
_PERF_EVENT_IOC_ENABLE, _PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408

# bindwatch's program names (every probe set's) and where each attaches:
# (program type, expected attach type, cgroup attach type or tracepoint).
HOOKS = {
    "bind4": (_CGROUP_SOCK_ADDR, 8, 8), "bind4_begin": (_CGROUP_SOCK_ADDR, 8, 8),
    "bind6": (_CGROUP_SOCK_ADDR, 9, 9), "bind6_begin": (_CGROUP_SOCK_ADDR, 9, 9),
    "post_bind4": (_CGROUP_SOCK, 12, 12), "post_bind4_map": (_CGROUP_SOCK, 12, 12),
    "post_bind6": (_CGROUP_SOCK, 13, 13), "post_bind6_map": (_CGROUP_SOCK, 13, 13),
    "sock_release": (_CGROUP_SOCK, 34, 34), "release_map": (_CGROUP_SOCK, 34, 34),
    "tcp_lifecycle": (_SOCK_OPS, 3, 3), "lifecycle_map": (_SOCK_OPS, 3, 3),
    "sys_enter_bind": (_TRACEPOINT, 0, "syscalls/sys_enter_bind"),
    "sys_exit_bind": (_TRACEPOINT, 0, "syscalls/sys_exit_bind"),
    "bind_exit": (_TRACEPOINT, 0, "syscalls/sys_exit_bind"),
    "sys_enter_listen": (_TRACEPOINT, 0, "syscalls/sys_enter_listen"),
    "sys_exit_listen": (_TRACEPOINT, 0, "syscalls/sys_exit_listen"),
    "listen_exit": (_TRACEPOINT, 0, "syscalls/sys_exit_listen"),
    "inet_sock_set_state": (_TRACEPOINT, 0, "sock/inet_sock_set_state"),
}


def _check(rc, what):
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return rc


def _bpf(cmd, attr, what):
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    return _check(_libc.syscall(_SYS_BPF, cmd, buf, 128), what)


def _load(name, prog_type, expected):
    # r0 = (a cgroup hook's "allow") 1; exit.
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQIIQII16sII", prog_type, 2, ctypes.addressof(code), ctypes.addressof(lic),
                       0, 0, 0, 0, 0, ("noop_" + name)[:15].encode(), 0, expected)
    return _bpf(_PROG_LOAD, attr, f"loading the no-op for {name}")


def _tracepoint_id(tp):
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        p = pathlib.Path(root, "events", tp, "id")
        if p.exists():
            return int(p.read_text())
    raise OSError(f"tracepoint {tp} not found in tracefs")


class Noops:
    """No-op programs on the hooks of the named bindwatch programs."""

    def __init__(self, names, cgroup):
        self.fds, self.ids = [], {}
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        self.fds.append(cg)
        try:
            for name in sorted(set(names)):
                if name not in HOOKS:
                    raise OSError(f"no hook known for bindwatch's program {name}")
                prog_type, expected, target = HOOKS[name]
                prog = _load(name, prog_type, expected)
                self.fds.append(prog)
                self.ids[_prog_id(prog)] = name
                if isinstance(target, str):
                    # perf_event_attr: tracepoint, its id, a sample a hit.
                    attr = struct.pack("<IIQQQQQ", 2, 128, _tracepoint_id(target), 1, 1 << 10, 0, 0).ljust(128, b"\0")
                    buf = ctypes.create_string_buffer(attr, 128)
                    pfd = _check(_libc.syscall(_SYS_PERF_EVENT_OPEN, buf, -1, 0, -1, 8), f"perf_event_open {target}")
                    self.fds.append(pfd)
                    fcntl.ioctl(pfd, _PERF_EVENT_IOC_SET_BPF, prog)
                    fcntl.ioctl(pfd, _PERF_EVENT_IOC_ENABLE, 0)
                else:
                    attr = struct.pack("<IIII", prog, cg, target, 0)
                    self.fds.append(_bpf(_LINK_CREATE, attr, f"attaching the no-op for {name}"))
        except BaseException:
            self.close()
            raise

    def close(self):
        for fd in reversed(self.fds):
            os.close(fd)
        self.fds = []


def _prog_id(fd):
    # BPF_OBJ_GET_INFO_BY_FD (15): bpf_prog_info's id is its second u32.
    info = ctypes.create_string_buffer(256)
    attr = struct.pack("<IIQ", fd, 256, ctypes.addressof(info))
    _bpf(15, attr, "reading a no-op's id")
    return struct.unpack_from("<II", info.raw)[1]
