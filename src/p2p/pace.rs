//! WAN bandwidth limits: block bytes to and from WAN peers are paced to a rate, so that a
//! sync does not fill an office's uplink (`--wan-limit`). LAN peers are never paced.
//!
//! A [`Pace`] is a token bucket that may go into debt: whoever moves `n` bytes takes `n`
//! tokens at once and then sleeps until the bucket is back at zero. Debt instead of waiting
//! for tokens first means one lock and at most one sleep per block, and several lanes and
//! peers share one limit fairly enough: each waits for the debt in front of it. The bucket
//! holds at most [`BURST`] of credit, so a long idle spell does not let a burst through.
//!
//! The receiving side paces what it asks for: a block is requested only once its bytes are
//! paid for, and a provider sends a block as soon as it is asked, so what crosses the WAN
//! follows the asks. (Pacing the reads instead would let the transport's flow-control
//! windows and socket buffers fill at the link's rate before the sender waits.) The sending
//! side pays before writing a block into its stream; what its socket buffers hold ahead
//! leaves at the link's rate at first, then the writes bound it. A block cancelled while its
//! sender waits is withdrawn: the wait ends and its bytes are given back, so a limited
//! uplink does not stand idle for a block nobody wants any more.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The most credit the bucket holds (one large block).
pub const BURST: f64 = 256.0 * 1024.0;

/// One direction's limit, in bytes per second.
#[derive(Debug)]
pub struct Pace {
    rate: f64,
    /// Credit (negative: debt) as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl Pace {
    /// A limit of `bytes_per_s` (at least 1).
    pub fn new(bytes_per_s: u64) -> Pace {
        Pace {
            rate: bytes_per_s.max(1) as f64,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// The limit, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// How long the mover of `n` bytes must wait now (the debt they leave, at the rate).
    fn take(&self, n: u64) -> Duration {
        let mut s = crate::locks::lock(&self.state);
        let now = Instant::now();
        let credit = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(BURST);
        let left = credit - n as f64;
        *s = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }

    /// Gives back `n` bytes taken for a move that did not happen (still at most [`BURST`]).
    fn refund(&self, n: u64) {
        let mut s = crate::locks::lock(&self.state);
        let now = Instant::now();
        let credit = s.0 + now.duration_since(s.1).as_secs_f64() * self.rate + n as f64;
        *s = (credit.min(BURST), now);
    }
}

/// Accounts for `n` bytes in every one of `paces` (a global limit and a library's) and
/// sleeps until the slowest is paid: each bucket is back at zero at its own time, so
/// waiting for the latest honours them all. If `withdrawn` completes first, the wait ends
/// there and every bucket gets its `n` bytes back; returns whether the bytes were paid.
pub async fn pay_all(
    paces: &[std::sync::Arc<Pace>],
    n: u64,
    withdrawn: impl Future<Output = ()>,
) -> bool {
    let wait = paces.iter().map(|p| p.take(n)).max().unwrap_or_default();
    if wait.is_zero() {
        return true;
    }
    let paid = tokio::select! {
        biased;
        () = withdrawn => false,
        () = tokio::time::sleep(wait) => true,
    };
    if !paid {
        for p in paces {
            p.refund(n);
        }
    }
    paid
}

/// Parses a rate as people write it: `2mbit`, `500kbit`, `10MiB`, `800KiB`, `1000000`
/// (bytes) per second; a trailing `/s` is allowed. Returns bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (say 2mbit, 500kbit or 1MiB)"))?;
    let bytes_per_unit = match unit.trim() {
        "" | "b" => 1.0,
        "kbit" => 1000.0 / 8.0,
        "mbit" => 1_000_000.0 / 8.0,
        "gbit" => 1_000_000_000.0 / 8.0,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "kb" => 1000.0,
        "mb" => 1_000_000.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (kbit, mbit, KiB, MiB)"
            ))
        }
    };
    let bytes = (value * bytes_per_unit).round();
    if !(1.0..=1e12).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_the_units_people_use() {
        assert_eq!(parse_rate("2mbit"), Ok(250_000));
        assert_eq!(parse_rate("500kbit/s"), Ok(62_500));
        assert_eq!(parse_rate("1MiB"), Ok(1 << 20));
        assert_eq!(parse_rate("800 KiB"), Ok(800 * 1024));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("2 furlongs").is_err());
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn a_mover_waits_for_the_debt_it_leaves() {
        let pace = Pace::new(1000);
        // A fresh bucket has no credit: 500 bytes cost half a second.
        let wait = pace.take(500);
        assert!(wait > Duration::from_millis(450) && wait <= Duration::from_millis(500));
        // The next mover waits behind that debt too.
        assert!(pace.take(500) > Duration::from_millis(950));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_withdrawn_while_waiting_are_given_back() {
        let pace = std::sync::Arc::new(Pace::new(1000));
        let paces = [pace.clone()];
        let start = Instant::now();
        // 2,000 bytes at 1,000 B/s wait 2 s; the block is cancelled after half a second.
        let withdrawn = tokio::time::sleep(Duration::from_millis(500));
        assert!(!pay_all(&paces, 2000, withdrawn).await);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // Nothing was sent in that half second, so its 500 bytes are credit: the next
        // 500 go at once (kept, the 2,000 would have left 1.5 s of debt in front of them).
        assert_eq!(pace.take(500), Duration::ZERO);
        // A payment nobody withdraws waits its full time.
        let start = Instant::now();
        assert!(pay_all(&paces, 1000, std::future::pending()).await);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
