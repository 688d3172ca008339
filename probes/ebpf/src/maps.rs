//! The maps every hook shares, and the helpers that stamp, stage and send
//! an event.

#[allow(unused_imports)]
use crate::prelude::*;

/// Default 4 MiB; the agent resizes it before load (`--ring-buffer-bytes`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

#[map]
pub(crate) static ACCEPTS: PerCpuHashMap<AcceptKey, u64> = PerCpuHashMap::with_max_entries(8192, 0);

/// Per-thread state between a bind's start and end: one slot a thread,
/// kept between binds and written in place, so a bind costs lookups and
/// no insert or delete (an insert and a delete a syscall were the largest
/// part of the programs' cost in a bind storm). A slot is in use while its
/// `kind` is set; the end clears it. LRU: the slots of threads that have
/// exited are reclaimed by the kernel, oldest first, when the map is full.
#[map]
pub(crate) static PENDING_BIND: LruHashMap<u32, RawEvent> = LruHashMap::with_max_entries(16384, 0);

/// Bound sockets, for the release hook (see `BoundSock`): the address
/// each holds, kept in the socket itself (socket-local storage, Linux 5.2;
/// from cgroup socket programs 5.11), written at its bind and freed with
/// it. A close of a socket bindwatch does not follow costs one look at the
/// socket's own storage list: no cookie, no hash, nothing to delete. Its
/// definition needs BTF, which the probe build emits.
#[btf_map]
pub(crate) static BOUND_SK: SkStorage<BoundSock> = SkStorage::new();

/// The same by cookie, for kernels that refuse socket-local storage to
/// these programs (the `*_map` programs; the agent picks one store at
/// load). LRU: a host with more bound sockets loses the oldest entries'
/// release events, which the agent's reconciliation with sock_diag makes
/// up for.
#[map]
pub(crate) static BOUND: LruHashMap<u64, BoundSock> = LruHashMap::with_max_entries(131072, 0);

/// `BOUND_SK` as the storage helpers take it.
#[inline(always)]
pub(crate) fn bound_sk() -> *mut c_void {
    &BOUND_SK as *const SkStorage<BoundSock> as *mut c_void
}

/// The socket `sk`'s entry in `BOUND_SK`: created from `init` when given
/// and there is none. Null when it has none (or it could not be created).
#[inline(always)]
pub(crate) fn bound_storage(sk: *mut c_void, init: Option<&mut BoundSock>) -> *mut BoundSock {
    let (value, flags) = match init {
        Some(v) => (
            v as *mut BoundSock as *mut c_void,
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        ),
        None => (core::ptr::null_mut(), 0),
    };
    // SAFETY: `sk` is a socket the verifier has typed (the context of a
    // cgroup socket program, or a sock_ops context's checked socket).
    unsafe { bpf_sk_storage_get(bound_sk(), sk, value, flags) as *mut BoundSock }
}

/// The cookie of the unmarked listener this CPU last released with its
/// stop folded in (`config::STOPS_FROM_SOCK_OPS`): the state callback that
/// follows inside the same close finds it here and sends nothing. A close
/// that moved to another CPU in between sends the stop again, which the
/// agent's join ignores; nothing is lost.
#[map]
pub(crate) static FOLDED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Switches set by the agent (see `bindwatch_common::config`).
#[map]
pub(crate) static CONFIG: Array<u32> = Array::with_max_entries(config::SLOTS, 0);

/// Per-thread state of a listen, slots kept as in `PENDING_BIND`, keyed by
/// the current task's address rather than its id: the sock_ops listen
/// callback that adds the address may not ask for the thread id (sock_ops
/// callbacks also run in softirq), but may ask for the current task.
#[map]
pub(crate) static PENDING_LISTEN: LruHashMap<u64, RawEvent> =
    LruHashMap::with_max_entries(16384, 0);

pub(crate) const SOL_SOCKET: i32 = 1;
pub(crate) const SO_REUSEADDR: i32 = 2;
pub(crate) const SO_REUSEPORT: i32 = 15;

#[inline(always)]
pub(crate) fn count_lost(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn emit(ev: &RawEvent) {
    match EVENTS.reserve::<RawEvent>(0) {
        Some(mut entry) => {
            entry.write(*ev);
            entry.submit(0);
        }
        None => count_lost(lost::RINGBUF_FULL),
    }
}

/// An event stamped with the current task.
#[inline(always)]
pub(crate) fn task_event(kind: u8) -> RawEvent {
    let mut ev = RawEvent::zeroed();
    ev.kind = kind;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    put_task(&mut ev);
    ev.version = unsafe { core::ptr::read_volatile(&BINDWATCH_LAYOUT_VERSION) };
    ev
}

/// The current task's fields.
#[inline(always)]
pub(crate) fn put_task(ev: &mut RawEvent) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// A field of a tracepoint's record, loaded directly: the verifier checks
/// the load is inside the record and aligned, and it costs no helper call
/// (`read_at` calls bpf_probe_read_kernel), which matters on
/// `inet_sock_set_state`, run for every TCP state change on the host.
#[inline(always)]
pub(crate) fn tp<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: see above; every offset used is a field of the record.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// A switch of the `CONFIG` array the agent set (0 when it set none).
#[inline(always)]
pub(crate) fn config_on(slot: u32) -> bool {
    CONFIG.get(slot).is_some_and(|v| *v != 0)
}

#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub(crate) fn current_task() -> u64 {
    // SAFETY: no arguments; returns the address of the running task.
    unsafe { bpf_get_current_task() }
}

/// The first three arguments of the syscall under way, from the registers
/// the task saved on entering the kernel: what an exit tracepoint needs
/// when nothing ran at the entry. The first (the descriptor) is `fd`.
pub(crate) struct SyscallArgs {
    pub(crate) fd: u64,
    pub(crate) second: u64,
    pub(crate) third: u64,
}

/// x86-64's `struct pt_regs` (the UAPI layout, the one kprobes read): rdx,
/// rsi and rdi, the third, second and first syscall arguments, lie at
/// byte 96, 104 and 112. The agent offers the sets that read them only on
/// x86-64. The registers are found with `bpf_task_pt_regs` (Linux 5.15,
/// needs the kernel's BTF); a kernel without it refuses the programs that
/// call it, and the agent falls back to the entry set.
const PT_REGS_DX: usize = 96;

#[inline(always)]
pub(crate) fn syscall_args() -> Option<SyscallArgs> {
    // SAFETY: helpers without arguments to check but the task, which the
    // verifier types; the registers are read with the checked helper.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return None;
    }
    let [dx, si, di]: [u64; 3] =
        unsafe { bpf_probe_read_kernel(regs.add(PT_REGS_DX) as *const [u64; 3]) }.ok()?;
    Some(SyscallArgs {
        fd: di,
        second: si,
        third: dx,
    })
}

/// Whether the slot `p` holds a call of kind `k` under way.
#[inline(always)]
pub(crate) fn is_pending(p: *mut RawEvent, k: u8) -> bool {
    // SAFETY: a map value; `kind` is cleared when the call ends.
    unsafe { (*p).kind == k }
}

/// This thread's pending bind, if one is under way.
#[inline(always)]
pub(crate) fn pending_bind(tid: u32) -> Option<*mut RawEvent> {
    PENDING_BIND
        .get_ptr_mut(&tid)
        .filter(|p| is_pending(*p, kind::BIND))
}

/// This task's pending listen, if one is under way.
#[inline(always)]
pub(crate) fn pending_listen(task: u64) -> Option<*mut RawEvent> {
    PENDING_LISTEN
        .get_ptr_mut(&task)
        .filter(|p| is_pending(*p, kind::LISTEN))
}
