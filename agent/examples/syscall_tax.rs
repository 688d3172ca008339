//! The syscalls every process makes, for the syscall-tax benchmark
//! (`bench/tax`): what a program that never binds pays while bindwatch
//! (or any program on a syscall tracepoint) runs. Prints nanoseconds per
//! operation.
//!
//! `syscall_tax getppid N`: N `getppid` calls, the cheapest syscall.
//! `syscall_tax pipe N`: N one-byte write+read pairs on a pipe (two
//! syscalls an operation).

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "getppid".into());
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let start = Instant::now();
    match what.as_str() {
        "getppid" => {
            for _ in 0..n {
                std::hint::black_box(rustix::process::getppid());
            }
        }
        "pipe" => {
            use std::io::{Read as _, Write as _};
            let (mut r, mut w) = std::io::pipe().expect("pipe");
            let mut buf = [0u8; 1];
            for _ in 0..n {
                w.write_all(b"x").expect("write");
                r.read_exact(&mut buf).expect("read");
            }
        }
        other => panic!("unknown workload {other:?}: getppid or pipe"),
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / n as f64);
}
