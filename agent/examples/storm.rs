//! A syscall storm for the overhead and loss benchmarks: N cycles of
//! socket, bind to 127.0.0.1:0, listen (TCP), close. Prints nanoseconds per
//! cycle. An optional third argument paces it to that many cycles per
//! second (each TCP cycle is four events: bind, listen, listen stop,
//! release; UDP two: bind, release).
//!
//! `cargo run --release -p bindwatch --example storm -- 100000 tcp [RATE]`
//!
//! `storm N conn`: N TCP connections on loopback instead (connect, accept,
//! the accepted end closes, then the client's), the accept path's
//! workload for the profile; nanoseconds per connection.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cycles, mode, rate) = match parse(&args) {
        Ok(a) => a,
        Err(why) => {
            // A mistyped argument must not become a default and a figure.
            eprintln!("storm: {why}\nusage: storm [N] [tcp|udp|conn] [RATE]");
            std::process::exit(2);
        }
    };
    if mode == "conn" {
        connections(cycles);
        return;
    }
    let udp = mode == "udp";
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
    let ty = if udp {
        rustix::net::SocketType::DGRAM
    } else {
        rustix::net::SocketType::STREAM
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
        // rustix: the same raw syscalls, without unsafe; the descriptor
        // closes when `fd` drops.
        let fd = rustix::net::socket(rustix::net::AddressFamily::INET, ty, None).expect("socket");
        rustix::net::bind(&fd, &addr).expect("bind 127.0.0.1:0");
        if !udp {
            rustix::net::listen(&fd, 16).expect("listen");
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / cycles as f64;
    println!("{ns:.1}");
}

/// N (default 100,000), the mode (default tcp) and the pace, each refused
/// by name when it does not parse.
fn parse(args: &[String]) -> Result<(u64, &str, Option<f64>), String> {
    if args.len() > 3 {
        return Err(format!("{} arguments, at most 3", args.len()));
    }
    let cycles = match args.first() {
        None => 100_000,
        Some(a) => match a.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("cycles {a:?} is not a positive whole number")),
        },
    };
    let mode = args.get(1).map_or("tcp", String::as_str);
    if !matches!(mode, "tcp" | "udp" | "conn") {
        return Err(format!("mode {mode:?} is none of tcp, udp, conn"));
    }
    let rate = match args.get(2) {
        None => None,
        Some(_) if mode == "conn" => return Err("conn takes no rate".to_owned()),
        Some(a) => match a.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Some(r),
            _ => {
                return Err(format!(
                    "rate {a:?} is not a positive number of cycles a second"
                ));
            }
        },
    };
    Ok((cycles, mode, rate))
}

/// The accepted end closes first, so TIME_WAIT stays on the server's one
/// port and the client's ephemeral ports are never used up.
fn connections(n: u64) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    let start = Instant::now();
    for _ in 0..n {
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        drop(accepted);
        drop(client);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{ns:.1}");
}
