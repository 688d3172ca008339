//! A syscall storm for the overhead and loss benchmarks: N cycles of
//! socket, bind to 127.0.0.1:0, listen (TCP), close. Prints nanoseconds per
//! cycle. An optional third argument paces it to that many cycles per
//! second (each TCP cycle is four events: bind, listen, listen stop,
//! release; UDP two: bind, release).
//!
//! `cargo run --release -p bindwatch --example storm -- 100000 tcp [RATE]`

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let udp = args.next().as_deref() == Some("udp");
    let rate: Option<f64> = args.next().and_then(|a| a.parse().ok());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    for i in 0..cycles {
        if let Some(rate) = rate {
            // Paced in steps of 64 cycles: sleep until the schedule is due.
            if i % 64 == 0 {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        // SAFETY: plain socket syscalls on a descriptor this loop owns.
        unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                if udp {
                    libc::SOCK_DGRAM
                } else {
                    libc::SOCK_STREAM
                },
                0,
            );
            assert!(fd >= 0);
            let rc = libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(rc, 0);
            if !udp {
                assert_eq!(libc::listen(fd, 16), 0);
            }
            libc::close(fd);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / cycles as f64;
    println!("{ns:.1}");
}
