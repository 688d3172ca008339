//! `schema` against the providers' own manifests: every field the session
//! reads exists, with the type it is parsed as, in every version of its
//! event in both manifests; the keywords enabled carry every event read.

use super::*;
use crate::etw::manifest::{self, ManifestEvent};

/// Events newer than Windows 10 build 18990: only in the 26H1 manifest.
const NEWER_THAN_18990: &[(EtwProvider, u16)] = &[
    (EtwProvider::HttpService, 113),
    (EtwProvider::HttpService, 114),
    (EtwProvider::HttpService, 115),
    (EtwProvider::HttpService, 117),
    (EtwProvider::HttpService, 122),
];

fn check_fields(p: EtwProvider, id: u16, which: &str, versions: &[&ManifestEvent]) {
    let read = fields_of(p, id).unwrap();
    for ev in versions {
        for f in read {
            let found = ev.fields.iter().find(|(n, _)| n == f.name);
            let Some((_, ty)) = found else {
                panic!(
                    "{} event {id} v{} ({which}) has no field {} (fields: {:?})",
                    p.name(),
                    ev.version,
                    f.name,
                    ev.fields
                );
            };
            assert_eq!(
                ty,
                f.ty.manifest_name(),
                "{} event {id} v{} ({which}): {} is {ty}, read as {}",
                p.name(),
                ev.version,
                f.name,
                f.ty.manifest_name()
            );
        }
    }
}

#[test]
fn every_field_read_is_in_both_manifests_with_the_type_it_is_parsed_as() {
    for p in EtwProvider::ALL {
        let m = manifest::load(p);
        for &id in p.event_ids() {
            assert!(fields_of(p, id).is_some(), "{} {id}: no fields", p.name());
            let win11: Vec<_> = m.win11.iter().filter(|e| e.id == id).collect();
            assert!(!win11.is_empty(), "{} has no event {id} (26H1)", p.name());
            check_fields(p, id, "Windows 11 26H1", &win11);
            let win10: Vec<_> = m.win10.iter().filter(|e| e.id == id).collect();
            if NEWER_THAN_18990.contains(&(p, id)) {
                assert!(
                    win10.is_empty(),
                    "{} {id} is in build 18990 after all",
                    p.name()
                );
            } else {
                assert!(!win10.is_empty(), "{} has no event {id} (18990)", p.name());
                check_fields(p, id, "Windows 10 18990", &win10);
            }
        }
    }
}

#[test]
fn the_keywords_enabled_carry_every_event_read_and_no_more_than_needed() {
    for p in EtwProvider::ALL {
        let m = manifest::load(p);
        let mut needed = 0u64;
        for &id in p.event_ids() {
            for ev in m.win11.iter().filter(|e| e.id == id) {
                let mask = ev
                    .keywords
                    .iter()
                    .map(|k| m.keyword_masks[k.as_str()])
                    .fold(0, |a, b| a | b);
                assert_ne!(
                    mask & p.keywords(),
                    0,
                    "{} event {id}: keywords {:?} not enabled",
                    p.name(),
                    ev.keywords
                );
                needed |= mask;
            }
        }
        assert_eq!(
            p.keywords() & !needed,
            0,
            "{}: a keyword enabled that no event read carries",
            p.name()
        );
    }
}

#[test]
fn afd_1029_binds_carry_no_address_and_are_not_asked_for() {
    let m = manifest::load(EtwProvider::WinsockAfd);
    for ev in m.win11.iter().chain(&m.win10).filter(|e| e.id == 1029) {
        assert!(!ev.fields.iter().any(|(n, _)| n.contains("Address")));
    }
    assert!(!EtwProvider::WinsockAfd.event_ids().contains(&1029));
    assert!(fields_of(EtwProvider::WinsockAfd, 1029).is_none());
}

#[test]
fn each_address_read_has_its_length_field_read_beside_it() {
    for p in EtwProvider::ALL {
        for &id in p.event_ids() {
            let read = fields_of(p, id).unwrap();
            for f in read.iter().filter(|f| f.ty == FieldType::Binary) {
                let (_, len) = ADDRESSES
                    .iter()
                    .find(|(a, _)| *a == f.name)
                    .unwrap_or_else(|| panic!("{} is not a known address field", f.name));
                assert!(
                    read.iter()
                        .any(|g| g.name == *len && g.ty == FieldType::UInt32),
                    "{} event {id}: {} without {len}",
                    p.name(),
                    f.name
                );
            }
        }
    }
}
