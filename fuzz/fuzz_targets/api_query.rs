//! Any query string for the API: parsed, or refused naming the parameter,
//! never a panic. The same path as the daemon: url-decoding, then the
//! holders, check and timeline parsers.
#![no_main]

use std::collections::HashMap;

use bindwatch::api::{parse_check_query, parse_holders_query};
use bindwatch::core::timeline::filter_from_params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|q: &str| {
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(q) else {
        return;
    };
    let params: HashMap<String, String> = pairs.into_iter().collect();
    if let Err((p, e)) = parse_holders_query(&params) {
        assert!(!e.is_empty() && (params.contains_key(&p) || p == "port"));
    }
    if let Err((p, e)) = parse_check_query(&params) {
        assert!(!e.is_empty() && (params.contains_key(&p) || p == "port"));
    }
    let _ = filter_from_params(&params, 1_800_000_000_000_000_000);
});
