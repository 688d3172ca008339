//! `--events-jsonl`: every event as one JSON line (the `trace --json`
//! schema: `schema`, the event's fields, and `diagnosis` on failed binds),
//! for Vector, Fluent Bit or Promtail to ship. A file rotates by size:
//! `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, up to `keep` files.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use bindwatch_core::event::Event;
use bindwatch_core::holders::Diagnosis;
use bindwatch_core::trace::EventLine;

pub enum Target {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        path: PathBuf,
        out: BufWriter<File>,
        written: u64,
        max_bytes: u64,
        keep: u32,
    },
}

pub struct JsonlExport {
    target: Target,
    /// Lines that could not be written (disk full, closed pipe): counted,
    /// never fatal.
    pub failed: u64,
}

fn open_append(path: &PathBuf) -> std::io::Result<(BufWriter<File>, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    Ok((BufWriter::new(f), len))
}

impl JsonlExport {
    /// `-` is standard output.
    pub fn open(path: &str, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let target = if path == "-" {
            Target::Stdout(BufWriter::new(std::io::stdout()))
        } else {
            let path = PathBuf::from(path);
            let (out, written) = open_append(&path)?;
            Target::File {
                path,
                out,
                written,
                max_bytes,
                keep: keep.max(1),
            }
        };
        Ok(Self { target, failed: 0 })
    }

    pub fn write(&mut self, ev: &Event, diagnosis: Option<&Diagnosis>) {
        let mut line = match serde_json::to_vec(&EventLine {
            event: ev,
            diagnosis,
        }) {
            Ok(l) => l,
            Err(_) => {
                self.failed += 1;
                return;
            }
        };
        line.push(b'\n');
        let res = match &mut self.target {
            Target::Stdout(o) => o.write_all(&line),
            Target::File {
                path,
                out,
                written,
                max_bytes,
                keep,
            } => {
                if *written + line.len() as u64 > *max_bytes && *written > 0 {
                    let _ = out.flush();
                    for i in (1..*keep).rev() {
                        let from = rotated(path, i);
                        if from.exists() {
                            let _ = std::fs::rename(&from, rotated(path, i + 1));
                        }
                    }
                    let _ = std::fs::rename(&*path, rotated(path, 1));
                    match open_append(path) {
                        Ok((o, n)) => {
                            *out = o;
                            *written = n;
                        }
                        Err(e) => {
                            self.failed += 1;
                            tracing::warn!(error = %e, "cannot reopen the JSON-lines export");
                            return;
                        }
                    }
                }
                *written += line.len() as u64;
                out.write_all(&line)
            }
        };
        if res.is_err() {
            self.failed += 1;
        }
    }

    pub fn flush(&mut self) {
        let r = match &mut self.target {
            Target::Stdout(o) => o.flush(),
            Target::File { out, .. } => out.flush(),
        };
        if r.is_err() {
            self.failed += 1;
        }
    }
}

fn rotated(path: &std::path::Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindwatch_common::{AF_INET, IPPROTO_TCP, RawEvent, kind};
    use bindwatch_core::clock::Clock;

    #[test]
    fn rotates_by_size_and_keeps_the_schema() {
        let dir = std::env::temp_dir().join(format!("bw-jsonl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut x = JsonlExport::open(path.to_str().unwrap(), 4096, 2).unwrap();
        let mut r = RawEvent::zeroed();
        r.kind = kind::BIND;
        r.family = AF_INET;
        r.protocol = IPPROTO_TCP;
        let ev = Event::from_raw(&r, &Clock::with_offset_ns(0));
        for _ in 0..200 {
            x.write(&ev, None);
        }
        x.flush();
        assert_eq!(x.failed, 0);
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 4096, "{}", p.display());
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["schema"], bindwatch_core::event::JSON_SCHEMA_VERSION);
            }
        }
        assert!(!rotated(&path, 3).exists(), "keeps 2 rotated files");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
