//! The counting HTTP mirror (`pacfleet_support::mirror`) as a process, for bench/run.sh:
//!
//! ```sh
//! cargo run --example counting_mirror -- DIR [--rate BYTES_PER_S] [--latency-ms N] [--port P]
//! ```
//!
//! Prints its URL (`http://127.0.0.1:<port>`) on stdout, then serves `DIR` until killed;
//! `GET <url>/_counts` gives the bytes and requests served per file name.

use std::path::PathBuf;
use std::time::Duration;

use pacfleet_support::mirror::{Link, Mirror};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut link = Link::default();
    let mut port = 0u16;
    while let Some(a) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| {
                    eprintln!("counting_mirror: {what} takes a number");
                    std::process::exit(2)
                })
        };
        match a.as_str() {
            "--rate" => link.rate = Some(value("--rate")).filter(|r| *r > 0),
            "--latency-ms" => link.latency = Duration::from_millis(value("--latency-ms")),
            "--port" => port = u16::try_from(value("--port")).unwrap_or(0),
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            _ => {
                eprintln!(
                    "usage: counting_mirror DIR [--rate BYTES_PER_S] [--latency-ms N] [--port P]"
                );
                std::process::exit(2)
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: counting_mirror DIR [--rate BYTES_PER_S] [--latency-ms N] [--port P]");
        std::process::exit(2)
    };
    let mirror = Mirror::start_with(&dir, link, port).unwrap_or_else(|e| {
        eprintln!("counting_mirror: cannot listen: {e}");
        std::process::exit(2)
    });
    println!("{}", mirror.url);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
