//! Civil-date conversions against Python's `datetime` (proleptic Gregorian, as ISO 9660,
//! UDF, FAT and `ls` use): every day from 1900-01-01 to 2155-12-31 (ISO 9660's
//! directory-record years 1900..2155, FAT's 1980..2107, negative epoch days before 1970,
//! every leap rule: 1900 and 2100 are not leap years, 2000 is), and times of day around
//! midnight on both sides of the epoch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_tree::{Civil, Timestamp, civil_from_days, days_from_civil};
use std::process::Command;

#[test]
fn every_day_1900_to_2155_matches_python_datetime() {
    let script = "import datetime\n\
        d = datetime.date(1900, 1, 1); e = datetime.date(1970, 1, 1)\n\
        out = []\n\
        while d.year <= 2155:\n\
        \x20   out.append('%d %d %d %d' % ((d - e).days, d.year, d.month, d.day)); d += datetime.timedelta(days=1)\n\
        print('\\n'.join(out))\n";
    let out = Command::new("python3").arg("-c").arg(script).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let v: Vec<i64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let (days, y, m, d) = (v[0], v[1], u32::try_from(v[2]).unwrap(), u32::try_from(v[3]).unwrap());
        assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        n += 1;
    }
    assert_eq!(n, 256 * 365 + 62, "256 years of days, 62 of them leap days (not 1900 or 2100)");
}

#[test]
fn times_of_day_match_python_on_both_sides_of_the_epoch() {
    let secs: [i64; 8] = [-2_208_988_800, -86_401, -1, 0, 951_782_399, 951_868_800, 4_354_819_198, 5_806_022_399];
    let list = secs.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let script = format!(
        "import datetime\nfor s in [{list}]:\n    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=s)\n    \
         print(t.year, t.month, t.day, t.hour, t.minute, t.second)\n"
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for (s, line) in secs.iter().zip(text.lines()) {
        let v: Vec<i64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let u = |i: usize| u32::try_from(v[i]).unwrap();
        let want = Civil { year: v[0], month: u(1), day: u(2), hour: u(3), minute: u(4), second: u(5) };
        assert_eq!(Timestamp::from_secs(*s).civil(), want, "{s}");
        assert_eq!(Timestamp::from_civil(&want), Timestamp::from_secs(*s));
    }
    assert_eq!(text.lines().count(), secs.len());
}
