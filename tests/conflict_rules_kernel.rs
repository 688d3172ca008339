//! The conflict engine against the kernel it models: for every pair of
//! holder and request (addresses, families, IPV6_V6ONLY, SO_REUSEADDR,
//! SO_REUSEPORT, users, TCP or UDP), the real bind's outcome in a
//! namespace of its own must be what `conflict()` predicts. Needs root (no
//! eBPF).

use bindwatch::core::conflict::conflict;
use support::Netns;
use support::rules::{assert_all_agree, bind_as, cases, describe, kernel_refuses};

#[test]
fn engine_agrees_with_the_kernel() {
    let ns = Netns::new("rules");
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for (holder, req) in cases(20000) {
        let _held = bind_as(&ns, holder.clone()).unwrap_or_else(|e| {
            panic!("holder {holder:?}: {e}");
        });
        let kernel = kernel_refuses(&ns, &holder, &req);
        let predicted = conflict(&req, &holder);
        if predicted.is_some() != kernel {
            disagreements.push(format!(
                "{} | kernel {} engine {predicted:?}",
                describe(&holder, &req),
                if kernel { "EADDRINUSE" } else { "ok" },
            ));
        }
        checked += 1;
    }
    eprintln!("checked {checked} holder/request pairs against the kernel");
    assert_all_agree(checked, &disagreements);
}
