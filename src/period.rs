//! Budget periods (`budget_duration`): when a team's spend starts again
//! from zero. Fixed lengths (`30s`, `12h`, `1d`, `7d`, `30d`) are counted
//! from the Unix epoch, so that every worker and every replica agrees on the
//! boundaries; `daily`, `weekly` (from Monday) and `monthly` (from the 1st)
//! follow the UTC calendar. Times are ms since the epoch.

const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Fixed { ms: u64 },
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    /// LiteLLM's forms: a number and a unit (`s`, `m`, `h`, `d`), or
    /// `daily`, `weekly`, `monthly`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "daily" => return Some(Self::Daily),
            "weekly" => return Some(Self::Weekly),
            "monthly" => return Some(Self::Monthly),
            _ => {}
        }
        let unit_ms = match text.chars().last()? {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => DAY_MS,
            _ => return None,
        };
        let n: u64 = text.get(..text.len().checked_sub(1)?)?.parse().ok().filter(|n| *n > 0)?;
        Some(Self::Fixed { ms: n.checked_mul(unit_ms)? })
    }

    /// When the period containing `now_ms` started.
    pub fn start(&self, now_ms: u64) -> u64 {
        match self {
            Self::Fixed { ms } => now_ms - now_ms % ms.max(&1),
            Self::Daily => now_ms - now_ms % DAY_MS,
            Self::Weekly => {
                let days = now_ms / DAY_MS;
                // 1970-01-01 was a Thursday: Monday is 3 days before it.
                let since_monday = (days + 3) % 7;
                (days - since_monday.min(days)) * DAY_MS
            }
            Self::Monthly => {
                let (y, m, _) = civil_from_days(now_ms / DAY_MS);
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }

    /// When the period containing `now_ms` ends (and the next starts).
    pub fn next(&self, now_ms: u64) -> u64 {
        let start = self.start(now_ms);
        match self {
            Self::Fixed { ms } => start.saturating_add(*ms),
            Self::Daily => start.saturating_add(DAY_MS),
            Self::Weekly => start.saturating_add(7 * DAY_MS),
            Self::Monthly => {
                let (y, m, _) = civil_from_days(start / DAY_MS);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }
}

/// Days since 1970-01-01 for a date in the proleptic Gregorian calendar
/// (years from 1970 on).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The date of a day since 1970-01-01: (year, month 1-12, day 1-31).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `2026-12-31` or `2026-12-31T18:00:00Z` (UTC) as ms since the epoch.
pub fn parse_utc(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-').map(|p| p.parse::<u64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut hms = t.splitn(3, ':').map(|p| p.parse::<u64>().ok());
            let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
            if h > 23 || mi > 59 || s > 59 {
                return None;
            }
            h * 3600 + mi * 60 + s
        }
    };
    Some((days * 86_400 + secs) * 1000)
}

/// `2026-12-01T00:00:00Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t % 3600 / 60, t % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21T10:30:00Z, a Saturday.
    const NOW: u64 = 1_795_257_000_000;

    #[test]
    fn parses_litellm_forms() {
        assert_eq!(Period::parse("30d"), Some(Period::Fixed { ms: 30 * DAY_MS }));
        assert_eq!(Period::parse("1h"), Some(Period::Fixed { ms: 3_600_000 }));
        assert_eq!(Period::parse("monthly"), Some(Period::Monthly));
        for bad in ["", "d", "0d", "-1d", "1w", "1.5d", "month"] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn calendar_boundaries_in_utc() {
        assert_eq!(rfc3339(NOW), "2026-11-21T10:30:00Z");
        assert_eq!(rfc3339(Period::Daily.start(NOW)), "2026-11-21T00:00:00Z");
        assert_eq!(rfc3339(Period::Daily.next(NOW)), "2026-11-22T00:00:00Z");
        assert_eq!(rfc3339(Period::Weekly.start(NOW)), "2026-11-16T00:00:00Z");
        assert_eq!(rfc3339(Period::Weekly.next(NOW)), "2026-11-23T00:00:00Z");
        assert_eq!(rfc3339(Period::Monthly.start(NOW)), "2026-11-01T00:00:00Z");
        assert_eq!(rfc3339(Period::Monthly.next(NOW)), "2026-12-01T00:00:00Z");
        // December rolls into the next year; February in a leap year.
        let dec = NOW + 15 * DAY_MS;
        assert_eq!(rfc3339(Period::Monthly.next(dec)), "2027-01-01T00:00:00Z");
        let feb_2028 = days_from_civil(2028, 2, 10) * DAY_MS;
        assert_eq!(rfc3339(Period::Monthly.next(feb_2028)), "2028-03-01T00:00:00Z");
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
        // The last ms of a month is still in it.
        let first = Period::Monthly.next(NOW);
        assert_eq!(Period::Monthly.start(first - 1), Period::Monthly.start(NOW));
        assert_eq!(Period::Monthly.start(first), first);
    }

    #[test]
    fn utc_dates_parse() {
        assert_eq!(parse_utc("2026-11-21T10:30:00Z"), Some(NOW));
        assert_eq!(parse_utc("2026-11-21").map(rfc3339).as_deref(), Some("2026-11-21T00:00:00Z"));
        for bad in ["2026-02-30", "2026-13-01", "2026-11-21T10:30:00", "21/11/2026", "2026-11-21T25:00:00Z"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn fixed_periods_count_from_the_epoch() {
        let p = Period::Fixed { ms: 30 * DAY_MS };
        assert_eq!(p.start(NOW) % (30 * DAY_MS), 0);
        assert!(p.start(NOW) <= NOW && NOW < p.next(NOW));
        assert_eq!(p.next(NOW) - p.start(NOW), 30 * DAY_MS);
    }
}
