//! Any bytes from the ring buffer: decoded or rejected (and counted), never
//! a panic.
#![no_main]

use bindwatch::core::clock::Clock;
use bindwatch::core::decode::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut out = Vec::new();
    d.decode_into(data, &mut out);
    for ev in &out {
        // What every consumer does next must hold for any decoded event.
        let _ = serde_json::to_string(ev);
        let _ = ev.failed();
    }
});
