//! Any configuration text: parsed or refused with an error naming the
//! problem, never a panic.
#![no_main]

use bindwatch::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = Config::parse(text, "fuzz.toml") {
        assert!(e.to_string().starts_with("fuzz.toml: "));
    }
});
