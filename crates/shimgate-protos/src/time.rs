//! Timestamps on the wire. containerd's Go side treats `{-62135596800, 0}` (Go's zero time)
//! as "not exited"; an absent field or `{0, 0}` would read as 1970 on containerd 1.7+/2.x, so
//! every `exited_at` we send is either a real time or exactly Go's zero time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Timestamp;

/// Seconds of Go's zero time (0001-01-01T00:00:00Z) relative to the Unix epoch.
pub const GO_ZERO_SECONDS: i64 = -62_135_596_800;

pub fn timestamp(t: SystemTime) -> Timestamp {
    let (seconds, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i32),
        Err(e) => {
            // Before 1970: protobuf wants floor seconds and non-negative nanos.
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut n = d.subsec_nanos() as i32;
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s, n)
        }
    };
    Timestamp {
        seconds,
        nanos,
        ..Timestamp::default()
    }
}

/// Go's zero time: what the Go shims send for "has not exited".
pub fn go_zero() -> Timestamp {
    Timestamp {
        seconds: GO_ZERO_SECONDS,
        nanos: 0,
        ..Timestamp::default()
    }
}

/// A time, or Go's zero time when there is none.
pub fn timestamp_or_zero(t: Option<SystemTime>) -> Timestamp {
    t.map_or_else(go_zero, timestamp)
}

/// Back from the wire (`None` for Go's zero time or anything before the epoch).
pub fn system_time(ts: &Timestamp) -> Option<SystemTime> {
    if ts.seconds < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_time_is_gos() {
        let z = timestamp_or_zero(None);
        assert_eq!((z.seconds, z.nanos), (-62_135_596_800, 0));
        assert_eq!(system_time(&z), None);
    }

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let ts = timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(system_time(&ts), Some(t));
    }
}
