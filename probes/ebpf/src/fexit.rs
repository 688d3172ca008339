//! Bind and listen through BPF trampolines (the fexit probe set).
//!
//! Where the kernel runs fentry/fexit programs, these replace the four
//! syscall tracepoints: while any syscall tracepoint has a program, every
//! syscall of every process takes the kernel's slow entry path, and these
//! run only on binds and listens. `inet_bind`, `inet6_bind` and
//! `inet_listen` are called through the socket's ops table, so they are
//! never inlined away; so are MPTCP's `mptcp_bind` and `mptcp_listen`,
//! which newer kernels implement without calling the inet ones (older
//! ones call both: the inner exit ends the call, the outer finds its slot
//! free). A plain listen begins at its address (the sock_ops listen
//! callback or the state tracepoint), so `inet_listen` needs no entry
//! program; MPTCP's keeps one, which begins the listen before its inner
//! calls. The file descriptor is not known there (-1: the event has none).

#[allow(unused_imports)]
use crate::prelude::*;

#[fexit(function = "inet_bind")]
pub fn fexit_inet_bind(ctx: FExitContext) -> i32 {
    // The return value follows the three arguments.
    end_bind(ctx.arg::<u64>(3) as i32 as i64);
    0
}

#[fexit(function = "inet6_bind")]
pub fn fexit_inet6_bind(ctx: FExitContext) -> i32 {
    end_bind(ctx.arg::<u64>(3) as i32 as i64);
    0
}

#[fexit(function = "mptcp_bind")]
pub fn fexit_mptcp_bind(ctx: FExitContext) -> i32 {
    end_bind(ctx.arg::<u64>(3) as i32 as i64);
    0
}

#[fexit(function = "inet_listen")]
pub fn fexit_inet_listen(ctx: FExitContext) -> i32 {
    end_listen_at_exit(
        pending_listen(current_task()),
        ctx.arg::<u64>(2) as i32 as i64,
        -1,
        ctx.arg::<u64>(1) as u32,
        true,
    );
    0
}

#[fentry(function = "mptcp_listen")]
pub fn fentry_mptcp_listen(ctx: FEntryContext) -> i32 {
    begin_listen(-1, ctx.arg::<u64>(1) as u32);
    0
}

#[fexit(function = "mptcp_listen")]
pub fn fexit_mptcp_listen(ctx: FExitContext) -> i32 {
    end_listen_at_exit(
        pending_listen(current_task()),
        ctx.arg::<u64>(2) as i32 as i64,
        -1,
        ctx.arg::<u64>(1) as u32,
        false,
    );
    0
}
