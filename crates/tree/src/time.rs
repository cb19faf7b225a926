//! Times: [`Timestamp`] and its conversions to and from calendar dates, which ISO 9660,
//! UDF, FAT and `ls` need (each once had its own copy).

use serde::Serialize;

/// A point in time: seconds since the Unix epoch (negative before 1970) and nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01 00:00:00 UTC.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

/// A UTC calendar date and time of day (proleptic Gregorian, no leap seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year (1970, or 1601 for NTFS-era dates; negative before 1 BC).
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59.
    pub second: u32,
}

const DAY: i64 = 86_400;

/// Years beyond this are clamped before a conversion, so the arithmetic cannot overflow
/// whatever a hostile field holds (ISO 9660, UDF and FAT years fit in 5 digits).
const MAX_YEAR: i64 = 1 << 40;

impl Timestamp {
    /// A whole-second time.
    pub fn from_secs(sec: i64) -> Self {
        Timestamp { sec, nsec: 0 }
    }

    /// The UTC date and time of day of this time (nanoseconds dropped).
    pub fn civil(self) -> Civil {
        let (year, month, day) = civil_from_days(self.sec.div_euclid(DAY));
        let rem = self.sec.rem_euclid(DAY);
        // rem is 0..86400, so each part fits.
        let part = |v: i64| u32::try_from(v).unwrap_or(0);
        Civil { year, month, day, hour: part(rem / 3600), minute: part(rem / 60 % 60), second: part(rem % 60) }
    }

    /// The whole-second time of a UTC date and time of day. Out-of-range fields carry
    /// over as in `timegm` (second 60 is the next minute); the caller checks them.
    pub fn from_civil(c: &Civil) -> Self {
        let days = days_from_civil(c.year, c.month, c.day);
        let secs = i64::from(c.hour) * 3600 + i64::from(c.minute) * 60 + i64::from(c.second);
        Timestamp::from_secs(days.saturating_mul(DAY).saturating_add(secs))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `month` is 1 to 12 (others are clamped to it).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let m = i64::from(month.clamp(1, 12));
    let y = year.clamp(-MAX_YEAR, MAX_YEAR) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.clamp(-MAX_YEAR * 366, MAX_YEAR * 366) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // doy is 0..366 and mp 0..12, so day and month fit.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        let t = Timestamp::from_secs(-1).civil();
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (1969, 12, 31, 23, 59, 59));
        assert_eq!(Timestamp::from_civil(&t), Timestamp::from_secs(-1));
        // Hostile years neither panic nor wrap.
        let _ = days_from_civil(i64::MAX, 13, u32::MAX);
        let _ = civil_from_days(i64::MIN);
        let _ = Timestamp::from_secs(i64::MIN).civil();
    }
}
