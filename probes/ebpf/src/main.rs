//! bindwatch's kernel programs.
//!
//! A bind is seen by three hooks that run on the same thread, joined
//! through `PENDING_BIND` keyed by thread id: `cgroup/bind4|6` begins it
//! with the requested address (a failed bind leaves none in the socket)
//! and what only the socket knows (protocol, type, reuse flags, cookies),
//! `cgroup/post_bind4|6` adds the port the kernel chose, and the end sends
//! one event with the result: `sys_exit_bind`'s tracepoint (the tracepoint
//! set) or a trampoline on the kernel's bind (the fexit set). A listen
//! begins at its address (sock_ops or the state tracepoint) and ends the
//! same two ways. No syscall's entry is traced: while any `sys_enter_*`
//! tracepoint has a program, every syscall of every process pays for it.
//! The entry set, for kernels that refuse the tracepoint set's exits
//! (they read the syscall's arguments from the saved registers, Linux
//! 5.15), begins binds at `sys_enter_bind` and listens at
//! `sys_enter_listen`.
//!
//! Every helper is `#[inline(always)]`: a local function symbol would carry
//! a crate hash derived from the checkout's path, and the committed object
//! must be the same bytes wherever it is rebuilt.
//!
//! Only stable interfaces are read: tracepoint formats and the cgroup
//! programs' UAPI contexts. No kernel struct is dereferenced.
//!
//! One module per hook family (as Kunai lays out its probes): `bind`,
//! `listen`, `fexit` (both through trampolines), `lifecycle` (the TCP state
//! tracepoint or sock_ops), `release`, and `maps` with the helpers every
//! hook shares.
#![no_std]
#![no_main]

mod bind;
mod fexit;
mod lifecycle;
mod listen;
mod maps;
mod release;

/// What every hook module uses: the aya API, the wire layout, and the
/// shared maps and helpers.
mod prelude {

    pub(crate) use core::ffi::c_void;

    pub(crate) use crate::BINDWATCH_LAYOUT_VERSION;
    pub(crate) use crate::bind::*;
    pub(crate) use crate::lifecycle::*;
    pub(crate) use crate::listen::*;
    pub(crate) use crate::maps::*;
    pub(crate) use aya_ebpf::{
        EbpfContext,
        bindings::{
            BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
            BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
            BPF_SOCK_OPS_TCP_LISTEN_CB, bpf_sock_ops,
        },
        btf_maps::SkStorage,
        helpers::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
            bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
            generated::{
                bpf_get_current_task, bpf_get_current_task_btf, bpf_get_netns_cookie,
                bpf_get_socket_cookie, bpf_getsockopt, bpf_sk_storage_delete, bpf_sk_storage_get,
                bpf_task_pt_regs,
            },
        },
        macros::{
            btf_map, cgroup_sock, cgroup_sock_addr, fentry, fexit, map, sock_ops, tracepoint,
        },
        maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
        programs::{
            FEntryContext, FExitContext, SockAddrContext, SockContext, SockOpsContext,
            TracePointContext,
        },
    };
    pub(crate) use bindwatch_common::{
        AF_INET, AF_INET6, AcceptKey, BoundSock, IPPROTO_TCP, RawEvent, bound, config, flags, kind,
        lost, tcp_state,
    };
}

use bindwatch_common::LAYOUT_VERSION;

/// Read by the agent from the object file before loading, and copied into
/// every event, so a layout mismatch is caught at load and at decode.
#[unsafe(no_mangle)]
static BINDWATCH_LAYOUT_VERSION: u16 = LAYOUT_VERSION;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
