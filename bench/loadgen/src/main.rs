//! `loadgen`: a minimal iSCSI initiator that drives any target identically, for the
//! writes and mixed loads of rustio's benchmark (`bench/run`). Standard library plus the
//! target's own protocol crate, `rustio_iscsi_proto` (PDU codec, text keys).
//!
//! ```text
//! loadgen probe --portal 127.0.0.1:3260 --target IQN [--lun 0]
//! loadgen fill  --portal ... --target ... [--bs 256k] [--qd 8] [--time 600]
//! loadgen run   --portal ... --target ... --rw read|write|mix [--read-pct 70]
//!               --pattern rand|seq --bs 4k --qd 32 --time 10 [--seed N]
//!               [--sessions N] [--driver threaded|inline]
//! ```
//!
//! `--sessions N` (1..=64) logs in N sessions (same initiator name, ISIDs differing in
//! the D field), then runs the workload on all of them at once, `--qd` commands in flight
//! on each, one thread per session; the output adds them up. `--driver` picks how a session
//! is driven: `threaded` (a reader thread hands completions to the issuer) or `inline`
//! (one thread; no hand-off per completion); the default is inline at QD 1 (so a latency
//! holds no thread wake-up) and with several sessions (one thread each), threaded otherwise.
//!
//! Every mode prints one JSON object on stdout; errors go to stderr with exit status 1.

mod conn;
mod engine;
mod scsi;
mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use conn::{Conn, Error, LoginSpec, Result};
use engine::{Driver, Mix, Workload};

const USAGE: &str = "usage: loadgen probe|fill|run --portal ADDR:PORT --target IQN [--lun N] \
[--initiator IQN] [--rw read|write|mix] [--read-pct P] [--pattern rand|seq] [--bs SIZE] \
[--qd N] [--time SECS] [--seed N] [--sessions N] [--driver threaded|inline]";

/// Most sessions one run logs in (each is a thread and a connection).
const MAX_SESSIONS: u16 = 64;

#[derive(Debug)]
struct Args {
    mode: String,
    spec: LoginSpec,
    mix: Mix,
    random: bool,
    bs: u32,
    qd: usize,
    time: f64,
    seed: u64,
    sessions: u16,
    driver: Driver,
}

/// "4096", "4k", "128K", "1m" → bytes.
fn parse_size(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024u64),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let v = num.parse::<u64>().ok()?.checked_mul(mult)?;
    u32::try_from(v).ok()
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let mode = argv.first().cloned().ok_or_else(|| Error::msg(USAGE))?;
    if !matches!(mode.as_str(), "probe" | "fill" | "run") {
        return Err(Error::msg(format!("unknown mode {mode:?}\n{USAGE}")));
    }
    let fill = mode == "fill";
    let mut portal: Option<SocketAddr> = None;
    let mut target: Option<String> = None;
    let mut lun = 0u16;
    let mut initiator = "iqn.2024-01.org.rustio:bench-loadgen".to_string();
    let mut rw = if fill { "write" } else { "read" }.to_string();
    let mut read_pct = 70u8;
    let mut random = !fill;
    let mut bs = if fill { 256 * 1024 } else { 4096 };
    let mut qd = if fill { 8 } else { 32 };
    let mut time = if fill { 600.0 } else { 10.0 };
    let mut seed = 1u64;
    let mut sessions = 1u16;
    let mut driver: Option<Driver> = None;
    let mut it = argv[1..].iter();
    while let Some(flag) = it.next() {
        let val = it
            .next()
            .ok_or_else(|| Error::msg(format!("{flag} needs a value\n{USAGE}")))?;
        let bad = || Error::msg(format!("bad value {val:?} for {flag}"));
        match flag.as_str() {
            "--portal" => portal = Some(val.parse().map_err(|_| bad())?),
            "--target" => target = Some(val.clone()),
            "--lun" => lun = val.parse().ok().filter(|&l| l < 16384).ok_or_else(bad)?,
            "--initiator" => initiator = val.clone(),
            "--rw" => rw = val.clone(),
            "--read-pct" => read_pct = val.parse().ok().filter(|&p| p <= 100).ok_or_else(bad)?,
            "--pattern" => {
                random = match val.as_str() {
                    "rand" | "random" => true,
                    "seq" | "sequential" => false,
                    _ => return Err(bad()),
                }
            }
            "--bs" => {
                bs = parse_size(val)
                    .filter(|&b| b > 0 && b <= 16 << 20)
                    .ok_or_else(bad)?
            }
            "--qd" => {
                qd = val
                    .parse()
                    .ok()
                    .filter(|&q| q > 0 && q <= 4000)
                    .ok_or_else(bad)?
            }
            "--time" => {
                time = val
                    .parse()
                    .ok()
                    .filter(|&t: &f64| t > 0.0 && t <= 3600.0)
                    .ok_or_else(bad)?
            }
            "--seed" => seed = val.parse().map_err(|_| bad())?,
            "--sessions" => {
                sessions = val
                    .parse()
                    .ok()
                    .filter(|&n| n > 0 && n <= MAX_SESSIONS)
                    .ok_or_else(bad)?
            }
            "--driver" => {
                driver = Some(match val.as_str() {
                    "threaded" => Driver::Threaded,
                    "inline" => Driver::Inline,
                    _ => return Err(bad()),
                })
            }
            _ => return Err(Error::msg(format!("unknown flag {flag}\n{USAGE}"))),
        }
    }
    let mix = match rw.as_str() {
        "read" => Mix::Read,
        "write" => Mix::Write,
        "mix" | "mixed" | "rw" => Mix::Mixed { read_pct },
        _ => return Err(Error::msg(format!("bad --rw {rw:?}"))),
    };
    if mode != "run" && sessions != 1 {
        return Err(Error::msg("--sessions applies to run only"));
    }
    if fill && (mix != Mix::Write || random) {
        return Err(Error::msg(
            "fill writes sequentially; --rw/--pattern do not apply",
        ));
    }
    Ok(Args {
        mode,
        spec: LoginSpec {
            portal: portal.ok_or_else(|| Error::msg(format!("--portal is required\n{USAGE}")))?,
            target: target.ok_or_else(|| Error::msg(format!("--target is required\n{USAGE}")))?,
            initiator,
            lun,
            session: 0,
        },
        mix,
        random,
        bs,
        qd,
        time,
        seed,
        sessions,
        driver: driver.unwrap_or(if qd == 1 || sessions > 1 {
            Driver::Inline
        } else {
            Driver::Threaded
        }),
    })
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn main_inner() -> Result<String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = parse_args(&argv)?;
    let mut c = Conn::login(&a.spec)?;
    let (blocks, block_len) = c.prepare()?;
    let p = c.params;
    let neg = format!(
        "{{\"max_xmit\":{},\"first_burst\":{},\"max_burst\":{},\"initial_r2t\":{},\"immediate_data\":{}}}",
        p.max_xmit, p.first_burst, p.max_burst, p.initial_r2t, p.immediate_data
    );
    if a.mode == "probe" {
        c.logout()?;
        return Ok(format!(
            "{{\"target\":{},\"blocks\":{blocks},\"block_len\":{block_len},\"bytes\":{},\"negotiated\":{neg}}}",
            json_str(&a.spec.target),
            u128::from(blocks) * u128::from(block_len)
        ));
    }
    let wl = Workload {
        mix: a.mix,
        random: a.random,
        bs: a.bs,
        qd: a.qd,
        duration: Duration::from_secs_f64(a.time),
        one_pass: a.mode == "fill",
        seed: a.seed,
        driver: a.driver,
    };
    let o = if a.sessions == 1 {
        engine::run(c, &wl, blocks, block_len)?
    } else {
        // Every session logs in (and clears its unit attentions) before any runs.
        let mut conns = vec![c];
        for i in 1..a.sessions {
            let spec = LoginSpec {
                session: i,
                ..a.spec.clone()
            };
            let mut ci = Conn::login(&spec).map_err(|e| Error::msg(format!("session {i}: {e}")))?;
            ci.prepare()
                .map_err(|e| Error::msg(format!("session {i}: {e}")))?;
            conns.push(ci);
        }
        engine::run_sessions(conns, &wl, blocks, block_len)?
    };
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let ios = o.reads + o.writes;
    let h = &o.latency;
    Ok(format!(
        "{{\"mode\":{},\"ios\":{ios},\"reads\":{},\"writes\":{},\"bytes\":{},\"secs\":{secs:.6},\
\"iops\":{:.1},\"mb_per_s\":{:.2},\"lat_us\":{{\"mean\":{:.1},\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\
\"r2ts\":{},\"bs\":{},\"qd\":{},\"sessions\":{},\"driver\":\"{}\",\"block_len\":{block_len},\"blocks\":{blocks},\"negotiated\":{neg}}}",
        json_str(&a.mode),
        o.reads,
        o.writes,
        o.bytes,
        ios as f64 / secs,
        o.bytes as f64 / secs / 1e6,
        h.mean_us(),
        h.quantile_us(0.5),
        h.quantile_us(0.99),
        h.quantile_us(0.999),
        h.max_us(),
        o.r2ts,
        a.bs,
        a.qd,
        a.sessions,
        match a.driver {
            Driver::Threaded => "threaded",
            Driver::Inline => "inline",
        },
    ))
}

fn main() {
    match main_inner() {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("128K"), Some(131_072));
        assert_eq!(parse_size("1m"), Some(1_048_576));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("k"), None);
        assert_eq!(parse_size("99999999m"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn args_run() {
        let a = parse_args(&argv(
            "run --portal 127.0.0.1:3260 --target iqn.x --rw mix --read-pct 70 --pattern rand --bs 4k --qd 32 --time 2",
        ))
        .unwrap();
        assert_eq!(a.mix, Mix::Mixed { read_pct: 70 });
        assert!(a.random);
        assert_eq!((a.bs, a.qd), (4096, 32));
        assert_eq!(a.spec.lun, 0);
        assert_eq!((a.sessions, a.driver), (1, Driver::Threaded));
    }

    #[test]
    fn args_sessions_and_driver() {
        let base = "run --portal 127.0.0.1:3260 --target iqn.x";
        // QD 1 and several sessions default to the inline driver.
        let a = parse_args(&argv(&format!("{base} --qd 1"))).unwrap();
        assert_eq!(a.driver, Driver::Inline);
        let a = parse_args(&argv(&format!("{base} --sessions 16 --qd 8"))).unwrap();
        assert_eq!((a.sessions, a.qd, a.driver), (16, 8, Driver::Inline));
        let a = parse_args(&argv(&format!("{base} --sessions 16 --driver threaded"))).unwrap();
        assert_eq!(a.driver, Driver::Threaded);
        assert!(parse_args(&argv(&format!("{base} --sessions 0"))).is_err());
        assert!(parse_args(&argv(&format!("{base} --sessions 65"))).is_err());
        assert!(parse_args(&argv(&format!("{base} --driver poll"))).is_err());
        assert!(parse_args(&argv("probe --portal 127.0.0.1:1 --target t --sessions 2")).is_err());
    }

    #[test]
    fn args_rejects() {
        assert!(parse_args(&argv("run --target iqn.x")).is_err());
        assert!(parse_args(&argv("run --portal 127.0.0.1:1 --target t --qd 0")).is_err());
        assert!(parse_args(&argv("run --portal 127.0.0.1:1 --target t --read-pct 101")).is_err());
        assert!(parse_args(&argv("fill --portal 127.0.0.1:1 --target t --rw read")).is_err());
        assert!(parse_args(&argv("bogus")).is_err());
        assert!(parse_args(&argv("run --portal")).is_err());
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
