//! A listen: begun at its address (sock_ops or the state tracepoint,
//! `lifecycle.rs`) or at `sys_enter_listen` (the entry set), ended with its
//! result at the syscall's exit tracepoint (or a trampoline, `fexit.rs`).

#[allow(unused_imports)]
use crate::prelude::*;

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let fd: u64 = tp(&ctx, 16);
    let backlog: u64 = tp(&ctx, 24);
    begin_listen(fd as i32, backlog as u32);
    0
}

#[inline(always)]
pub(crate) fn begin_listen(fd: i32, backlog: u32) {
    let mut ev = task_event(kind::LISTEN);
    ev.fd = fd;
    ev.backlog = backlog;
    // Family is not known until the state tracepoint; AF_INET keeps the
    // record decodable if listen fails before it (the agent drops those
    // without LISTEN_ADDR unless they failed).
    ev.family = AF_INET;
    ev.protocol = IPPROTO_TCP;
    start_pending(&PENDING_LISTEN, &current_task(), &ev);
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp(&ctx, 16);
    end_listen(ret);
    0
}

#[inline(always)]
pub(crate) fn end_listen(ret: i64) {
    if let Some(p) = pending_listen(current_task()) {
        end_listen_slot(p, ret);
    }
}

/// Ends the listen in this task's slot `p` (looked up once by the caller).
#[inline(always)]
fn end_listen_slot(p: *mut RawEvent, ret: i64) {
    // SAFETY: as in end_bind.
    unsafe {
        (*p).ret = ret as i32;
        // A listen on a non-inet socket never reached the state
        // tracepoint and did not fail: nothing of ours.
        if (*p).flags & flags::LISTEN_ADDR != 0 || ret != 0 {
            emit(&*p);
        }
        (*p).kind = 0;
    }
}

/// The end of a listen in the tracepoint set: as in the fexit set, with
/// the descriptor and backlog from the saved registers (read only for a
/// listen bindwatch follows, or one that failed).
#[tracepoint]
pub fn listen_exit(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp(&ctx, 16);
    let slot = pending_listen(current_task());
    if ret == 0 && slot.is_none() {
        // A listen of no inet socket: not ours.
        return 0;
    }
    let (fd, backlog) = match syscall_args() {
        Some(a) => (a.fd as i32, a.second as u32),
        None => (-1, 0),
    };
    end_listen_at_exit(slot, ret, fd, backlog, true);
    0
}

/// The end of a listen in the fexit and tracepoint sets, given the task's
/// slot (one lookup a listen). A plain listen was begun by its
/// address (`config::LISTEN_BEGINS_AT_ADDRESS`), whose callback cannot
/// read the task: the task is added here. A listen that failed before
/// its address (no slot) is reported from here by `inet_listen`'s exit;
/// `mptcp_listen`'s only ends what its entry began, so a kernel whose MPTCP
/// calls `inet_listen` inside reports the failure once.
#[inline(always)]
pub(crate) fn end_listen_at_exit(
    slot: Option<*mut RawEvent>,
    ret: i64,
    fd: i32,
    backlog: u32,
    reports_failure: bool,
) {
    if let Some(p) = slot {
        // SAFETY: this task's slot, until the end below.
        unsafe {
            if (*p).pid == 0 && (*p).tid == 0 {
                put_task(&mut *p);
            }
            (*p).backlog = backlog;
            (*p).fd = fd;
        }
        end_listen_slot(p, ret);
    } else if reports_failure && ret != 0 {
        let mut ev = task_event(kind::LISTEN);
        ev.fd = fd;
        ev.backlog = backlog;
        // As in `begin_listen`: the family is not known.
        ev.family = AF_INET;
        ev.protocol = IPPROTO_TCP;
        ev.ret = ret as i32;
        emit(&ev);
    }
}
