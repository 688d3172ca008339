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
_PERF_EVENT_IOC_ENABLE, _PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408

_PROG_GET_FD_BY_ID, _OBJ_GET_INFO_BY_FD, _LINK_GET_FD_BY_ID, _LINK_GET_NEXT_ID = 13, 15, 30, 31
_LINK_CGROUP, _LINK_PERF_EVENT, _PERF_EVENT_TRACEPOINT = 3, 7, 5


def _check(rc, what):
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return rc


def _bpf_raw(cmd, attr):
    """bpf(cmd): its return and the attributes as the kernel left them."""
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    return _libc.syscall(_SYS_BPF, cmd, buf, 128), buf.raw


def _bpf(cmd, attr, what):
    return _check(_bpf_raw(cmd, attr)[0], what)


def _load(name, prog_type, expected):
    # r0 = (a cgroup hook's "allow") 1; exit.
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQIIQII16sII", prog_type, 2, ctypes.addressof(code), ctypes.addressof(lic),
                       0, 0, 0, 0, 0, ("noop_" + name)[:15].encode(), 0, expected)
    return _bpf(_PROG_LOAD, attr, f"loading the no-op for {name}")


def _tracepoint_id(name):
    # The kernel names a tracepoint without its group: found in any.
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        for p in pathlib.Path(root, "events").glob(f"*/{name}/id"):
            return int(p.read_text())
    raise OSError(f"tracepoint {name} not found in tracefs")


class Noops:
    """No-op programs on the hooks of the given bindwatch programs ({id:
    name}), each hook read from the kernel: the program's type, and its
    link's cgroup attach type or tracepoint."""

    def __init__(self, programs, cgroup):
        self.fds, self.ids = [], {}
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        self.fds.append(cg)
        try:
            hooks = _hooks(programs)
            for pid, name in sorted(programs.items()):
                if pid not in hooks:
                    raise OSError(f"no link found for bindwatch's program {name} (id {pid})")
                prog_type, target = hooks[pid]
                expected = 0 if isinstance(target, str) else target
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


def _info(fd, size, what, fill=b""):
    """BPF_OBJ_GET_INFO_BY_FD into a buffer of `size` bytes (starting as `fill`)."""
    info = ctypes.create_string_buffer(fill.ljust(size, b"\0"), size)
    _bpf(_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, size, ctypes.addressof(info)), what)
    return info.raw


def _hooks(programs):
    """{program id: (program type, cgroup attach type or tracepoint name)}
    for the programs of `programs`, from the kernel's links."""
    hooks, link_id = {}, 0
    while True:
        # BPF_LINK_GET_NEXT_ID: start_id in, next_id out; ENOENT past the last.
        rc, attr = _bpf_raw(_LINK_GET_NEXT_ID, struct.pack("<I", link_id))
        if rc < 0:
            return hooks
        link_id = struct.unpack_from("<II", attr)[1]
        try:
            fd = _bpf(_LINK_GET_FD_BY_ID, struct.pack("<I", link_id), f"opening link {link_id}")
        except OSError:
            continue  # gone since it was listed
        try:
            name = ctypes.create_string_buffer(64)
            # bpf_link_info: type, id, prog_id, then the union at byte 16;
            # a perf event's tracepoint name is written to the buffer
            # given at byte 24, its size at byte 32.
            fill = struct.pack("<IIIIIIQI", 0, 0, 0, 0, 0, 0, ctypes.addressof(name), 64)
            info = _info(fd, 64, f"reading link {link_id}", fill)
        finally:
            os.close(fd)
        kind, _, prog = struct.unpack_from("<III", info)
        if prog not in programs:
            continue
        if kind == _LINK_CGROUP:
            hooks[prog] = (_prog_type(prog), struct.unpack_from("<I", info, 24)[0])
        elif kind == _LINK_PERF_EVENT and struct.unpack_from("<I", info, 16)[0] == _PERF_EVENT_TRACEPOINT:
            hooks[prog] = (_prog_type(prog), name.value.decode())


def _prog_type(prog_id):
    fd = _bpf(_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id), f"opening program {prog_id}")
    try:
        # bpf_prog_info's type is its first u32.
        return struct.unpack_from("<I", _info(fd, 256, f"reading program {prog_id}"))[0]
    finally:
        os.close(fd)


def _prog_id(fd):
    # bpf_prog_info's id is its second u32.
    return struct.unpack_from("<II", _info(fd, 256, "reading a no-op's id"))[1]
